"""nnsight interop: soundlens site names resolve to nnsight envoys.

Inside an ``NNsight`` trace, ``site_value(envoy_root, lm, "encoder.layers.3")`` is the proxy of
that site's activation (a head's proxy is its slice of the output projection's input), so the
same canonical names serve both the plain-hook path and nnsight code.
"""

from __future__ import annotations

from typing import Any

from soundlens.models.loaded import LoadedModel
from soundlens.models.spec import Site


def wrap(lm: LoadedModel) -> Any:
    """The model wrapped as ``nnsight.NNsight`` (the module itself is not copied)."""
    from nnsight import NNsight

    return NNsight(lm.model)


def envoy(root: Any, lm: LoadedModel, site: str | Site) -> Any:
    """The nnsight envoy of the module behind ``site``."""
    s = site if isinstance(site, Site) else lm.site(site)
    env = root
    for part in s.module_path.split("."):
        env = env[int(part)] if part.isdigit() else getattr(env, part)
    return env


def site_value(root: Any, lm: LoadedModel, site: str | Site) -> Any:
    """Proxy of a site's activation inside a trace (call ``.save()`` on it to keep it)."""
    s = site if isinstance(site, Site) else lm.site(site)
    env = envoy(root, lm, s)
    if s.reads_input:
        return env.input[..., s.head * s.head_dim : (s.head + 1) * s.head_dim]
    return env.output


def in_execution_order(lm: LoadedModel, sites: list[str]) -> list[str]:
    """Sites sorted by module definition order, which nnsight needs values requested in.

    Definition order is the forward order for the supported families; a head (read at its
    projection's input) comes before any output of the same module.
    """
    order = {name: i for i, name in enumerate(n for n, _ in lm.model.named_modules())}

    def key(name: str) -> tuple[int, int]:
        s = lm.site(name)
        return order[s.module_path], 0 if s.reads_input else 1

    return sorted(sites, key=key)

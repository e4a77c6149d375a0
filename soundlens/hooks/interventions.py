"""Write activations at named sites: add a direction, set or remove its component.

Plain torch hooks, like ``Capture``: ``Intervene(lm, edits)`` is a context manager that
registers one hook per edit on entry and removes them all on exit, errors included. Every
edit is validated when the ``Intervene`` is built (site exists, direction width matches the
site), so a mistake is reported before any forward pass or generation runs.

An ``Edit`` targets one site and one direction θ (normalised to unit length here):

- ``add``:            x ← x + s·α·σ·θ               (ITI's shift, σ defaults to 1)
- ``set_projection``: x ← x + s·α·(value − x·θ)·θ   (α = 1: the component becomes value)
- ``ablate``:         x ← x − s·α·(x·θ)·θ           (α = 1: the component is removed)

where ``s = schedule(step)`` (1 by default). When ``s·α`` (times σ for ``add``) is 0 the hook
returns without touching the activation, so α = 0 is bit-identical to no intervention.

Options per edit:

- ``rows``: which batch rows are edited (None: all; a list of indices or a slice). MusicGen's
  classifier-free guidance runs the decoder on a doubled batch: rows ``[:B]`` are the
  conditional (prompted) rows and rows ``[B:]`` the null-prompt rows, B being the number of
  prompts. ``cfg_conditional_rows(B)`` / ``cfg_unconditional_rows(B)`` name them.
- ``steps``: which calls of the hooked module are edited, counted from 0 since the
  ``Intervene`` was entered (None: all; a range, set, list or single int). During MusicGen
  generation each decoder call is one generation step (``max_new_tokens=N`` gives N+1 calls).
- ``schedule``: ``schedule(step) -> float`` multiplies α per call; the hook point for decays,
  "every N steps" and probe-gated (self-monitoring) stops.

Output sites (layer, attn, mlp, module) use forward hooks that return a modified output: a
tensor, or a tuple/list/``ModelOutput`` whose first tensor is replaced. Features are the last
axis, or axis 1 for channels-first sites (batch, channels, time). Heads use a forward pre-hook
on the attention output projection and edit only the head's slice ``[h·D:(h+1)·D]`` of its
input.
"""

from __future__ import annotations

from collections.abc import Callable, Container, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Self

import numpy as np
import torch

from soundlens.errors import SoundlensError
from soundlens.hooks.capture import HookSet, first_tensor
from soundlens.models.loaded import LoadedModel
from soundlens.models.spec import Site

Op = Literal["add", "set_projection", "ablate"]
OPS: tuple[str, ...] = ("add", "set_projection", "ablate")
Rows = Sequence[int] | slice | None
Steps = Container[int] | int | None


class InterventionError(SoundlensError, ValueError):
    """An edit that cannot be applied: unknown site, wrong width, bad option or activation."""


def cfg_conditional_rows(batch_size: int) -> slice:
    """Rows of MusicGen's CFG-doubled decoder batch that carry the prompts: ``[:B]``."""
    return slice(0, int(batch_size))


def cfg_unconditional_rows(batch_size: int) -> slice:
    """Rows of MusicGen's CFG-doubled decoder batch that carry the null prompt: ``[B:2B]``."""
    return slice(int(batch_size), 2 * int(batch_size))


@dataclass
class Edit:
    """One intervention at one site along one direction (see the module docstring)."""

    site: str | Site
    direction: np.ndarray | torch.Tensor | Sequence[float]
    op: Op = "add"
    alpha: float = 1.0
    sigma: float = 1.0
    value: float = 0.0  # target projection for ``set_projection``
    rows: Rows = None
    steps: Steps = None
    schedule: Callable[[int], float] | None = None
    label: str = ""  # free text for reports (e.g. the concept)
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.op not in OPS:
            raise InterventionError(f"unknown edit op {self.op!r}; choose one of {', '.join(OPS)}")

    def scale(self, step: int) -> float:
        """The effective multiplier at a call: schedule(step)·α (·σ for ``add``)."""
        s = 1.0 if self.schedule is None else float(self.schedule(step))
        s *= float(self.alpha)
        if self.op == "add":
            s *= float(self.sigma)
        return s

    def applies_to(self, step: int) -> bool:
        if self.steps is None:
            return True
        if isinstance(self.steps, int | np.integer):
            return step == int(self.steps)
        return step in self.steps


def add(site: str | Site, direction: Any, alpha: float = 1.0, sigma: float = 1.0,
        **options: Any) -> Edit:
    """x ← x + α·σ·θ at ``site`` (ITI-style shift)."""
    return Edit(site, direction, "add", alpha=alpha, sigma=sigma, **options)


def set_projection(site: str | Site, direction: Any, value: float, **options: Any) -> Edit:
    """Set the component of x along θ to ``value`` at ``site``."""
    return Edit(site, direction, "set_projection", value=value, **options)


def ablate(site: str | Site, direction: Any, **options: Any) -> Edit:
    """Remove the component of x along θ at ``site``."""
    return Edit(site, direction, "ablate", **options)


# ---- widths -------------------------------------------------------------------------------
def _leaf_width(module: torch.nn.Module) -> int | None:
    if isinstance(module, torch.nn.Linear):
        return module.out_features
    if isinstance(module, torch.nn.modules.conv._ConvNd):
        return module.out_channels
    if isinstance(module, torch.nn.Embedding):
        return module.embedding_dim
    if isinstance(module, torch.nn.LayerNorm | torch.nn.GroupNorm):
        return (module.normalized_shape[-1] if isinstance(module, torch.nn.LayerNorm)
                else module.num_channels)
    if any(True for _ in module.children()):
        return None
    w = getattr(module, "weight", None)  # RMSNorm-style leaves (T5LayerNorm)
    if isinstance(w, torch.Tensor) and w.ndim == 1:
        return int(w.shape[0])
    return None


def site_width(lm: LoadedModel, site: Site) -> int | None:
    """Feature width a direction at ``site`` must have, inferred without running the model.

    Heads: the head dim. A width-giving leaf module (linear, conv, embedding, norm): its output
    width. Attention modules and blocks that have heads: the width of the attention output
    projection (a transformer block's residual width). Other non-channels-first layer/mlp
    blocks: the last linear or norm inside. None when nothing tells reliably (containers such
    as flows, vocoders, predictors): the width is then checked on the first call instead.
    """
    if site.kind == "head":
        return site.head_dim
    module = lm.module(site)
    width = _leaf_width(module)
    if width is not None:
        return width
    if site.kind in ("attn", "layer"):
        sites = lm.sites()
        for hn in (f"{site.name}.heads.0", f"{site.name}.attn.heads.0"):
            head = sites.get(hn)
            if head is not None and head.kind == "head":
                out = lm.module(head)
                if isinstance(out, torch.nn.Linear):
                    return out.out_features
    if site.kind in ("layer", "mlp") and not site.channels_first:
        for sub in reversed(list(module.modules())):
            if isinstance(sub, torch.nn.Linear | torch.nn.LayerNorm) or (
                not any(True for _ in sub.children()) and "norm" in type(sub).__name__.lower()
            ):
                width = _leaf_width(sub)
                if width is not None:
                    return width
    return None


# ---- output rewriting ---------------------------------------------------------------------
def replace_first_tensor(obj: Any, new: torch.Tensor) -> tuple[Any, bool]:
    """``obj`` with its first tensor (as ``first_tensor`` finds it) replaced by ``new``."""
    if isinstance(obj, torch.Tensor):
        return new, True
    if isinstance(obj, dict):  # ModelOutput is an OrderedDict: update in place
        for k, v in obj.items():
            rep, done = replace_first_tensor(v, new)
            if done:
                obj[k] = rep
                return obj, True
        return obj, False
    if isinstance(obj, list | tuple):
        items = list(obj)
        for i, v in enumerate(items):
            rep, done = replace_first_tensor(v, new)
            if done:
                items[i] = rep
                if isinstance(obj, list):
                    return items, True
                if hasattr(obj, "_fields"):  # namedtuple
                    return type(obj)(*items), True
                return type(obj)(items), True
        return obj, False
    return obj, False


class _Applied:
    """One validated edit bound to its site: direction as a tensor, a call counter."""

    def __init__(self, edit: Edit, site: Site, theta: torch.Tensor, width: int | None) -> None:
        self.edit, self.site, self.theta, self.width = edit, site, theta, width
        self.calls = 0
        self.applied_steps: list[int] = []
        self._cast: dict[tuple[Any, Any], torch.Tensor] = {}

    def _theta(self, x: torch.Tensor) -> torch.Tensor:
        key = (x.dtype, x.device)
        if key not in self._cast:
            self._cast[key] = self.theta.to(dtype=x.dtype, device=x.device)
        return self._cast[key]

    def _features_last(self, x: torch.Tensor) -> tuple[torch.Tensor, bool]:
        if x.ndim == 3 and self.site.channels_first:
            return x.transpose(1, 2), True
        if x.ndim in (2, 3):
            return x, False
        raise InterventionError(
            f"site {self.site.name!r}: cannot edit an activation of shape {tuple(x.shape)} "
            f"(only (batch, features), (batch, time, features) or channels-first "
            f"(batch, channels, time) are supported)"
        )

    def _check_width(self, got: int) -> None:
        if got != self.theta.shape[0]:
            raise InterventionError(
                f"site {self.site.name!r} has feature width {got} but the direction has width "
                f"{self.theta.shape[0]}"
            )

    def edit_tensor(self, x: torch.Tensor, scale: float) -> torch.Tensor:
        """A new tensor: x with the edit applied to the chosen rows (x itself is untouched)."""
        xf, transposed = self._features_last(x)
        self._check_width(xf.shape[-1])
        rows = self.edit.rows
        if rows is not None:
            if isinstance(rows, slice):
                idx: Any = rows
            else:
                idx = torch.as_tensor(list(rows), dtype=torch.long, device=x.device)
                if idx.numel() and (int(idx.max()) >= xf.shape[0] or int(idx.min()) < -xf.shape[0]):
                    raise InterventionError(
                        f"site {self.site.name!r}: rows {list(rows)} out of range for a batch "
                        f"of {xf.shape[0]}"
                    )
            out = xf.clone()
            out[idx] = self._op(xf[idx], scale)
        else:
            out = self._op(xf, scale)
        return out.transpose(1, 2) if transposed else out

    def _op(self, x: torch.Tensor, scale: float) -> torch.Tensor:
        theta = self._theta(x)
        op = self.edit.op
        if op == "add":
            return x + scale * theta
        proj = (x * theta).sum(-1, keepdim=True)
        if op == "ablate":
            return x - scale * proj * theta
        return x + scale * (float(self.edit.value) - proj) * theta

    def step(self) -> float | None:
        """Count this call; the effective scale, or None when the call is left alone."""
        step = self.calls
        self.calls += 1
        if not self.edit.applies_to(step):
            return None
        scale = self.edit.scale(step)
        if scale == 0.0:
            return None
        self.applied_steps.append(step)
        return scale


class Intervene(HookSet):
    """Context manager applying edits during every forward call inside it.

    ``edits`` is one ``Edit`` or many; several edits on one module apply in the given order.
    After exit, ``calls[i]`` is how many times edit i's module ran and ``applied[i]`` the calls
    at which edit i actually changed something.
    """

    def __init__(self, lm: LoadedModel, edits: Edit | Iterable[Edit]) -> None:
        self.lm = lm
        self.edits = [edits] if isinstance(edits, Edit) else list(edits)
        for e in self.edits:
            if not isinstance(e, Edit):
                raise InterventionError(f"expected Edit objects, got {type(e).__name__}")
        self._bound = [self._bind(e) for e in self.edits]
        super().__init__()

    def _bind(self, edit: Edit) -> _Applied:
        site = edit.site if isinstance(edit.site, Site) else self.lm.site(edit.site)
        theta = torch.as_tensor(np.asarray(edit.direction, dtype=np.float64)).float()
        if theta.ndim != 1:
            raise InterventionError(
                f"direction for site {site.name!r} must be 1-D, got shape {tuple(theta.shape)}"
            )
        width = site_width(self.lm, site)
        if width is not None and theta.shape[0] != width:
            what = "head_dim" if site.kind == "head" else "feature width"
            raise InterventionError(
                f"direction for site {site.name!r} has width {theta.shape[0]}, but the site's "
                f"{what} is {width}"
            )
        if not torch.isfinite(theta).all():
            raise InterventionError(f"direction for site {site.name!r} has NaN or inf values")
        norm = float(theta.norm())
        if norm == 0.0:
            raise InterventionError(f"direction for site {site.name!r} is the zero vector")
        if (edit.rows is not None and not isinstance(edit.rows, slice)
                and not all(isinstance(r, int | np.integer) for r in edit.rows)):
            raise InterventionError(f"rows must be a slice or a list of ints, got {edit.rows!r}")
        if edit.schedule is not None and not callable(edit.schedule):
            raise InterventionError("schedule must be a callable step -> float")
        return _Applied(edit, site, theta / norm, width)

    @property
    def calls(self) -> list[int]:
        return [b.calls for b in self._bound]

    @property
    def applied(self) -> list[list[int]]:
        return [list(b.applied_steps) for b in self._bound]

    def __enter__(self) -> Self:
        for b in self._bound:
            b.calls = 0
            b.applied_steps.clear()
        try:
            for b in self._bound:
                module = self.lm.module(b.site)
                if b.site.reads_input:
                    h = module.register_forward_pre_hook(_head_hook(b), with_kwargs=True)
                else:
                    h = module.register_forward_hook(_output_hook(b))
                self._handles.append(h)
        except BaseException:
            self._remove()
            raise
        return self



def _output_hook(b: _Applied):
    def hook(module: torch.nn.Module, args: Any, output: Any) -> Any:
        scale = b.step()
        if scale is None:
            return None
        x = first_tensor(output)
        if x is None:
            raise InterventionError(f"site {b.site.name!r} returned no tensor to edit")
        new, _ = replace_first_tensor(output, b.edit_tensor(x, scale))
        return new

    return hook


def _head_hook(b: _Applied):
    site = b.site
    lo, hi = site.head * site.head_dim, (site.head + 1) * site.head_dim  # type: ignore[operator]

    def hook(module: torch.nn.Module, args: Any, kwargs: Any) -> Any:
        scale = b.step()
        if scale is None:
            return None
        in_args = first_tensor(args) is not None
        x = first_tensor(args) if in_args else first_tensor(kwargs)
        if x is None:
            raise InterventionError(f"site {site.name!r} received no tensor input to edit")
        if x.shape[-1] < hi:
            raise InterventionError(
                f"site {site.name!r}: input width {x.shape[-1]} has no head slice [{lo}:{hi}]"
            )
        new = x.clone()
        new[..., lo:hi] = b.edit_tensor(x[..., lo:hi], scale)
        if in_args:
            args, _ = replace_first_tensor(args, new)
        else:
            kwargs, _ = replace_first_tensor(kwargs, new)
        return args, kwargs

    return hook


__all__ = [
    "OPS",
    "Edit",
    "Intervene",
    "InterventionError",
    "ablate",
    "add",
    "cfg_conditional_rows",
    "cfg_unconditional_rows",
    "replace_first_tensor",
    "set_projection",
    "site_width",
]

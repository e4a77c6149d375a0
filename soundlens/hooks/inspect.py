"""Shapes of a model's sites, from one forward pass on a short dummy input."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from soundlens.hooks.capture import first_tensor
from soundlens.models.loaded import LoadedModel


def dummy_inputs(lm: LoadedModel) -> dict[str, Any]:
    """One second of quiet noise for audio models; a short sentence for text-driven ones."""
    kwargs: dict[str, Any] = {}
    if "audio" in lm.spec.takes and (lm.spec.generates != "audio" or "text" not in lm.spec.takes):
        noise = 0.05 * np.random.default_rng(0).standard_normal(lm.sample_rate)
        kwargs.update(audio=noise.astype(np.float32), sampling_rate=lm.sample_rate)
    if "text" in lm.spec.takes and (not kwargs or lm.spec.name == "clap"):
        kwargs["text"] = "hello world"
    return lm.inputs(**kwargs)


def _run(lm: LoadedModel, inputs: dict[str, Any]) -> None:
    with torch.no_grad():
        if lm.spec.smoke_forward is not None:
            lm.spec.smoke_forward(lm, inputs)
        else:
            lm.model(**inputs)


def site_shapes(lm: LoadedModel, sites: list[str]) -> dict[str, tuple[int, ...]]:
    """Raw activation shape (first call) of each site that the dummy forward reaches."""
    shapes: dict[str, tuple[int, ...]] = {}
    handles = []
    resolved = [lm.site(s) for s in sites]
    try:
        for s in resolved:
            module = lm.module(s)
            if s.reads_input:
                def pre(m: torch.nn.Module, args: Any, s=s) -> None:
                    x = first_tensor(args)
                    if x is not None:
                        shapes.setdefault(s.name, (*x.shape[:-1], s.head_dim))
                handles.append(module.register_forward_pre_hook(pre))
            else:
                def post(m: torch.nn.Module, args: Any, out: Any, s=s) -> None:
                    x = first_tensor(out)
                    if x is not None:
                        shapes.setdefault(s.name, tuple(x.shape))
                handles.append(module.register_forward_hook(post))
        _run(lm, dummy_inputs(lm))
    finally:
        for h in handles:
            h.remove()
    return shapes

"""soundlens.hooks.nnsight_interop: the nnsight path and the hook path agree exactly."""

from __future__ import annotations

import nnsight
import numpy as np
import torch

from soundlens.hooks.capture import capture, first_tensor, pool
from soundlens.hooks.nnsight_interop import in_execution_order, site_value, wrap
from soundlens.models import load


def test_nnsight_and_hooks_give_identical_activations(tiny_dir) -> None:
    lm = load(tiny_dir("wav2vec2"))
    x = lm.inputs((0.1 * np.random.default_rng(3).standard_normal(16000)).astype("f4"),
                  sampling_rate=16000)
    sites = ["encoder.layers.1.mlp", "encoder.layers.0", "encoder.layers.1.attn.heads.1"]
    sites = in_execution_order(lm, sites)
    assert sites == ["encoder.layers.0", "encoder.layers.1.attn.heads.1", "encoder.layers.1.mlp"]
    hooked = capture(lm, x, sites, "mean")
    root = wrap(lm)
    with root.trace(**x):
        # Only .save()d names leave an nnsight trace: save the list itself too.
        saved = nnsight.save([site_value(root, lm, s) for s in sites])
    for s, value in zip(sites, saved):
        t = first_tensor(value)
        got = pool(t, torch.tensor([t.shape[1]]), "mean")
        assert torch.equal(got, hooked[s]), s

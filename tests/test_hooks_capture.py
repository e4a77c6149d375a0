"""soundlens.hooks.capture: pooled activations equal the model's own, hooks always removed."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from soundlens.hooks.capture import Capture, capture, pool, valid_lengths
from soundlens.models import load


def _audio(n: int, seed: int = 0) -> np.ndarray:
    return (0.1 * np.random.default_rng(seed).standard_normal(n)).astype("f4")


def _n_hooks(model: torch.nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


def test_pool_modes_on_known_values() -> None:
    x = torch.tensor([[[1.0], [3.0], [100.0]], [[2.0], [4.0], [6.0]]])
    lengths = torch.tensor([2, 3])
    assert pool(x, lengths, "mean").flatten().tolist() == [2.0, 4.0]
    assert pool(x, lengths, "max").flatten().tolist() == [3.0, 6.0]
    assert pool(x, lengths, "last").flatten().tolist() == [3.0, 6.0]
    ms = pool(x, lengths, "meanstd")
    assert ms.shape == (2, 2) and ms[0, 1].item() == pytest.approx(1.0)
    assert pool(x, lengths, "none") is x


def test_valid_lengths_cover_real_frames() -> None:
    assert valid_lengths(torch.tensor([1.0, 0.5, 0.001]), 3, 10).tolist() == [10, 5, 1]
    assert valid_lengths(None, 2, 7).tolist() == [7, 7]


def test_capture_equals_hidden_states_with_every_pooling(tiny_dir) -> None:
    lm = load(tiny_dir("hubert"))
    inputs = lm.inputs(_audio(16000), sampling_rate=16000)
    with torch.no_grad():
        hidden = lm.model(**inputs, output_hidden_states=True).hidden_states
    for how in ("mean", "max", "last", "meanstd"):
        acts = capture(lm, inputs, ["encoder.layers.0", "encoder.layers.1"], how)
        for i in range(2):
            want = pool(hidden[i + 1], torch.tensor([hidden[i + 1].shape[1]]), how)
            torch.testing.assert_close(acts[f"encoder.layers.{i}"], want)


def test_head_sites_are_slices_of_the_projection_input(tiny_dir) -> None:
    lm = load(tiny_dir("wav2vec2"))
    inputs = lm.inputs(_audio(16000), sampling_rate=16000)
    got = {}
    proj = lm.module("encoder.layers.1.attn.heads.0")
    h = proj.register_forward_pre_hook(lambda m, a: got.setdefault("x", a[0].detach()))
    try:
        acts = capture(lm, inputs, ["encoder.layers.1.attn.heads.0",
                                    "encoder.layers.1.attn.heads.1"], "mean")
    finally:
        h.remove()
    d = lm.site("encoder.layers.1.attn.heads.0").head_dim
    torch.testing.assert_close(acts["encoder.layers.1.attn.heads.0"], got["x"][..., :d].mean(1))
    torch.testing.assert_close(acts["encoder.layers.1.attn.heads.1"], got["x"][..., d:].mean(1))


def test_whisper_pools_only_frames_covering_real_audio(tiny_dir) -> None:
    lm = load(tiny_dir("whisper"))
    clip = _audio(16000)  # 1 s of a 30 s window: 50 of 1500 encoder positions
    inputs = lm.inputs(clip, sampling_rate=16000)
    with torch.no_grad():
        hidden = lm.model.get_encoder()(inputs["input_features"], output_hidden_states=True)
    acts = capture(lm, inputs, ["encoder.layers.0"], "mean", n_samples=[len(clip)])
    torch.testing.assert_close(acts["encoder.layers.0"], hidden.hidden_states[1][:, :50].mean(1))
    padded = capture(lm, inputs, ["encoder.layers.0"], "mean")
    assert not torch.allclose(padded["encoder.layers.0"], acts["encoder.layers.0"])


def test_channels_first_sites_pool_over_time(tiny_dir) -> None:
    lm = load(tiny_dir("encodec"))
    inputs = lm.inputs(_audio(16000), sampling_rate=16000)
    site = lm.site("encoder.layers.0")
    assert site.channels_first
    got = {}
    h = lm.module(site).register_forward_hook(lambda m, a, o: got.setdefault("x", o.detach()))
    try:
        acts = capture(lm, inputs, [site], "mean")
    finally:
        h.remove()
    torch.testing.assert_close(acts["encoder.layers.0"], got["x"].mean(-1))


def test_hooks_removed_on_error(tiny_dir) -> None:
    lm = load(tiny_dir("hubert"))
    before = _n_hooks(lm.model)
    with pytest.raises(RuntimeError, match="boom"):
        with Capture(lm, ["encoder.layers.0", "encoder.layers.1.attn.heads.0"]):
            assert _n_hooks(lm.model) == before + 2
            raise RuntimeError("boom")
    assert _n_hooks(lm.model) == before


def test_every_call_mode_keeps_one_entry_per_forward(tiny_dir) -> None:
    lm = load(tiny_dir("hubert"))
    inputs = lm.inputs(_audio(8000), sampling_rate=16000)
    with Capture(lm, ["encoder.layers.1"], every_call=True) as cap, torch.no_grad():
        for _ in range(3):
            lm.model(**inputs)
    assert len(cap.activations["encoder.layers.1"]) == 3


def test_unknown_site_fails_before_running(tiny_dir) -> None:
    lm = load(tiny_dir("hubert"))
    with pytest.raises(LookupError, match="encoder.layers.1"):
        Capture(lm, ["encoder.layer.1"])


def test_unknown_pooling_is_named(tiny_dir) -> None:
    lm = load(tiny_dir("hubert"))
    with pytest.raises(ValueError, match="'median'"):
        Capture(lm, ["encoder.layers.1"], pooling="median")  # type: ignore[arg-type]


def test_trimmed_whisper_input_is_explicit_and_self_consistent(tiny_dir) -> None:
    from soundlens.hooks.capture import CaptureError

    lm = load(tiny_dir("whisper"))
    clips = [_audio(16000), _audio(8000, seed=1)]
    sites = ["encoder.layers.0", "encoder.layers.1"]
    n = [len(c) for c in clips]
    padded = lm.inputs(clips, sampling_rate=16000)
    short = lm.inputs(clips, sampling_rate=16000, trim=True)
    assert short["input_features"].shape[-1] < padded["input_features"].shape[-1]
    a = capture(lm, padded, sites, n_samples=n, trim=True)
    b = capture(lm, short, sites, n_samples=n, trim=True)
    for s in sites:  # log-mel over the clip alone equals the padded one's first frames
        torch.testing.assert_close(a[s], b[s], rtol=1e-3, atol=1e-3)
    full = capture(lm, padded, sites, n_samples=n)
    assert not torch.allclose(full["encoder.layers.1"], b["encoder.layers.1"])
    # The window-length check and position table are restored afterwards.
    enc = lm.model.get_encoder()
    assert enc.embed_positions.num_embeddings == enc.config.max_source_positions == 1500
    hubert = load(tiny_dir("hubert"))
    with pytest.raises(CaptureError, match="trimmed input"):
        capture(hubert, hubert.inputs(clips, sampling_rate=16000), ["encoder.layers.0"],
                n_samples=n, trim=True)

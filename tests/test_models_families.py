"""soundlens.models.families / loaded: canonical sites resolve to the right modules."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from soundlens.errors import AudioInputError, UnknownSiteError
from soundlens.models import FAMILIES, load

SPEECH_ENCODERS = ["wav2vec2", "hubert", "wavlm", "data2vec-audio"]


def _audio(sr: int, seconds: float = 1.0, seed: int = 0) -> np.ndarray:
    return (0.1 * np.random.default_rng(seed).standard_normal(int(sr * seconds))).astype("f4")


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_sites_resolve_to_modules(family: str, tiny_dir) -> None:
    lm = load(tiny_dir(family))
    sites = lm.sites()
    layers = [s for s in sites.values() if s.kind == "layer"]
    assert layers, f"{family}: no layer sites"
    modules = dict(lm.model.named_modules())
    for site in sites.values():
        assert site.module_path in modules, site
        assert lm.module(site.name) is modules[site.module_path]
    for group in (g for g in lm.spec.layer_groups if g.blocks):
        n = sum(1 for s in layers if s.name.rsplit(".", 1)[0] == group.canonical)
        # Counts come from the model, never hard-coded: compare with the ModuleList.
        lists = [m for p, m in modules.items() if p == group.path or p.endswith("." + group.path)]
        assert n == (len(lists[0]) if lists else 0), group


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_heads_slice_the_attention_output_projection(family: str, tiny_dir) -> None:
    lm = load(tiny_dir(family))
    heads = [s for s in lm.sites().values() if s.kind == "head"]
    by_module: dict[str, list[int]] = {}
    for s in heads:
        by_module.setdefault(s.module_path, []).append(s.head)
        proj = lm.module(s)
        assert isinstance(proj, torch.nn.Linear)
        assert s.head_dim * len([h for h in heads if h.module_path == s.module_path]) == (
            proj.in_features
        )
    for idx in by_module.values():
        assert sorted(idx) == list(range(len(idx)))


@pytest.mark.parametrize("family", SPEECH_ENCODERS + ["ast"])
def test_layer_sites_equal_hidden_states(family: str, tiny_dir) -> None:
    lm = load(tiny_dir(family))
    inputs = lm.inputs(_audio(lm.sample_rate), sampling_rate=lm.sample_rate)
    captured: dict[str, torch.Tensor] = {}
    layer_sites = [s for s in lm.sites().values() if s.kind == "layer"]
    handles = [
        lm.module(s).register_forward_hook(
            lambda m, i, o, name=s.name: captured.__setitem__(
                name, (o[0] if isinstance(o, tuple) else o).detach()
            )
        )
        for s in layer_sites
    ]
    try:
        with torch.no_grad():
            out = lm.model(**inputs, output_hidden_states=True)
    finally:
        for h in handles:
            h.remove()
    hidden = out.hidden_states
    assert len(hidden) == len(layer_sites) + 1
    for i, s in enumerate(layer_sites):
        if family == "ast" and i == len(layer_sites) - 1:
            continue
        torch.testing.assert_close(captured[s.name], hidden[i + 1], rtol=0, atol=0)


def test_whisper_encoder_sites_equal_hidden_states_except_final_norm(tiny_dir) -> None:
    lm = load(tiny_dir("whisper"))
    inputs = lm.inputs(_audio(16000), sampling_rate=16000)
    site = lm.site("encoder.layers.0")
    got = {}
    h = lm.module(site).register_forward_hook(lambda m, i, o: got.setdefault("x", o))
    try:
        with torch.no_grad():
            out = lm.model.model.encoder(inputs["input_features"], output_hidden_states=True)
    finally:
        h.remove()
    x = got["x"][0] if isinstance(got["x"], tuple) else got["x"]
    torch.testing.assert_close(x, out.hidden_states[1], rtol=0, atol=0)


def test_unknown_site_lists_close_names(tiny_dir) -> None:
    lm = load(tiny_dir("wav2vec2"))
    with pytest.raises(UnknownSiteError) as e:
        lm.site("encoder.layer.1")
    assert "encoder.layers.1" in str(e.value)
    assert "soundlens sites" in str(e.value)


def test_raw_module_path_is_a_site(tiny_dir) -> None:
    lm = load(tiny_dir("wav2vec2"))
    s = lm.site("encoder.layers.0.feed_forward.intermediate_dense")
    assert s.kind == "module"
    assert isinstance(lm.module(s), torch.nn.Linear)


def test_same_canonical_names_across_families(tiny_dir) -> None:
    for family in SPEECH_ENCODERS:
        names = set(load(tiny_dir(family)).sites())
        assert {"encoder.layers.0", "encoder.layers.1.attn", "encoder.layers.1.mlp",
                "encoder.layers.0.attn.heads.1", "encoder.embeddings"} <= names
    names = set(load(tiny_dir("musicgen")).sites())
    assert {"decoder.layers.1", "decoder.layers.1.attn.heads.0", "decoder.layers.0.mlp",
            "text_encoder.layers.0", "decoder.cross_layers.1.attn.heads.1"} <= names
    assert "decoder.cross_layers.1" not in names  # the block itself is decoder.layers.1


class TestInputs:
    def test_wrong_sample_rate_names_both_rates(self, tiny_dir) -> None:
        lm = load(tiny_dir("hubert"))
        with pytest.raises(AudioInputError, match="16000 Hz but got 44100 Hz"):
            lm.inputs(_audio(44100), sampling_rate=44100)

    def test_nan_audio_names_the_clip(self, tiny_dir) -> None:
        lm = load(tiny_dir("hubert"))
        bad = _audio(16000)
        bad[100] = np.nan
        with pytest.raises(AudioInputError, match="clip 1 contains NaN"):
            lm.inputs([_audio(16000), bad], sampling_rate=16000)

    def test_empty_audio(self, tiny_dir) -> None:
        lm = load(tiny_dir("hubert"))
        with pytest.raises(AudioInputError, match="clip 0 is empty"):
            lm.inputs(np.zeros(0, dtype="f4"), sampling_rate=16000)

    def test_stereo_is_refused(self, tiny_dir) -> None:
        lm = load(tiny_dir("hubert"))
        with pytest.raises(AudioInputError, match="mono"):
            lm.inputs([np.zeros((2, 16000), dtype="f4")], sampling_rate=16000)

    def test_text_to_an_audio_encoder_is_refused(self, tiny_dir) -> None:
        lm = load(tiny_dir("hubert"))
        with pytest.raises(AudioInputError, match="takes no text"):
            lm.inputs(text="hello")

    def test_batch_of_different_lengths_is_padded_with_mask(self, tiny_dir) -> None:
        lm = load(tiny_dir("wav2vec2"))
        x = lm.inputs([_audio(16000, 1.0), _audio(16000, 0.5)], sampling_rate=16000)
        assert x["input_values"].shape == (2, 16000)
        assert x["attention_mask"][1].sum() == 8000

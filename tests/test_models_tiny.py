"""soundlens.models.tiny: fixtures run forward/generation, and codecs decode codes faithfully."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import transformers

from soundlens.models import load
from soundlens.models.tiny import _encodec_config, fill_codebooks


def _audio(sr: int, seconds: float = 1.0) -> np.ndarray:
    return (0.1 * np.random.default_rng(0).standard_normal(int(sr * seconds))).astype("f4")


@pytest.mark.parametrize(
    "family", ["wav2vec2", "hubert", "wavlm", "data2vec-audio", "ast", "encodec"]
)
def test_audio_encoders_run_forward(family: str, tiny_dir) -> None:
    lm = load(tiny_dir(family))
    with torch.no_grad():
        out = lm.model(**lm.inputs(_audio(lm.sample_rate), sampling_rate=lm.sample_rate))
    assert out is not None


def test_clap_embeds_audio_and_text(tiny_dir) -> None:
    lm = load(tiny_dir("clap"))
    x = lm.inputs(_audio(lm.sample_rate), sampling_rate=lm.sample_rate, text="jazz drums")
    with torch.no_grad():
        out = lm.model(**x)
    assert out.audio_embeds.shape == out.text_embeds.shape


def test_whisper_generates_text_tokens(tiny_dir) -> None:
    lm = load(tiny_dir("whisper"))
    x = lm.inputs(_audio(16000), sampling_rate=16000)
    with torch.no_grad():
        ids = lm.model.generate(**x, max_new_tokens=4)
    assert ids.shape[0] == 1 and ids.shape[1] >= 2


def test_musicgen_generates_audio_and_codes_matter(tiny_dir) -> None:
    lm = load(tiny_dir("musicgen"))
    x = lm.inputs(text=["jazz drums", "calm piano"])
    with torch.no_grad():
        torch.manual_seed(0)
        audio = lm.model.generate(**x, max_new_tokens=8, do_sample=True)
    assert audio.ndim == 3 and audio.shape[0] == 2
    assert torch.isfinite(audio).all()
    assert not torch.allclose(audio[0], audio[1])


def test_vits_synthesizes(tiny_dir) -> None:
    lm = load(tiny_dir("vits"))
    with torch.no_grad():
        torch.manual_seed(0)
        wav = lm.model(**lm.inputs(text="hello world")).waveform
    assert wav.shape[0] == 1 and wav.shape[1] > 0 and torch.isfinite(wav).all()


def test_speecht5_generates_spectrogram(tiny_dir) -> None:
    lm = load(tiny_dir("speecht5"))
    x = lm.inputs(text="hello world")
    spk = torch.zeros(1, lm.model.config.speaker_embedding_dim)
    with torch.no_grad():
        mel = lm.model.generate(x["input_ids"], speaker_embeddings=spk, maxlenratio=2.0)
    assert mel.shape[-1] == lm.model.config.num_mel_bins


def test_bark_semantic_stage_runs(tiny_dir) -> None:
    lm = load(tiny_dir("bark"))
    x = lm.inputs(text="hello world")
    with torch.no_grad():
        logits = lm.model.semantic(input_ids=x["input_ids"][:, :16]).logits
    assert logits.shape[-1] == lm.model.config.semantic_config.output_vocab_size


def _decode(model: transformers.EncodecModel, codes: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model.decode(codes[None], [None])[0]


def test_filled_codebooks_make_codes_change_audio(tiny_dir) -> None:
    model = load(tiny_dir("encodec")).model
    n_q = model.config.num_quantizers
    g = torch.Generator().manual_seed(1)
    a = torch.randint(0, model.config.codebook_size, (1, n_q, 20), generator=g)
    b = torch.randint(0, model.config.codebook_size, (1, n_q, 20), generator=g)
    assert not torch.allclose(_decode(model, a), _decode(model, b))


def test_unfilled_codebooks_would_hide_code_changes() -> None:
    """The reason fixtures fill codebooks: with zero codebooks every code decodes alike."""
    torch.manual_seed(0)
    model = transformers.EncodecModel(_encodec_config()).eval()
    n_q, size = model.config.num_quantizers, model.config.codebook_size
    a = torch.zeros(1, n_q, 20, dtype=torch.long)
    b = torch.full((1, n_q, 20), size - 1, dtype=torch.long)
    assert torch.allclose(_decode(model, a), _decode(model, b))
    assert fill_codebooks(model) == n_q
    assert not torch.allclose(_decode(model, a), _decode(model, b))

"""Baselines a probe result must beat: non-neural features and a random-weight model.

- Non-neural: chroma (music) or MFCC (speech) statistics of the same clips, probed on the same
  split — SynTheory found handcrafted chroma a strong baseline for music theory concepts.
- Random weights: the same architecture, re-initialised, probed at the same sites: what the
  architecture and input pipeline give without learning.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from typing import Literal

import numpy as np
import torch

from soundlens.models.loaded import LoadedModel

FeatureKind = Literal["chroma", "mfcc"]


def handcrafted_features(audio: np.ndarray, sample_rate: int, kind: FeatureKind) -> np.ndarray:
    """Mean and standard deviation over time of chroma (24 values) or 20 MFCCs (40 values)."""
    import librosa

    if kind == "chroma":
        feats = librosa.feature.chroma_stft(y=audio, sr=sample_rate, n_fft=2048, hop_length=512)
    elif kind == "mfcc":
        feats = librosa.feature.mfcc(y=audio, sr=sample_rate, n_mfcc=20)
    else:
        raise ValueError(f"unknown baseline features {kind!r}; use chroma or mfcc")
    return np.concatenate([feats.mean(1), feats.std(1)]).astype(np.float32)


def handcrafted_matrix(clips: Iterable[np.ndarray], sample_rate: int, kind: FeatureKind
                       ) -> np.ndarray:
    """(N, F) baseline features for a sequence of clips."""
    return np.stack([handcrafted_features(c, sample_rate, kind) for c in clips])


def randomized(lm: LoadedModel, seed: int = 0) -> LoadedModel:
    """A copy of ``lm`` with every parameter re-initialised (same architecture and processor).

    Each submodule's own ``reset_parameters`` draws the new weights (PyTorch's default
    initialisation), seeded, so the control is reproducible.
    """
    model = copy.deepcopy(lm.model)
    gen_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        for m in model.modules():
            reset = getattr(m, "reset_parameters", None)
            if callable(reset):
                reset()
    finally:
        torch.random.set_rng_state(gen_state)
    model.eval()
    return LoadedModel(name=f"random:{lm.name}", model=model, processor=lm.processor,
                       spec=lm.spec, source=f"random(seed={seed}):{lm.source}", extras=lm.extras)

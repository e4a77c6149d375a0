"""soundlens.probing.baselines: random-weight copies and non-neural features."""

from __future__ import annotations

import numpy as np
import torch

from soundlens.models import load
from soundlens.probing.baselines import handcrafted_features, randomized


def test_randomized_copy_changes_weights_not_the_original(tiny_dir) -> None:
    lm = load(tiny_dir("hubert"))
    before = {k: v.clone() for k, v in lm.model.state_dict().items()}
    rnd = randomized(lm, seed=0)
    again = randomized(lm, seed=0)
    changed = [k for k, v in rnd.model.state_dict().items()
               if v.is_floating_point() and v.numel() > 1 and not torch.equal(v, before[k])]
    assert len(changed) > len(before) // 2
    for k, v in lm.model.state_dict().items():
        assert torch.equal(v, before[k]), k
    for k, v in rnd.model.state_dict().items():
        assert torch.equal(v, again.model.state_dict()[k]), k  # seeded: reproducible
    assert rnd.sites().keys() == lm.sites().keys() and rnd.name.startswith("random:")


def test_chroma_of_a_tone_peaks_at_its_pitch_class() -> None:
    sr = 22050
    t = np.arange(sr) / sr
    a440 = (0.3 * np.sin(2 * np.pi * 440.0 * t)).astype("f4")
    feats = handcrafted_features(a440, sr, "chroma")
    assert feats.shape == (24,) and int(np.argmax(feats[:12])) == 9  # C=0 … A=9
    assert handcrafted_features(a440, sr, "mfcc").shape == (40,)

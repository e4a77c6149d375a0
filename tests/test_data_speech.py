"""Speech concepts: F0 shift, rate, voice, language, word verified on samples; errors."""

from __future__ import annotations

import shutil

import pytest

from soundlens.data import speech as S
from soundlens.data.concepts import get_concept, make_dataset
from soundlens.data.errors import DataError, MissingToolError
from soundlens.data.verify import verify_concept

SPEECH = ["voices", "languages", "speech_pitch", "speech_rate", "spoken_digits"]
N = 6
CONFIGS = {"voices": {"voices": ["espeak:en-us+m1", "espeak:en-us+f3", "espeak:en-us+klatt", "flite:slt", "flite:awb", "festival:kal_diphone"]}}


@pytest.fixture(scope="module")
def sets():
    return {name: make_dataset(name, n=N, seed=5, workers=2, config=CONFIGS.get(name)) for name in SPEECH}


@pytest.mark.parametrize("name", SPEECH)
def test_labels_agree_with_measurement(sets, name):
    v = verify_concept(sets[name], name)
    assert v.checked == N
    assert v.rate >= 0.83, str(v)


def _corrupt(ds, name):
    target = get_concept(name).target
    if name == "speech_pitch":
        return ds.map(lambda r: {target: r[target] + 3.0 if r[target] <= 0 else r[target] - 3.0})
    if name == "speech_rate":
        return ds.map(lambda r: {target: 80.0 if r[target] >= 175 else 350.0})
    k = ds.features[target].num_classes
    return ds.map(lambda r: {target: (r[target] + 1) % k})


@pytest.mark.parametrize("name", SPEECH)
def test_verifier_rejects_wrong_labels(sets, name):
    v = verify_concept(_corrupt(sets[name].select(range(4)), name), name)
    assert v.rate <= 0.25, str(v)


def test_same_seed_same_dataset():
    a = make_dataset("spoken_digits", n=5, seed=1, workers=1)
    b = make_dataset("spoken_digits", n=5, seed=1, workers=2)
    c = make_dataset("spoken_digits", n=5, seed=2, workers=1)
    assert a.data.column("audio").to_pylist() == b.data.column("audio").to_pylist()
    assert a.data.column("audio").to_pylist() != c.data.column("audio").to_pylist()
    assert a.features["audio"].sampling_rate == 16000


def test_f0_shift_is_exact_ratio():
    import numpy as np

    sr = 16000
    t = np.arange(sr) / sr
    tone = (0.3 * np.sin(2 * np.pi * 200 * t)).astype(np.float32)
    from soundlens.data.verify import estimate_f0

    up = S.shift_f0(tone, sr, 4.0)
    assert abs(len(up) - len(tone)) < 0.01 * sr
    assert abs(estimate_f0(up, sr) / 200 - 2 ** (4 / 12)) < 0.01


def test_missing_tts_binary_is_a_clear_error(monkeypatch):
    real = shutil.which
    monkeypatch.setattr(S.shutil, "which", lambda exe: None if exe == "espeak-ng" else real(exe))
    with pytest.raises(MissingToolError, match="apt-get install espeak-ng"):
        make_dataset("speech_rate", n=2)
    with pytest.raises(DataError, match="engine:name"):
        get_concept("voices").config({"voices": ["slt"]})
    with pytest.raises(DataError, match="espeak voices"):
        get_concept("speech_rate").config({"voices": ["flite:slt"]})

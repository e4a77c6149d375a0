"""Music concepts: labels checked by independent measurements; determinism; errors."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from soundlens.data import music as M
from soundlens.data.concepts import (
    default_split,
    get_concept,
    make_dataset,
    register,
)
from soundlens.data.errors import DataError, MissingToolError, UnknownConceptError
from soundlens.data.verify import verify_concept

MUSIC = ["notes", "intervals", "scales", "chords", "chord_progressions", "tempos", "time_signatures", "instruments"]
N = 10


@pytest.fixture(scope="module")
def sets():
    return {name: make_dataset(name, n=N, seed=3, workers=2) for name in MUSIC}


@pytest.mark.parametrize("name", MUSIC)
def test_labels_agree_with_measurement(sets, name):
    v = verify_concept(sets[name], name)
    assert v.checked == N
    assert v.rate >= 0.85, str(v)


def _corrupt(ds, name):
    """The same audio with wrong target labels."""
    target = get_concept(name).target
    feat = ds.features[target]
    if name == "tempos":
        return ds.map(lambda r: {target: r[target] * 1.2})
    if name == "instruments":  # a neighbouring program: similar, but not the one that sounds
        return ds.map(lambda r: {target: (r[target] + 1) % 128})
    k = feat.num_classes
    shift = 1 if name != "intervals" else 2
    return ds.map(lambda r: {target: (r[target] + shift) % k})


@pytest.mark.parametrize("name", MUSIC)
def test_verifier_rejects_wrong_labels(sets, name):
    bad = _corrupt(sets[name].select(range(6)), name)
    v = verify_concept(bad, name)
    assert v.rate <= 0.34, str(v)


def test_mislabeled_generator_fails_verification():
    """A generator whose labels are one semitone off its audio must not pass."""
    good = get_concept("notes")

    def sample(cfg, n, rng):
        params = good.sample(cfg, n, rng)
        for p in params:
            p["midi_note"] += 1  # renders a semitone higher than the pitch_class label says
        return params

    register(dataclasses.replace(good, name="notes_buggy", sample=sample))
    ds = make_dataset("notes_buggy", n=6, seed=0, workers=1)
    assert verify_concept(ds, "notes", config=good.config_cls()).rate <= 0.2


def test_same_seed_same_dataset_any_workers():
    a = make_dataset("chords", n=12, seed=7, workers=1)
    b = make_dataset("chords", n=12, seed=7, workers=2)
    c = make_dataset("chords", n=12, seed=8, workers=1)
    assert a.data.column("audio").to_pylist() == b.data.column("audio").to_pylist()
    assert a["quality"] == b["quality"] and a["program"] == b["program"]
    assert a.data.column("audio").to_pylist() != c.data.column("audio").to_pylist()


def test_one_soundfont_load_per_process(monkeypatch):
    loads = []
    real = M.Synth.__init__

    def counting(self, *a, **k):
        loads.append(1)
        real(self, *a, **k)

    monkeypatch.setattr(M, "_SYNTHS", {})
    monkeypatch.setattr(M.Synth, "__init__", counting)
    make_dataset("intervals", n=20, seed=0, workers=1)
    make_dataset("notes", n=5, seed=0, workers=1)
    assert len(loads) == 1


def test_label_grid_balanced_and_columns():
    ds = make_dataset("notes", n=36, seed=0, workers=1)
    counts = np.bincount(ds["pitch_class"], minlength=12)
    assert counts.min() >= 2 and counts.max() <= 4
    assert len(set(ds["program"])) >= 5  # timbre variety
    assert set(ds["program"]) <= set(M.PITCHED_PROGRAMS)
    assert ds.features["audio"].sampling_rate == 22050
    assert ds[0]["audio"]["array"].shape == (44100,)


def test_sample_rate_and_midi():
    ds = make_dataset("chords", n=2, seed=0, sample_rate=32000, workers=1)
    assert ds[0]["audio"]["sampling_rate"] == 32000
    cfg = M.ChordsConfig()
    pm = M.concept_midi("chords", {"root_midi": 60, "quality": "minor", "inversion": "first", "program": 0, "velocity": 90}, cfg)
    assert sorted(n.pitch for n in pm.instruments[0].notes) == [63, 67, 72]
    assert M.progression_chords("ii-V-I-vi", 0) == [(2, "minor"), (7, "major"), (0, "major"), (9, "minor")]
    assert M.progression_chords("i-iiø-v-i", 9)[1] == (11, "diminished")


def test_tempo_extrapolation_split():
    ds = make_dataset("tempos", n=40, seed=0, workers=2)
    split = default_split(ds, "tempos")
    train, test = np.array(split["train"]["bpm"]), np.array(split["test"]["bpm"])
    assert train.min() >= 74 and train.max() <= 186  # middle 70% of 50..210
    assert len(test) and np.all((test < 74) | (test > 186))
    strat = default_split(make_dataset("notes", n=48, seed=0, workers=2, config={"octaves": [4]}), "notes")
    assert len(strat["train"]) + len(strat["test"]) == 48


def test_config_rejects_unknown_fields_and_bad_values():
    with pytest.raises(DataError, match="octaves"):
        get_concept("notes").config({"octave": [4]})
    with pytest.raises(DataError, match="sus4"):
        make_dataset("chords", n=2, config={"qualities": ["major", "sus4"]})
    with pytest.raises(UnknownConceptError, match="chords"):
        get_concept("chordz")


def test_missing_soundfont_is_a_clear_error(monkeypatch, tmp_path):
    with pytest.raises(MissingToolError, match="soundfont not found"):
        M.find_soundfont(tmp_path / "nope.sf2")
    monkeypatch.delenv(M.SOUNDFONT_ENV, raising=False)
    monkeypatch.setattr(M, "SOUNDFONT_CANDIDATES", ())
    with pytest.raises(MissingToolError, match="apt-get install fluid-soundfont-gm"):
        make_dataset("notes", n=2)

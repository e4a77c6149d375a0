"""`soundlens data list|make`, dataset cards, and load_concept's cache."""

from __future__ import annotations

import json

import datasets
from typer.testing import CliRunner

from soundlens.data import load_concept
from soundlens.data.cli import data_app

runner = CliRunner()


def test_list_shows_concepts_and_labels():
    res = runner.invoke(data_app, ["list"])
    assert res.exit_code == 0, res.output
    for name in ["notes", "chords", "tempos", "time_signatures", "instruments", "voices", "speech_pitch", "spoken_digits"]:
        assert name in res.output
    rows = json.loads(runner.invoke(data_app, ["list", "--json"]).output)
    chords = next(r for r in rows if r["concept"] == "chords")
    assert chords["labels"] == ["major", "minor", "augmented", "diminished"]
    assert next(r for r in rows if r["concept"] == "tempos")["task"] == "regression"


def test_make_writes_dataset_and_card(tmp_path):
    out = tmp_path / "chords"
    res = runner.invoke(data_app, ["make", "chords", "--n", "6", "--seed", "2", "--out", str(out), "--set", "octaves=4", "--workers", "1"])
    assert res.exit_code == 0, res.output
    ds = datasets.load_from_disk(str(out))
    assert len(ds) == 6 and ds.features["audio"].sampling_rate == 22050
    card = json.loads((out / "card.json").read_text())
    assert card["concept"] == "chords" and card["generator"]["seed"] == 2
    assert card["generator"]["config"]["octaves"] == [4]
    assert card["sizes"]["n"] == 6 and card["sizes"]["total_seconds"] == 12.0
    assert any("MIT" in s for s in card["sources"])
    readme = (out / "README.md").read_text()
    assert "label set: major, minor, augmented, diminished" in readme and "seed: 2" in readme


def test_make_errors_are_clear(tmp_path):
    res = runner.invoke(data_app, ["make", "chordz", "--out", str(tmp_path / "x")])
    assert res.exit_code == 2 and "did you mean: chords" in res.output.lower()
    res = runner.invoke(data_app, ["make", "chords", "--out", str(tmp_path / "x"), "--set", "octave=4"])
    assert res.exit_code == 2 and "octaves" in res.output
    assert not (tmp_path / "x").exists()


def test_load_concept_caches_by_params(tmp_path):
    a = load_concept("intervals", n=5, seed=1, cache_dir=tmp_path, workers=1)
    assert len(list(tmp_path.iterdir())) == 1
    b = load_concept("intervals", n=5, seed=1, cache_dir=tmp_path, workers=1)
    assert a.cache_files == b.cache_files  # second call read the same files back
    load_concept("intervals", n=5, seed=2, cache_dir=tmp_path, workers=1)
    load_concept("intervals", n=5, seed=1, sample_rate=16000, cache_dir=tmp_path, workers=1)
    assert len(list(tmp_path.iterdir())) == 3

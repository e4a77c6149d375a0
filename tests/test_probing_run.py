"""soundlens.probing.run and `soundlens probe`: the whole job on a tiny model, end to end."""

from __future__ import annotations

import json
from pathlib import Path

import datasets
import numpy as np
import pytest
from typer.testing import CliRunner

from soundlens.cli import app
from soundlens.probing.directions import Directions
from soundlens.probing.probes import ProbeError
from soundlens.probing.run import probe_dataset
from soundlens.models import load


@pytest.fixture(scope="module")
def tones(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Tones in three registers: a concept any audio representation should separate."""
    rng = np.random.default_rng(0)
    rows = {"audio": [], "register": [], "speaker": []}
    t = np.arange(8000) / 16000
    for i in range(48):
        reg = i % 3
        f0 = [220.0, 880.0, 3520.0][reg] * rng.uniform(0.95, 1.05)
        clip = 0.3 * np.sin(2 * np.pi * f0 * t + rng.uniform(0, 6)) + 0.01 * rng.standard_normal(
            len(t))
        rows["audio"].append({"array": clip.astype("f4"), "sampling_rate": 16000})
        rows["register"].append(["low", "mid", "high"][reg])
        rows["speaker"].append(f"s{i % 4}")
    out = tmp_path_factory.mktemp("tones") / "ds"
    datasets.Dataset.from_dict(rows).cast_column("audio", datasets.Audio(16000)).save_to_disk(
        str(out))
    return out


def test_probe_dataset_writes_a_complete_report(tiny_dir, tones, tmp_path: Path) -> None:
    lm = load(tiny_dir("hubert"))
    ds = datasets.load_from_disk(str(tones))
    s = probe_dataset(lm, ds, "register", tmp_path / "r", baseline="chroma", progress=False,
                      batch_size=4)
    saved = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert saved["best_site"] == s["best_site"]
    assert [r["site"] for r in saved["sites"]] == ["encoder.layers.0", "encoder.layers.1"]
    for r in saved["sites"]:
        assert {"accuracy", "accuracy_ci", "macro_f1", "selectivity", "random_weights"} <= set(r)
    assert {"majority", "chroma", "random_weights_best"} <= set(saved["baselines"])
    assert saved["input"] == "full model input window"
    # Chroma separates registers an octave+ apart poorly, energy does: the model layers must
    # beat the majority baseline on a concept this easy.
    assert saved["best"]["accuracy"] > saved["baselines"]["majority"]["accuracy"] + 0.2
    assert (tmp_path / "r" / "layer_curve.png").stat().st_size > 10_000
    for rel in saved["directions"]:
        d = Directions.load(tmp_path / "r" / rel)
        assert d.site == saved["best_site"] and d.provenance["label"] == "register"


def test_label_problems_fail_before_extraction(tiny_dir, tones, tmp_path: Path) -> None:
    lm = load(tiny_dir("hubert"))
    ds = datasets.load_from_disk(str(tones))
    with pytest.raises(ProbeError, match="no label column 'pitch'"):
        probe_dataset(lm, ds, "pitch", tmp_path / "a", progress=False)
    one = ds.map(lambda r: {"register": "low"})
    with pytest.raises(ProbeError, match="single class"):
        probe_dataset(lm, one, "register", tmp_path / "b", progress=False)
    assert not (tmp_path / "a" / "activations").exists()
    assert not (tmp_path / "b" / "activations").exists()


def test_group_split_by_speaker(tiny_dir, tones, tmp_path: Path) -> None:
    lm = load(tiny_dir("hubert"))
    ds = datasets.load_from_disk(str(tones))
    s = probe_dataset(lm, ds, "register", tmp_path / "g", groups="speaker",
                      random_baseline=False, progress=False)
    assert s["split"]["how"].startswith("group-held-out")


def test_cli_probe_on_a_saved_dataset(tiny_dir, tones, tmp_path: Path) -> None:
    out = tmp_path / "cli"
    result = CliRunner().invoke(app, ["probe", str(tiny_dir("hubert")), str(tones), "--label",
                                      "register", "--out", str(out), "--no-random-baseline",
                                      "--baseline", "mfcc"])
    assert result.exit_code == 0, result.output
    assert "best site encoder.layers." in result.output
    saved = json.loads((out / "summary.json").read_text())
    assert "mfcc" in saved["baselines"] and "random_weights_best" not in saved["baselines"]


def test_cli_sites_lists_names_and_shapes(tiny_dir) -> None:
    result = CliRunner().invoke(app, ["sites", str(tiny_dir("wav2vec2")), "--json"])
    assert result.exit_code == 0, result.output
    rows = {r["site"]: r for r in json.loads(result.stdout)["sites"]}
    assert rows["encoder.layers.1"]["shape"][-1] == 32
    assert rows["encoder.layers.1.attn.heads.0"]["shape"][-1] == 16

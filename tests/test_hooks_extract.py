"""soundlens.hooks.extract: resumable extraction; killed midway, a rerun equals a clean run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import datasets
import numpy as np
import pytest
import torch

from soundlens.hooks import ActivationStore, extract
from soundlens.hooks.capture import capture
from soundlens.hooks.store import StoreError
from soundlens.models import load

SITES = ["encoder.layers.0", "encoder.layers.1"]


@pytest.fixture(scope="module")
def saved_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    rng = np.random.default_rng(0)
    clips = [(0.1 * rng.standard_normal(4000 + 400 * (i % 5))).astype("f4") for i in range(40)]
    clips[5] = np.zeros(4000, "f4")  # silent: must be skipped and named
    ds = datasets.Dataset.from_dict({
        "audio": [{"array": c, "sampling_rate": 16000} for c in clips],
        "clip_id": [f"clip-{i:02d}" for i in range(40)],
        "label": [i % 3 for i in range(40)],
    })
    out = tmp_path_factory.mktemp("data") / "ds"
    ds.save_to_disk(str(out))
    return out


def test_extraction_matches_direct_capture_and_skips_bad_clips(tiny_dir, saved_dataset,
                                                               tmp_path: Path) -> None:
    lm = load(tiny_dir("hubert"))
    ds = datasets.load_from_disk(str(saved_dataset))
    store = extract(lm, ds, SITES, tmp_path / "s", batch_size=1, shard_rows=8,
                    id_column="clip_id", progress=False)
    assert store.complete and store.rows == 39
    assert [s["name"] for s in store.skipped] == ["clip-05"] and "silent" in store.skipped[0][
        "reason"]
    assert 5 not in store.indices()
    row = ds[12]["audio"]
    direct = capture(lm, lm.inputs(np.asarray(row["array"], "f4"), sampling_rate=16000), SITES)
    k = int(np.where(store.indices() == 12)[0][0])
    np.testing.assert_allclose(store.array(SITES[1])[k], direct[SITES[1]][0].numpy(), rtol=1e-5,
                               atol=1e-6)


def test_changed_dataset_is_not_served_stale_activations(tiny_dir, saved_dataset,
                                                         tmp_path: Path) -> None:
    lm = load(tiny_dir("hubert"))
    ds = datasets.load_from_disk(str(saved_dataset))
    extract(lm, ds, SITES, tmp_path / "s", shard_rows=8, progress=False)
    with pytest.raises(StoreError, match="dataset"):
        extract(lm, ds.select(range(20)), SITES, tmp_path / "s", progress=False)
    with pytest.raises(StoreError, match="pooling"):
        extract(lm, ds, SITES, tmp_path / "s", pooling="max", progress=False)


def test_unknown_site_fails_before_any_work(tiny_dir, saved_dataset, tmp_path: Path) -> None:
    lm = load(tiny_dir("hubert"))
    ds = datasets.load_from_disk(str(saved_dataset))
    with pytest.raises(LookupError, match="encoder.layers.1"):
        extract(lm, ds, ["encoder.layer.1"], tmp_path / "s", progress=False)
    assert not (tmp_path / "s").exists()


CHILD = textwrap.dedent("""
    import sys, time
    import torch
    torch.set_num_threads({threads})  # as in the parent: bit-identical arithmetic
    import datasets
    from soundlens.hooks import extract
    from soundlens.hooks.store import ActivationStore
    from soundlens.models import load

    original = ActivationStore.append
    def slow_append(self, *a, **kw):
        original(self, *a, **kw)
        time.sleep(0.3)  # widen the window so the parent can kill us mid-run
    ActivationStore.append = slow_append
    lm = load(sys.argv[1])
    ds = datasets.load_from_disk(sys.argv[2])
    extract(lm, ds, {sites!r}, sys.argv[3], batch_size=2, shard_rows=4, progress=False)
""")


def test_resume_after_kill_equals_uninterrupted_run(tiny_dir, saved_dataset,
                                                    tmp_path: Path) -> None:
    model_dir = tiny_dir("hubert")
    killed = tmp_path / "killed"
    script = tmp_path / "child.py"
    script.write_text(CHILD.format(sites=SITES, threads=torch.get_num_threads()))
    proc = subprocess.Popen([sys.executable, str(script), str(model_dir), str(saved_dataset),
                             str(killed)], start_new_session=True)
    deadline = time.time() + 120
    try:
        while time.time() < deadline:
            manifest = killed / "manifest.json"
            if manifest.exists() and ActivationStore.open(killed).manifest["rows_done"] >= 8:
                break
            if proc.poll() is not None:
                pytest.fail("extraction finished before it could be killed")
            time.sleep(0.05)
        os.killpg(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    partial = ActivationStore.open(killed)
    assert not partial.complete and 0 < partial.manifest["rows_done"] < 40

    lm = load(model_dir)
    ds = datasets.load_from_disk(str(saved_dataset))
    resumed = extract(lm, ds, SITES, killed, batch_size=2, shard_rows=4, progress=False)
    clean = extract(lm, ds, SITES, tmp_path / "clean", batch_size=2, shard_rows=4,
                    progress=False)
    assert resumed.indices().tolist() == clean.indices().tolist()
    for s in SITES:
        np.testing.assert_array_equal(resumed.array(s), clean.array(s))
    assert resumed.skipped == clean.skipped

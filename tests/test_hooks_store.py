"""soundlens.hooks.store: atomic shards, keyed manifests, no silent reuse of stale data."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from soundlens.hooks.store import ActivationStore, StoreError

KEY = {"model": "m", "sites": ["a", "b"], "pooling": "mean", "dataset": "d1"}


def _fill(store: ActivationStore, rows: int, start: int = 0) -> None:
    idx = np.arange(start, start + rows)
    store.append({"a": np.full((rows, 3), 1.0) * idx[:, None], "b": np.zeros((rows, 3))}, idx,
                 start + rows)


def test_round_trip_and_stack(tmp_path: Path) -> None:
    s = ActivationStore.create_or_resume(tmp_path, KEY)
    _fill(s, 4)
    _fill(s, 3, start=4)
    s.finish()
    r = ActivationStore.open(tmp_path)
    assert r.complete and r.rows == 7
    assert r.array("a")[:, 0].tolist() == list(range(7))
    assert r.indices().tolist() == list(range(7))
    assert r.stack().shape == (2, 7, 3)
    assert not list(tmp_path.glob(".*tmp*")), "temporary files left behind"
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["key"] == KEY and manifest["rows_done"] == 7


def test_resume_with_same_key_keeps_rows(tmp_path: Path) -> None:
    s = ActivationStore.create_or_resume(tmp_path, KEY)
    _fill(s, 4)
    again = ActivationStore.create_or_resume(tmp_path, dict(KEY))
    assert again.manifest["rows_done"] == 4 and again.rows == 4


def test_different_key_is_refused_and_names_the_difference(tmp_path: Path) -> None:
    s = ActivationStore.create_or_resume(tmp_path, KEY)
    _fill(s, 2)
    with pytest.raises(StoreError, match="differs in: dataset"):
        ActivationStore.create_or_resume(tmp_path, {**KEY, "dataset": "d2"})
    fresh = ActivationStore.create_or_resume(tmp_path, {**KEY, "dataset": "d2"}, overwrite=True)
    assert fresh.rows == 0 and not list(tmp_path.glob("shard-*"))


def test_skipped_rows_are_recorded(tmp_path: Path) -> None:
    s = ActivationStore.create_or_resume(tmp_path, KEY)
    s.append({"a": np.zeros((1, 3)), "b": np.zeros((1, 3))}, np.array([1]), 2,
             [{"index": 0, "name": "bad.wav", "reason": "silent"}])
    assert ActivationStore.open(tmp_path).skipped[0]["name"] == "bad.wav"


def test_unknown_site_and_damaged_shard_are_named(tmp_path: Path) -> None:
    s = ActivationStore.create_or_resume(tmp_path, KEY)
    _fill(s, 2)
    with pytest.raises(StoreError, match="'c' is not in this store"):
        s.array("c")
    (tmp_path / "shard-00000.safetensors").write_bytes(b"garbage")
    with pytest.raises(StoreError, match="shard-00000.safetensors"):
        s.array("a")


def test_not_a_store(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="no manifest.json"):
        ActivationStore.open(tmp_path)

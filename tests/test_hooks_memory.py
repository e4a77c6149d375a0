"""soundlens.hooks.memory: releasing mapped dataset pages never changes what is read."""

from __future__ import annotations

from pathlib import Path

import datasets
import numpy as np

from soundlens.hooks.memory import _mappings, dataset_files, release


def test_release_keeps_data_intact(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    ds = datasets.Dataset.from_dict({"x": [rng.standard_normal(4096).astype("f4") for _ in
                                           range(64)]})
    ds.save_to_disk(str(tmp_path / "d"))
    ds = datasets.load_from_disk(str(tmp_path / "d"))
    files = dataset_files(ds)
    assert files and all(Path(f).exists() for f in files)
    before = [np.asarray(ds[i]["x"]) for i in range(0, 64, 7)]
    assert _mappings({str(Path(f).resolve()) for f in files}), "the Arrow file is not mapped"
    release(files)
    after = [np.asarray(ds[i]["x"]) for i in range(0, 64, 7)]
    for a, b in zip(before, after):
        np.testing.assert_array_equal(a, b)


def test_in_memory_dataset_has_no_files() -> None:
    assert dataset_files(datasets.Dataset.from_dict({"x": [1, 2]})) == []
    release([])  # nothing to do, no error

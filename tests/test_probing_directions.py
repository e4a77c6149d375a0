"""soundlens.probing.directions: unit directions that point where the concept does."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from soundlens.errors import SoundlensError
from soundlens.probing.directions import Directions, from_probe, mean_difference, pca_of_means
from soundlens.probing.probes import LinearProbeClassifier


def _data(seed: int = 0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, 300)
    planted = np.zeros((3, 16))
    planted[0, 2], planted[1, 5], planted[2, 9] = 3, 3, 3
    x = rng.standard_normal((300, 16)) + planted[y]
    return x.astype("f4"), y.astype(str)


@pytest.mark.parametrize("make", ["probe", "mean_difference"])
def test_class_directions_point_at_the_planted_axes(make: str) -> None:
    x, y = _data()
    if make == "probe":
        p = LinearProbeClassifier(lambdas=(1e-2,)).fit(x, y)
        d = from_probe("s", p.coef_, x, list(p.classes_))
    else:
        d = mean_difference("s", x, y)
    for label, axis in zip(["0", "1", "2"], [2, 5, 9]):
        v = d.vector(label)
        assert np.isclose(np.linalg.norm(v), 1, atol=1e-5)
        assert int(np.argmax(v)) == axis
    np.testing.assert_allclose(d.sigma, (x @ d.vectors.T).std(0), rtol=1e-4)


def test_pca_direction_separates_the_class_means() -> None:
    x, y = _data()
    d = pca_of_means("s", x, y)
    proj = {c: float((x[y == c] @ d.vectors[0]).mean()) for c in "012"}
    assert proj["2"] > proj["0"]


def test_save_and_load_round_trip(tmp_path: Path) -> None:
    x, y = _data()
    d = mean_difference("encoder.layers.3", x, y, {"model": "m", "dataset": "fp"})
    d.save(tmp_path / "dirs" / "encoder.layers.3.mean_difference")
    back = Directions.load(tmp_path / "dirs" / "encoder.layers.3.mean_difference")
    assert back.site == "encoder.layers.3" and back.labels == d.labels
    assert back.provenance == {"model": "m", "dataset": "fp"}
    np.testing.assert_array_equal(back.vectors, d.vectors.astype("f4"))
    with pytest.raises(SoundlensError, match="missing"):
        Directions.load(tmp_path / "nope")
    with pytest.raises(SoundlensError, match="no direction"):
        back.vector("7")

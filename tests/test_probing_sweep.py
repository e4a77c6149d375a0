"""soundlens.probing.sweep: the batched sweep equals per-layer fits and reports honestly."""

from __future__ import annotations

import numpy as np
import pytest

from soundlens.probing.probes import LinearProbeClassifier, ProbeError
from soundlens.probing.sweep import control_labels, make_split, sweep


def _layers(n: int = 500, d: int = 32, classes: int = 4, layers: int = 5, seed: int = 0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, classes, n)
    feats = {}
    for i in range(layers):
        x = rng.standard_normal((n, d))
        x[:, :classes] += 0.6 * i * np.eye(classes)[y]
        feats[f"layer.{i}"] = x.astype("f4")
    return feats, y


def test_sweep_finds_the_layer_with_the_signal_and_beats_baselines() -> None:
    feats, y = _layers()
    r = sweep(feats, y, n_boot=200)
    acc = r.metrics["accuracy"]
    assert r.best_site() == "layer.4"
    assert acc[0] < 0.4 and acc[4] > 0.8
    assert r.baselines["majority"]["accuracy"] < 0.4
    row = {t["site"]: t for t in r.table()}["layer.4"]
    lo, hi = row["accuracy_ci"]
    assert lo <= row["accuracy"] <= hi and hi - lo < 0.2
    assert row["selectivity"] > 0.4  # the control task stays near chance


def test_batched_sweep_matches_per_layer_probes() -> None:
    feats, y = _layers()
    r = sweep(feats, y, control=False, n_boot=10)
    for i, site in enumerate(r.sites):
        x = feats[site]
        p = LinearProbeClassifier(lambdas=(float(r.regularization[i]),)).fit(
            x[r.split.train], y[r.split.train])
        single = p.score(x[r.split.test], y[r.split.test])
        assert abs(single - r.metrics["accuracy"][i]) <= 0.02, site


def test_group_split_keeps_groups_apart() -> None:
    feats, y = _layers()
    groups = np.arange(len(y)) % 10
    split = make_split(y, groups=groups, seed=0)
    assert not set(groups[split.train]) & set(groups[split.test])
    r = sweep(feats, y, groups=groups, control=False, n_boot=10)
    assert "group" in r.split.how


def test_control_labels_are_constant_per_type() -> None:
    y = np.array([0, 1, 2, 0, 1, 2, 0, 1])
    types = np.array(["a", "a", "b", "b", "c", "c", "a", "b"])
    ctrl = control_labels(y, types, seed=3)
    for t in set(types):
        assert len(set(ctrl[types == t])) == 1


def test_regression_sweep_reports_r2_and_mae() -> None:
    feats, _ = _layers()
    rng = np.random.default_rng(5)
    target = rng.standard_normal(500)
    feats["layer.2"][:, 7] += 2 * target
    r = sweep(feats, target, task="regression", n_boot=100)
    assert r.best_site() == "layer.2" and r.metrics["r2"][2] > 0.6
    assert r.metrics["r2"][0] < 0.1 and "mean" in r.baselines


def test_bad_features_are_named() -> None:
    feats, y = _layers()
    feats["layer.1"] = feats["layer.1"][:-3]
    with pytest.raises(ProbeError, match="layer.1"):
        sweep(feats, y)
    feats, y = _layers()
    feats["layer.3"][0, 0] = np.nan
    with pytest.raises(ProbeError, match="layer.3.*NaN"):
        sweep(feats, y)


def test_batched_sweep_matches_per_layer_scikit_learn() -> None:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    feats, y = _layers(n=600)
    r = sweep(feats, y, control=False, n_boot=10)
    n_train = len(r.split.train)
    for i, site in enumerate(r.sites):
        x = feats[site]
        ref = make_pipeline(StandardScaler(), LogisticRegression(
            C=1.0 / (float(r.regularization[i]) * n_train), max_iter=2000))
        ref.fit(x[r.split.train], y[r.split.train])
        acc = ref.score(x[r.split.test], y[r.split.test])
        assert abs(acc - r.metrics["accuracy"][i]) <= 0.02, (site, acc, r.metrics["accuracy"][i])


def test_no_bootstrap_gives_point_estimates_only() -> None:
    feats, y = _layers()
    r = sweep(feats, y, control=False, n_boot=0)
    assert np.isnan(r.metrics["accuracy_ci"]).all() and (r.metrics["accuracy"] > 0).all()

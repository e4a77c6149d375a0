"""soundlens.probing.probes: sklearn-compatible probes that find planted concepts and only them."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from soundlens.probing.probes import LinearProbeClassifier, LinearProbeRegressor, ProbeError


def _planted(n: int = 600, d: int = 48, classes: int = 4, strength: float = 1.5, seed: int = 0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, classes, n)
    mix = np.eye(d) + 0.3 * rng.standard_normal((d, d)) / np.sqrt(d)
    x = rng.standard_normal((n, d)) @ mix
    x[:, :classes] += strength * np.eye(classes)[y]
    return x.astype("f4"), y


def test_recovers_a_planted_linear_concept() -> None:
    x, y = _planted(strength=3.0)
    probe = LinearProbeClassifier().fit(x[:400], y[:400])
    assert probe.score(x[400:], y[400:]) > 0.85


def test_stays_at_chance_on_shuffled_labels() -> None:
    x, y = _planted()
    y = np.random.default_rng(1).permutation(y)
    acc = LinearProbeClassifier().fit(x[:400], y[:400]).score(x[400:], y[400:])
    assert acc < 0.25 + 0.1  # 4 classes: chance is 0.25


def test_matches_sklearn_logistic_regression_at_the_chosen_penalty() -> None:
    x, y = _planted(strength=0.7)
    probe = LinearProbeClassifier().fit(x[:400], y[:400])
    ref = make_pipeline(StandardScaler(), LogisticRegression(C=1 / (probe.lambda_ * 400),
                                                             max_iter=1000, tol=1e-8))
    ref.fit(x[:400], y[:400])
    np.testing.assert_allclose(probe.predict_proba(x[400:]), ref.predict_proba(x[400:]),
                               atol=2e-3)


def test_string_labels_and_sklearn_model_selection() -> None:
    x, y = _planted(strength=3.0)
    names = np.array(["C", "D", "E", "F"])[y]
    scores = cross_val_score(LinearProbeClassifier(), x, names, cv=3)
    assert scores.mean() > 0.75
    fitted = clone(LinearProbeClassifier(lambdas=(1e-2,))).fit(x, names)
    assert set(fitted.predict(x[:20])) <= set(names) and fitted.classes_.tolist() == list("CDEF")
    assert fitted.coef_.shape == (4, x.shape[1])


def test_one_class_and_too_rare_classes_are_clear_errors() -> None:
    x, _ = _planted(n=40)
    with pytest.raises(ProbeError, match="single class"):
        LinearProbeClassifier().fit(x, np.zeros(40))
    y = np.array([0] * 39 + [1])
    with pytest.raises(ProbeError, match="fewer examples"):
        LinearProbeClassifier().fit(x, y)


def test_ridge_probe_reads_a_planted_value_and_not_noise() -> None:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((500, 32)).astype("f4")
    target = 3 * x[:, 5] - x[:, 7] + 0.1 * rng.standard_normal(500)
    probe = LinearProbeRegressor().fit(x[:350], target[:350])
    assert probe.score(x[350:], target[350:]) > 0.95
    noise = rng.standard_normal(500)
    assert LinearProbeRegressor().fit(x[:350], noise[:350]).score(x[350:], noise[350:]) < 0.1
    with pytest.raises(ProbeError, match="constant"):
        LinearProbeRegressor().fit(x, np.ones(500))


def test_wrong_feature_count_at_predict_is_refused() -> None:
    x, y = _planted()
    probe = LinearProbeClassifier(lambdas=(1e-2,)).fit(x, y)
    with pytest.raises(ValueError, match="features"):
        probe.predict(x[:, :10])

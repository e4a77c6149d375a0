"""Linear probes with the scikit-learn estimator API.

Both probes standardize inside and choose their regularization by inner validation:
- ``LinearProbeClassifier``: multinomial logistic regression, penalty chosen on a held-out
  (stratified) part of the training data, then refitted on all of it.
- ``LinearProbeRegressor``: ridge regression, penalty chosen by exact leave-one-out error.
The same batched solvers fit a whole layer sweep at once (``soundlens.probing.sweep``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
from sklearn.model_selection import GroupShuffleSplit, StratifiedShuffleSplit
from sklearn.utils.validation import check_is_fitted, check_X_y, validate_data

from soundlens.errors import SoundlensError
from soundlens.probing.solvers import (
    _solve_logistic,
    _threads_for,
    _worth_a_basis,
    covariance_basis,
    curvature_at,
    fit_ridge,
    logistic_logits,
    standardize,
    standardized,
)

DEFAULT_LAMBDAS = (1e-4, 1e-3, 1e-2, 1e-1)
DEFAULT_ALPHAS = (1e-2, 1e-1, 1.0, 1e1, 1e2, 1e3, 1e4)


class ProbeError(SoundlensError, ValueError):
    """Labels or features a probe cannot be trained on, explained."""


def check_labels(y: np.ndarray, n_folds: int = 2, what: str = "label") -> np.ndarray:
    """Classes of ``y``; refuses one class, or classes with fewer examples than folds."""
    classes, counts = np.unique(y, return_counts=True)
    if len(classes) < 2:
        raise ProbeError(f"the {what} column has a single class ({classes[0]!r}): nothing to probe")
    rare = [f"{c!r} ({n})" for c, n in zip(classes, counts) if n < n_folds]
    if rare:
        raise ProbeError(
            f"the {what} column has classes with fewer examples than the {n_folds} splits "
            f"needed: {', '.join(rare[:10])}; add data or drop these classes"
        )
    return classes


def inner_split(
    y: np.ndarray, groups: np.ndarray | None, val_fraction: float, seed: int,
    stratify: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """Indices of an inner train / validation split (group-aware when groups are given)."""
    idx = np.arange(len(y))
    if groups is not None:
        splitter = GroupShuffleSplit(n_splits=1, test_size=val_fraction, random_state=seed)
        return next(splitter.split(idx, y, groups))
    if stratify:
        try:
            splitter = StratifiedShuffleSplit(n_splits=1, test_size=val_fraction,
                                              random_state=seed)
            return next(splitter.split(idx, y))
        except ValueError:
            pass  # a class too small to stratify: fall back to a plain shuffle
    perm = np.random.default_rng(seed).permutation(len(y))
    n_val = max(1, int(round(val_fraction * len(y))))
    return np.sort(perm[n_val:]), np.sort(perm[:n_val])


def fit_logistic_selected(
    x: torch.Tensor,
    y: np.ndarray,
    n_classes: int,
    lambdas: Sequence[float],
    *,
    groups: np.ndarray | None = None,
    val_fraction: float = 0.25,
    seed: int = 0,
    max_iter: int = 100,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Fit (P, N, D) raw features: standardize, pick λ per problem on a validation split, refit.

    Returns weights (P, D, C) and biases (P, C) in the standardized space, the chosen λ (P,),
    and the standardization mean and scale (P, 1, D).
    """
    lam = torch.tensor(list(lambdas), dtype=x.dtype)
    tr, va = inner_split(y, groups, val_fraction, seed)
    y_t = torch.as_tensor(y, dtype=torch.long)
    p, n, d = x.shape
    k = len(lam)
    fit = {"max_iter": max_iter, "tol": 1e-4, "rtol": 1e-5}  # as fit_logistic's defaults
    basis: tuple[torch.Tensor, torch.Tensor] | None = None
    init: tuple[torch.Tensor, torch.Tensor] | None = None
    hess: torch.Tensor | None = None
    with _threads_for(p * k * n * d * n_classes):
        if k > 1:
            xs, mu, sd = standardized(x[:, tr], inplace=True)  # x[:, tr] is a copy
            if _worth_a_basis(len(tr), d, k, n_classes):
                basis = covariance_basis(xs)
            w, b, info = _solve_logistic(xs, y_t[tr], n_classes, lam.expand(p, k), basis=basis,
                                         rotate=basis is not None, **fit)
            del xs
            xv = (x[:, va] - mu) / sd
            logits = torch.einsum("pnd,pkdc->pknc", xv, w) + b[:, :, None, :]
            acc = (logits.argmax(-1) == y_t[va]).float().mean(-1)  # (P, K)
            # Ties go to the stronger penalty: the simpler probe.
            best = (acc + 1e-9 * torch.arange(k)).argmax(1)
            chosen = lam[best]
            # The refit starts from the chosen inner solution, mapped to the new
            # standardization, preconditioned by the curvature there; the eigenbasis of the
            # inner training set serves (the full one has nearly the same correlations).
            rows = torch.arange(p)
            hess = curvature_at(info, rows, best)
            del info
            xs, mu_f, sd_f = standardized(x)
            w_best, b_best = w[rows, best], b[rows, best]
            w0 = w_best * (sd_f / sd)[:, 0, :, None]  # w acts on (x - mu) / sd
            b0 = b_best + torch.einsum("pd,pdc->pc", ((mu_f - mu) / sd)[:, 0], w_best)
            init = (w0[:, None], b0[:, None])
        else:
            chosen = lam.expand(p)
            xs, mu_f, sd_f = standardized(x)
            if _worth_a_basis(n, d, 1, n_classes):
                basis = covariance_basis(xs)
        w, b, _ = _solve_logistic(
            xs, y_t, n_classes, chosen[:, None], basis=basis,
            rotate=init is None and basis is not None, init=init,
            hess=hess[:, None] if hess is not None else None, **fit)
    return w[:, 0], b[:, 0], chosen, mu_f, sd_f


def fit_ridge_selected(
    x: torch.Tensor, y: np.ndarray, alphas: Sequence[float]
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Ridge on (P, N, D) raw features, α chosen per problem by exact leave-one-out error.

    Returns weights (P, D), intercepts (P,), chosen α (P,), mean and scale (P, 1, D).
    """
    mu, sd = standardize(x)
    xs = (x - mu) / sd
    yt = torch.as_tensor(np.asarray(y, dtype=np.float64), dtype=x.dtype)[:, None]
    y_mean = yt.mean()
    a = torch.tensor(list(alphas), dtype=x.dtype)
    w, loo, _ = fit_ridge(xs, yt - y_mean, a)  # (P, K, D, 1), (P, K)
    best = loo.argmin(1)
    w_best = w[torch.arange(x.shape[0]), best, :, 0]
    return w_best, y_mean.expand(x.shape[0]), a[best], mu, sd


class LinearProbeClassifier(ClassifierMixin, BaseEstimator):
    """Multinomial logistic probe; standardizes inside; L2 penalty chosen on a validation split.

    ``lambdas``: candidate penalties on the mean log-loss (sklearn's C = 1 / (λ · n)).
    After fit: ``classes_``, ``coef_`` (C, D) and ``intercept_`` (C,) in the original feature
    space, ``lambda_`` (the chosen penalty).
    """

    def __init__(self, lambdas: Sequence[float] = DEFAULT_LAMBDAS, val_fraction: float = 0.25,
                 max_iter: int = 100, random_state: int = 0) -> None:
        self.lambdas = lambdas
        self.val_fraction = val_fraction
        self.max_iter = max_iter
        self.random_state = random_state

    def fit(self, X: np.ndarray, y: np.ndarray, groups: np.ndarray | None = None
            ) -> LinearProbeClassifier:
        X, y = check_X_y(X, y, dtype=np.float32)
        validate_data(self, X, reset=True)
        self.classes_ = check_labels(y, n_folds=2)
        codes = np.searchsorted(self.classes_, y)
        w, b, lam, mu, sd = fit_logistic_selected(
            torch.from_numpy(X)[None], codes, len(self.classes_), self.lambdas,
            groups=groups, val_fraction=self.val_fraction, seed=self.random_state,
            max_iter=self.max_iter,
        )
        coef = (w[0] / sd[0, 0][:, None]).T  # (C, D) in raw feature units
        self.coef_ = coef.numpy()
        self.intercept_ = (b[0] - (mu[0, 0] / sd[0, 0]) @ w[0]).numpy()
        self.lambda_ = float(lam[0])
        return self

    def decision_function(self, X: np.ndarray) -> np.ndarray:
        check_is_fitted(self)
        X = validate_data(self, X, reset=False, dtype=np.float32)
        return X @ self.coef_.T + self.intercept_

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        z = self.decision_function(X)
        z = z - z.max(1, keepdims=True)
        p = np.exp(z)
        return p / p.sum(1, keepdims=True)

    def predict(self, X: np.ndarray) -> np.ndarray:
        return self.classes_[self.decision_function(X).argmax(1)]


class LinearProbeRegressor(RegressorMixin, BaseEstimator):
    """Ridge probe; standardizes inside; α chosen by exact leave-one-out error.

    After fit: ``coef_`` (D,) and ``intercept_`` in the original feature space, ``alpha_``.
    """

    def __init__(self, alphas: Sequence[float] = DEFAULT_ALPHAS) -> None:
        self.alphas = alphas

    def fit(self, X: np.ndarray, y: np.ndarray) -> LinearProbeRegressor:
        X, y = check_X_y(X, y, dtype=np.float32, y_numeric=True)
        validate_data(self, X, reset=True)
        if np.ptp(y) == 0:
            raise ProbeError("the regression target is constant: nothing to probe")
        w, b, a, mu, sd = fit_ridge_selected(torch.from_numpy(X)[None].double(), y, self.alphas)
        coef = w[0] / sd[0, 0]
        self.coef_ = coef.numpy()
        self.intercept_ = float(b[0] - (mu[0, 0] * coef).sum())
        self.alpha_ = float(a[0])
        return self

    def predict(self, X: np.ndarray) -> np.ndarray:
        check_is_fitted(self)
        X = validate_data(self, X, reset=False, dtype=np.float64)
        return X @ self.coef_ + self.intercept_


__all__ = [
    "DEFAULT_ALPHAS", "DEFAULT_LAMBDAS", "LinearProbeClassifier", "LinearProbeRegressor",
    "ProbeError", "check_labels", "fit_logistic_selected", "fit_ridge_selected", "inner_split",
    "logistic_logits",
]

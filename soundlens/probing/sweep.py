"""Layer sweep: one probe per site, all sites of a width fitted together, held-out evaluation.

Every site is scored on the same train/test split (group-aware when asked, so no root,
instrument or speaker leaks across it), with a bootstrap confidence interval, next to the
majority-class baseline and a control task (Hewitt & Liang: labels drawn at random per type)
whose accuracy gives the probe's selectivity. Non-neural features and a random-weight model
are scored as more "sites" on the same split by the caller.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch
from sklearn.model_selection import GroupShuffleSplit, StratifiedShuffleSplit

from soundlens.probing.probes import (
    DEFAULT_ALPHAS,
    DEFAULT_LAMBDAS,
    ProbeError,
    check_labels,
    fit_logistic_selected,
    fit_ridge_selected,
)

Task = Literal["classification", "regression"]


@dataclass
class Split:
    """Train and test row indices, and how they were made."""

    train: np.ndarray
    test: np.ndarray
    how: str


def make_split(
    y: np.ndarray, *, groups: np.ndarray | None = None, test_size: float = 0.3, seed: int = 0,
    task: Task = "classification",
) -> Split:
    """A held-out split: by group when ``groups`` is given, else stratified by class."""
    idx = np.arange(len(y))
    if groups is not None:
        if len(np.unique(groups)) < 2:
            raise ProbeError("the group column has a single value: no group-held-out split")
        gss = GroupShuffleSplit(n_splits=1, test_size=test_size, random_state=seed)
        tr, te = next(gss.split(idx, y, groups))
        return Split(tr, te, f"group-held-out ({test_size:.0%} of groups)")
    if task == "classification":
        check_labels(y, n_folds=2)
        sss = StratifiedShuffleSplit(n_splits=1, test_size=test_size, random_state=seed)
        tr, te = next(sss.split(idx, y))
        return Split(tr, te, f"stratified random ({test_size:.0%} test)")
    perm = np.random.default_rng(seed).permutation(len(y))
    n_te = int(round(test_size * len(y)))
    return Split(np.sort(perm[n_te:]), np.sort(perm[:n_te]), f"random ({test_size:.0%} test)")


def control_labels(y: np.ndarray, types: np.ndarray | None, seed: int = 0) -> np.ndarray:
    """Control task: each type gets a label drawn from y's class distribution.

    ``types`` identifies what a memorizing probe could key on (e.g. the clip's non-concept
    parameters); without it every example is its own type.
    """
    rng = np.random.default_rng(seed + 7919)
    if types is None:
        return rng.permutation(y)
    uniq, inv = np.unique(types, return_inverse=True)
    return rng.choice(y, size=len(uniq), replace=True)[inv]


def _bootstrap_rows(n: int, n_boot: int, seed: int) -> torch.Tensor:
    """(B, n) resampling weights: how often each test row is drawn in each resample."""
    idx = torch.from_numpy(np.random.default_rng(seed).integers(0, n, (n_boot, n)))
    weights = torch.zeros(n_boot, n)
    weights.scatter_add_(1, idx, torch.ones(n_boot, n))
    return weights


def _interval(samples: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    if samples.shape[-1] == 0:  # n_boot=0: no interval
        nan = np.full(samples.shape[:-1], np.nan)
        return nan, nan.copy()
    lo, hi = torch.quantile(samples, torch.tensor([0.025, 0.975]), dim=-1)
    return lo.numpy(), hi.numpy()


def classification_metrics(
    pred: torch.Tensor, truth: torch.Tensor, n_classes: int, n_boot: int = 1000, seed: int = 0
) -> dict[str, np.ndarray]:
    """Accuracy and macro-F1 of (P, N) predictions, with 95% bootstrap intervals."""
    p_oh = torch.nn.functional.one_hot(pred.long(), n_classes).float()  # (P, N, C)
    t_oh = torch.nn.functional.one_hot(truth.long(), n_classes).float()  # (N, C)
    correct = (pred == truth).float()
    wts = torch.cat([torch.ones(1, truth.shape[0]), _bootstrap_rows(truth.shape[0], n_boot, seed)])
    acc = (correct @ wts.T) / wts.sum(1)  # (P, 1+B)
    tp = torch.einsum("bn,pnc,nc->pbc", wts, p_oh, t_oh)
    n_pred = torch.einsum("bn,pnc->pbc", wts, p_oh)
    n_true = torch.einsum("bn,nc->bc", wts, t_oh)[None]
    denom = n_pred + n_true
    present = (n_true > 0) | (n_pred > 0)
    f1 = torch.where(denom > 0, 2 * tp / denom.clamp_min(1e-9), torch.zeros_like(tp))
    macro = (f1 * present).sum(-1) / present.sum(-1).clamp_min(1)
    acc_lo, acc_hi = _interval(acc[:, 1:])
    f1_lo, f1_hi = _interval(macro[:, 1:])
    return {"accuracy": acc[:, 0].numpy(), "accuracy_ci": np.stack([acc_lo, acc_hi], 1),
            "macro_f1": macro[:, 0].numpy(), "macro_f1_ci": np.stack([f1_lo, f1_hi], 1)}


def regression_metrics(
    pred: torch.Tensor, truth: torch.Tensor, n_boot: int = 1000, seed: int = 0
) -> dict[str, np.ndarray]:
    """R² and MAE of (P, N) predictions, with 95% bootstrap intervals."""
    wts = torch.cat([torch.ones(1, truth.shape[0]), _bootstrap_rows(truth.shape[0], n_boot, seed)])
    wts = wts.double()
    pred, truth = pred.double(), truth.double()
    tot = wts.sum(1)
    mean_t = (wts @ truth) / tot  # (1+B,)
    ss_tot = (wts * (truth[None] - mean_t[:, None]) ** 2).sum(1)
    ss_res = torch.einsum("bn,pn->pb", wts, (pred - truth) ** 2)
    r2 = 1 - ss_res / ss_tot.clamp_min(1e-12)
    mae = torch.einsum("bn,pn->pb", wts, (pred - truth).abs()) / tot
    r2_lo, r2_hi = _interval(r2[:, 1:].float())
    mae_lo, mae_hi = _interval(mae[:, 1:].float())
    return {"r2": r2[:, 0].numpy(), "r2_ci": np.stack([r2_lo, r2_hi], 1),
            "mae": mae[:, 0].numpy(), "mae_ci": np.stack([mae_lo, mae_hi], 1)}


@dataclass
class SweepResult:
    """Per-site scores on one split, plus the baselines and controls on the same split."""

    task: Task
    sites: list[str]
    metrics: dict[str, np.ndarray]
    regularization: np.ndarray
    split: Split
    classes: list[Any] | None = None
    baselines: dict[str, dict[str, float]] = field(default_factory=dict)
    control: dict[str, np.ndarray] | None = None
    control_how: str = ""
    probes: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)

    @property
    def primary(self) -> str:
        """The headline metric: accuracy or R²."""
        return "accuracy" if self.task == "classification" else "r2"

    def best_site(self, among: Sequence[str] | None = None) -> str:
        vals = self.metrics[self.primary]
        names = [s for s in self.sites if among is None or s in among]
        return max(names, key=lambda s: vals[self.sites.index(s)])

    def table(self) -> list[dict[str, Any]]:
        """One JSON-ready row per site."""
        rows = []
        for i, s in enumerate(self.sites):
            row: dict[str, Any] = {"site": s, "regularization": float(self.regularization[i])}
            for k, v in self.metrics.items():
                row[k] = v[i].tolist() if v.ndim > 1 else float(v[i])
            if self.control is not None:
                row["control_accuracy"] = float(self.control["accuracy"][i])
                row["selectivity"] = float(self.metrics["accuracy"][i] - self.control["accuracy"][i])
            rows.append(row)
        return rows


def _groups_by_width(features: Mapping[str, np.ndarray]) -> dict[int, list[str]]:
    by: dict[int, list[str]] = {}
    for s, a in features.items():
        by.setdefault(a.shape[1], []).append(s)
    return by


def _fit_classification(
    features: Mapping[str, np.ndarray], y: np.ndarray, split: Split, n_classes: int,
    lambdas: Sequence[float], groups: np.ndarray | None, seed: int, max_iter: int,
    n_boot: int, keep_probes: bool,
) -> tuple[dict[str, np.ndarray], np.ndarray, dict[str, dict[str, np.ndarray]]]:
    sites = list(features)
    preds = torch.zeros(len(sites), len(split.test), dtype=torch.long)
    reg = np.zeros(len(sites))
    probes: dict[str, dict[str, np.ndarray]] = {}
    g_train = groups[split.train] if groups is not None else None
    for _, names in _groups_by_width(features).items():
        x = torch.from_numpy(np.stack([features[s] for s in names]).astype(np.float32, copy=False))
        w, b, lam, mu, sd = fit_logistic_selected(
            x[:, split.train], y[split.train], n_classes, lambdas, groups=g_train, seed=seed,
            max_iter=max_iter,
        )
        logits = torch.einsum("pnd,pdc->pnc", (x[:, split.test] - mu) / sd, w) + b[:, None]
        for j, s in enumerate(names):
            i = sites.index(s)
            preds[i] = logits[j].argmax(-1)
            reg[i] = float(lam[j])
            if keep_probes:
                coef = (w[j] / sd[j, 0][:, None]).T
                probes[s] = {"coef": coef.numpy(),
                             "intercept": (b[j] - (mu[j, 0] / sd[j, 0]) @ w[j]).numpy()}
    truth = torch.as_tensor(y[split.test])
    return classification_metrics(preds, truth, n_classes, n_boot, seed), reg, probes


def _fit_regression(
    features: Mapping[str, np.ndarray], y: np.ndarray, split: Split, alphas: Sequence[float],
    n_boot: int, seed: int, keep_probes: bool,
) -> tuple[dict[str, np.ndarray], np.ndarray, dict[str, dict[str, np.ndarray]]]:
    sites = list(features)
    preds = torch.zeros(len(sites), len(split.test), dtype=torch.float64)
    reg = np.zeros(len(sites))
    probes: dict[str, dict[str, np.ndarray]] = {}
    for _, names in _groups_by_width(features).items():
        x = torch.from_numpy(np.stack([features[s] for s in names]).astype(np.float64))
        w, b, a, mu, sd = fit_ridge_selected(x[:, split.train], y[split.train], alphas)
        pred = torch.einsum("pnd,pd->pn", (x[:, split.test] - mu) / sd, w) + b[:, None]
        for j, s in enumerate(names):
            i = sites.index(s)
            preds[i] = pred[j]
            reg[i] = float(a[j])
            if keep_probes:
                coef = w[j] / sd[j, 0]
                probes[s] = {"coef": coef.numpy()[None],
                             "intercept": np.array([float(b[j] - (mu[j, 0] * coef).sum())])}
    truth = torch.as_tensor(np.asarray(y[split.test], dtype=np.float64))
    return regression_metrics(preds, truth, n_boot, seed), reg, probes


def sweep(
    features: Mapping[str, np.ndarray],
    y: Sequence[Any] | np.ndarray,
    *,
    task: Task = "classification",
    split: Split | None = None,
    groups: np.ndarray | None = None,
    control_types: np.ndarray | None = None,
    control: bool = True,
    lambdas: Sequence[float] = DEFAULT_LAMBDAS,
    alphas: Sequence[float] = DEFAULT_ALPHAS,
    test_size: float = 0.3,
    seed: int = 0,
    max_iter: int = 100,
    n_boot: int = 1000,
    keep_probes: bool = True,
) -> SweepResult:
    """Probe every site in ``features`` (site → (N, D) array) for the labels ``y``.

    Sites of equal width are fitted together in one batched solve. ``groups`` keeps a group
    (root, instrument, speaker…) on one side of the split and of the inner validation split.
    """
    y = np.asarray(y)
    n = len(y)
    for s, a in features.items():
        if a.ndim != 2 or a.shape[0] != n:
            raise ProbeError(f"site {s}: features of shape {a.shape} for {n} labels")
        if not np.all(np.isfinite(a)):
            raise ProbeError(f"site {s}: features contain NaN or infinite values")
    split = split or make_split(y, groups=groups, test_size=test_size, seed=seed, task=task)
    sites = list(features)
    if task == "classification":
        classes = check_labels(y[split.train], n_folds=2, what="training label")
        missing = sorted(set(np.unique(y[split.test]).tolist()) - set(classes.tolist()))
        if missing:
            raise ProbeError(f"test classes never seen in training: {missing[:10]}")
        codes = np.searchsorted(classes, y)
        metrics, reg, probes = _fit_classification(
            features, codes, split, len(classes), lambdas, groups, seed, max_iter, n_boot,
            keep_probes,
        )
        majority = np.bincount(codes[split.train], minlength=len(classes)).argmax()
        maj = classification_metrics(
            torch.full((1, len(split.test)), int(majority)), torch.as_tensor(codes[split.test]),
            len(classes), n_boot, seed,
        )
        result = SweepResult(task, sites, metrics, reg, split, classes.tolist(), probes=probes)
        result.baselines["majority"] = {
            "accuracy": float(maj["accuracy"][0]), "macro_f1": float(maj["macro_f1"][0]),
            "chance": 1.0 / len(classes),
        }
        if control:
            ctrl = np.searchsorted(classes, control_labels(y, control_types, seed))
            c_metrics, _, _ = _fit_classification(
                features, ctrl, split, len(classes), lambdas, None, seed, max_iter, n_boot, False,
            )
            result.control = c_metrics
            result.control_how = (
                "labels drawn at random per type" if control_types is not None
                else "labels drawn at random per example"
            )
        return result
    y_num = y.astype(np.float64)
    metrics, reg, probes = _fit_regression(features, y_num, split, alphas, n_boot, seed,
                                           keep_probes)
    result = SweepResult(task, sites, metrics, reg, split, probes=probes)
    mean_pred = torch.full((1, len(split.test)), float(y_num[split.train].mean()))
    base = regression_metrics(mean_pred, torch.as_tensor(y_num[split.test]), n_boot, seed)
    result.baselines["mean"] = {"r2": float(base["r2"][0]), "mae": float(base["mae"][0])}
    return result

"""Batched linear solvers: many probes (layers × regularization strengths) fitted at once.

A layer sweep fits the same kind of probe on every layer. Stacking the layers into one
(problems, rows, dim) tensor turns a Python loop of small fits into a few large matrix
products, which is where the speed of the sweep comes from.

- ``fit_logistic``: multinomial logistic regression with an L2 penalty, all problems in one
  L-BFGS run over the sum of their (independent) losses.
- ``fit_ridge``: closed-form ridge for every problem and every penalty from one
  eigendecomposition per problem, with exact leave-one-out errors for choosing the penalty.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch

# Below this many multiply-adds per loss evaluation, L-BFGS is bound by small vector ops, which
# OpenMP makes slower with more threads (13× slower with 2 threads on a busy 2-core machine).
_SMALL_WORK = 5e7


@contextmanager
def _threads_for(work: float) -> Iterator[None]:
    before = torch.get_num_threads()
    if work < _SMALL_WORK and before > 1:
        torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def standardize(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-problem feature mean and scale of (P, N, D) data; constant features get scale 1."""
    mean = x.mean(1, keepdim=True)
    std = x.std(1, keepdim=True, unbiased=False)
    return mean, torch.where(std > 1e-8, std, torch.ones_like(std))


def _eig(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Eigenpairs of X^T X per problem, in float64 for stability."""
    gram = x.transpose(1, 2).double() @ x.double()
    s, v = torch.linalg.eigh(gram)
    return s.clamp_min(0), v


def fit_ridge(
    x: torch.Tensor, y: torch.Tensor, alphas: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Ridge on centred data for every (problem, alpha).

    x: (P, N, D) centred features; y: (N, T) or (P, N, T) centred targets; alphas: (K,) penalties
    on the sum of squared errors. Returns weights (P, K, D, T), leave-one-out mean squared error
    (P, K) and the eigen-decomposition rank used.
    """
    p, n, d = x.shape
    yy = y.expand(p, *y.shape[-2:]) if y.ndim == 2 else y
    s, v = _eig(x)
    xv = x.double() @ v  # (P, N, D) projections on the eigenvectors
    vty = xv.transpose(1, 2) @ yy.double()  # (P, D, T) = V^T X^T y
    inv = 1.0 / (s[:, None, :] + alphas.double()[None, :, None])  # (P, K, D)
    w = torch.einsum("pde,pke,pet->pkdt", v, inv, vty)
    # Leave-one-out residuals: e_i / (1 - h_ii), h_ii = sum_j (x_i . v_j)^2 / (s_j + alpha).
    h = torch.einsum("pnd,pkd->pkn", xv**2, inv)
    pred = torch.einsum("pnd,pkdt->pknt", x.double(), w)
    resid = (yy.double()[:, None] - pred) / (1 - h).clamp_min(1e-6)[..., None]
    loo = (resid**2).mean((2, 3))
    return w.to(x.dtype), loo.to(x.dtype), torch.tensor(d)


def fit_logistic(
    x: torch.Tensor,
    y: torch.Tensor,
    n_classes: int,
    lambdas: torch.Tensor,
    *,
    max_iter: int = 100,
    tol: float = 1e-4,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Multinomial logistic regression for every problem and penalty at once.

    x: (P, N, D) standardized features; y: (N,) class indices; lambdas: (K,) or (P, K) L2
    penalties on the mean log-loss (sklearn's ``C`` is ``1 / (lambda · N)``). Returns weights
    (P, K, D, C) and biases (P, K, C). The problems are independent, so one L-BFGS run over the
    sum of their losses fits them all: its gradient is the stack of their gradients.
    """
    p, n, d = x.shape
    lam = lambdas.to(x.dtype).expand(p, lambdas.shape[-1]) if lambdas.ndim == 1 else lambdas
    k = lam.shape[1]
    prior = torch.bincount(y.long(), minlength=n_classes).to(x.dtype) / n
    w = torch.zeros(p, k, d, n_classes, dtype=x.dtype, requires_grad=True)
    b = torch.log(prior.clamp_min(1e-6)).expand(p, k, n_classes).clone().requires_grad_(True)
    lam4 = lam.to(x.dtype)[:, :, None, None]
    target = y.long().expand(p, k, n).reshape(-1)
    # tolerance_grad is on the largest gradient entry of the summed loss; sklearn's lbfgs uses
    # the same kind of criterion per problem.
    opt = torch.optim.LBFGS([w, b], lr=1, max_iter=max_iter, tolerance_grad=tol,
                            tolerance_change=1e-9, history_size=10,
                            line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        logits = torch.einsum("pnd,pkdc->pknc", x, w) + b[:, :, None, :]
        nll = torch.nn.functional.cross_entropy(
            logits.reshape(-1, n_classes), target, reduction="sum"
        ) / n
        loss = nll + 0.5 * (lam4 * w.pow(2)).sum()
        loss.backward()
        return loss

    with _threads_for(p * k * n * d * n_classes):
        opt.step(closure)
    return w.detach(), b.detach()


def logistic_logits(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(P, N, D) features × (P, D, C) weights + (P, C) biases → (P, N, C) logits."""
    return torch.einsum("pnd,pdc->pnc", x, w) + b[:, None, :]

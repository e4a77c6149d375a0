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


def covariance_basis(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Eigenvalues (P, D) and eigenvectors (P, D, D) of X^T X / N for (P, N, D) features.

    Used only to precondition ``fit_logistic`` (any basis gives the same solution), so float32
    precision is enough.
    """
    gram = torch.bmm(x.transpose(1, 2), x) / x.shape[1]
    s, v = torch.linalg.eigh(gram)
    return s.clamp_min(0), v


def _worth_a_basis(n: int, d: int, k: int, c: int) -> bool:
    """Whether one D×D eigendecomposition costs less than the loss evaluations it saves.

    An eigendecomposition costs about d³ multiply-adds' time, one loss evaluation 2·n·d·k·c;
    preconditioning saves tens of evaluations on correlated features.
    """
    return d * d <= 60 * n * k * c


class _LogisticLoss:
    """Mean multinomial log-loss + λ/2·|W|² of many problems, in preconditioned coordinates.

    Problems are flat: problem q uses the features of layer ``layer[q]`` (sorted) and penalty
    ``lam[q]``. Its parameters θ (D+1, C) map to weights W = V diag(g) θ[:D], with V the
    eigenvectors of the layer's X^T X / N (eigenvalues s) and g = (s / C + λ)^-1/2, and to biases
    b = √C · θ[D]. The loss Hessian at the start (uniform probabilities) is ≈ X^T X / C + λ, so in
    θ its condition number is ≈ 1 whatever the correlations of the features: L-BFGS needs far
    fewer iterations than on W, and the optimum is the same (a change of variables). Gradients
    are computed in closed form (softmax − one-hot), not by autograd.
    """

    def __init__(self, x: torch.Tensor, y: torch.Tensor, n_classes: int, layer: torch.Tensor,
                 lam: torch.Tensor, basis: tuple[torch.Tensor, torch.Tensor] | None) -> None:
        self.x = x
        self.n, self.d, self.c = x.shape[1], x.shape[2], n_classes
        self.y = y.long()
        self.onehot = torch.nn.functional.one_hot(self.y, n_classes).to(x.dtype)  # (N, C)
        self.layer, self.lam = layer, lam.to(x.dtype)
        if basis is None:
            self.v = None
            self.gw = (1.0 / n_classes + self.lam).rsqrt()[:, None, None].expand(-1, self.d, 1)
        else:
            s, v = basis
            self.v = v.to(x.dtype)
            self.gw = (s.to(x.dtype)[layer] / n_classes + self.lam[:, None]).rsqrt()[..., None]
        self.gb = float(n_classes) ** 0.5

    def _groups(self, idx: torch.Tensor) -> list[tuple[int, int, int]]:
        """(layer, start, stop) runs of the problems ``idx`` (sorted), one per layer."""
        layers, counts = torch.unique_consecutive(self.layer[idx], return_counts=True)
        out, start = [], 0
        for p, m in zip(layers.tolist(), counts.tolist()):
            out.append((p, start, start + m))
            start += m
        return out

    def _rotate(self, w: torch.Tensor, idx: torch.Tensor, transpose: bool) -> torch.Tensor:
        """V @ w (or V^T @ w) for (Q, D, C) blocks, one matrix product per layer."""
        if self.v is None:
            return w
        out = torch.empty_like(w)
        q, d, c = w.shape
        for p, a, z in self._groups(idx):
            v = self.v[p].T if transpose else self.v[p]
            block = w[a:z].transpose(0, 1).reshape(d, (z - a) * c)
            out[a:z] = (v @ block).view(d, z - a, c).transpose(0, 1)
        return out

    def weights(self, th: torch.Tensor, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """θ (Q, D+1, C) of problems ``idx`` → weights (Q, D, C) and biases (Q, C)."""
        return self._rotate(th[:, : self.d] * self.gw[idx], idx, False), th[:, self.d] * self.gb

    def theta(self, w: torch.Tensor, b: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        """Inverse of ``weights``."""
        u = self._rotate(w, idx, True) / self.gw[idx]
        return torch.cat([u, (b / self.gb)[:, None]], 1)

    def __call__(self, th: torch.Tensor, idx: torch.Tensor
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Loss (Q,), gradient in θ (Q, D+1, C) and largest |gradient| in (W, b) (Q,)."""
        n, d, c = self.n, self.d, self.c
        f = torch.empty(len(idx), dtype=th.dtype)
        gmax = torch.empty_like(f)
        grad = torch.empty_like(th)
        for p, a, z in self._groups(idx):
            m = z - a
            lam = self.lam[idx[a:z]]
            u = th[a:z, :d] * self.gw[idx[a:z]]  # (m, D, C)
            u = u.transpose(0, 1).reshape(d, m * c)
            w = self.v[p] @ u if self.v is not None else u  # (D, m·C)
            logits = (self.x[p] @ w).view(n, m, c) + (th[a:z, d] * self.gb)
            top = logits.amax(-1, keepdim=True)
            logits -= top
            prob = logits.exp()
            total = prob.sum(-1, keepdim=True)
            picked = logits.gather(2, self.y.view(n, 1, 1).expand(n, m, 1))
            nll = (total.log() - picked).mean(0)[:, 0]
            w3 = w.view(d, m, c)
            f[a:z] = nll + 0.5 * lam * w3.pow(2).sum((0, 2))
            prob /= total
            prob -= self.onehot[:, None, :]
            prob /= n  # dloss/dlogits, (N, m, C)
            gw = (self.x[p].T @ prob.view(n, m * c)).view(d, m, c)
            gw += lam[:, None] * w3
            gb = prob.sum(0)  # (m, C)
            gmax[a:z] = torch.maximum(gw.abs().amax((0, 2)), gb.abs().amax(1))
            gu = self.v[p].T @ gw.view(d, m * c) if self.v is not None else gw
            grad[a:z, :d] = gu.view(d, m, c).transpose(0, 1) * self.gw[idx[a:z]]
            grad[a:z, d] = gb * self.gb
        return f, grad, gmax


def _dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a * b).sum((1, 2))


def _lbfgs(
    fun: _LogisticLoss, th: torch.Tensor, *, max_iter: int, tol: float, history: int = 10,
    max_ls: int = 20,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]:
    """L-BFGS run separately for every problem, in lockstep: (Q, D+1, C) → optimum.

    Every problem has its own history, step length and stopping rule (largest |gradient| ≤
    ``tol``, as scikit-learn's lbfgs); finished problems leave the batch, so their cost stops.
    The line search backtracks (Armijo, safeguarded quadratic steps) on the problems that need
    it only; the losses are strictly convex (λ > 0), so every step keeps s·y > 0.
    Returns θ, the iteration at which each problem stopped, its last largest |gradient|, and
    the number of loss evaluations.
    """
    q_all = th.shape[0]
    idx = torch.arange(q_all)
    out = th.clone()
    n_iter = torch.full((q_all,), max_iter, dtype=torch.long)
    gmax_out = torch.zeros(q_all, dtype=th.dtype)
    f, g, gmax = fun(th, idx)
    n_eval = 1
    s_hist: list[torch.Tensor] = []
    y_hist: list[torch.Tensor] = []
    rho_hist: list[torch.Tensor] = []
    gamma = torch.ones_like(f)
    it = 0
    stuck = torch.zeros_like(f, dtype=torch.bool)
    while True:
        stop = (gmax <= tol) | stuck
        if it == max_iter:
            stop = torch.ones_like(stop)
        if bool(stop.any()):
            done = idx[stop]
            out[done], gmax_out[done] = th[stop], gmax[stop]
            n_iter[done] = it
            keep = ~stop
            if not bool(keep.any()):
                break
            idx, th, f, g, gmax = idx[keep], th[keep], f[keep], g[keep], gmax[keep]
            gamma = gamma[keep]
            s_hist = [s[keep] for s in s_hist]
            y_hist = [y[keep] for y in y_hist]
            rho_hist = [r[keep] for r in rho_hist]
        it += 1
        # Two-loop recursion, every problem with its own scalars.
        d = -g
        alphas = []
        for s, y, rho in zip(reversed(s_hist), reversed(y_hist), reversed(rho_hist)):
            a = rho * _dot(s, d)
            d = d - a[:, None, None] * y
            alphas.append(a)
        d = d * gamma[:, None, None]
        for s, y, rho, a in zip(s_hist, y_hist, rho_hist, reversed(alphas)):
            d = d + (a - rho * _dot(y, d))[:, None, None] * s
        gtd = _dot(g, d)
        uphill = gtd >= 0
        if bool(uphill.any()):  # lost curvature information: steepest descent this step
            d[uphill] = -g[uphill]
            gtd = _dot(g, d)
        # Backtracking line search on the problems whose step is not yet accepted.
        step = torch.ones_like(f)
        th_new, f_new, g_new, gmax_new = th.clone(), f.clone(), g.clone(), gmax.clone()
        todo = torch.arange(len(idx))
        for _ in range(max_ls):
            trial = th[todo] + step[todo, None, None] * d[todo]
            ft, gt, gmt = fun(trial, idx[todo])
            n_eval += 1
            ok = ft <= f[todo] + 1e-4 * step[todo] * gtd[todo]
            acc = todo[ok]
            th_new[acc], f_new[acc], g_new[acc], gmax_new[acc] = trial[ok], ft[ok], gt[ok], gmt[ok]
            todo, ft = todo[~ok], ft[~ok]
            if len(todo) == 0:
                break
            st, gd = step[todo], gtd[todo]
            curv = 2 * (ft - f[todo] - gd * st)
            quad = torch.where(curv > 0, -gd * st * st / curv.clamp_min(1e-30), 0.5 * st)
            step[todo] = torch.minimum(torch.maximum(quad, 0.1 * st), 0.5 * st)
        s = th_new - th
        y = g_new - g
        sy = _dot(s, y)
        good = sy > 1e-10 * _dot(y, y).clamp_min(1e-30) ** 0.5 * _dot(s, s).clamp_min(1e-30) ** 0.5
        rho = torch.where(good, 1.0 / sy.clamp_min(1e-30), torch.zeros_like(sy))
        gamma = torch.where(good, sy / _dot(y, y).clamp_min(1e-30), gamma)
        s_hist.append(s)
        y_hist.append(y)
        rho_hist.append(rho)
        if len(s_hist) > history:
            del s_hist[0], y_hist[0], rho_hist[0]
        th, f, g, gmax = th_new, f_new, g_new, gmax_new
        # No decrease found: as converged as float precision allows; it stops.
        stuck = torch.zeros_like(uphill)
        stuck[todo] = True
    return out, n_iter, gmax_out, n_eval


def fit_logistic(
    x: torch.Tensor,
    y: torch.Tensor,
    n_classes: int,
    lambdas: torch.Tensor,
    *,
    max_iter: int = 100,
    tol: float = 1e-4,
    basis: tuple[torch.Tensor, torch.Tensor] | None | bool = True,
    init: tuple[torch.Tensor, torch.Tensor] | None = None,
    stats: dict | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Multinomial logistic regression for every problem and penalty at once.

    x: (P, N, D) standardized features; y: (N,) class indices; lambdas: (K,) or (P, K) L2
    penalties on the mean log-loss (sklearn's ``C`` is ``1 / (lambda · N)``). Returns weights
    (P, K, D, C) and biases (P, K, C).

    Every (problem, penalty) pair is its own L-BFGS run (all run in lockstep, batched per
    problem) and stops when its largest |gradient| is ≤ ``tol`` or after ``max_iter``
    iterations, as scikit-learn's lbfgs solver does. ``basis``: the eigenpairs of X^T X / N
    (``covariance_basis``) used to precondition, True to compute them when that pays off, or
    None for none. ``init``: starting weights (P, K, D, C) and biases (P, K, C). ``stats``, when
    given, receives the iterations per problem, the largest final |gradient| and the number of
    loss evaluations.
    """
    p, n, d = x.shape
    lam = lambdas.to(x.dtype).expand(p, lambdas.shape[-1]) if lambdas.ndim == 1 else lambdas
    k = lam.shape[1]
    work = p * k * n * d * n_classes
    with _threads_for(work):
        if basis is True:
            basis = covariance_basis(x) if _worth_a_basis(n, d, k, n_classes) else None
        x = x.contiguous()
        layer = torch.arange(p).repeat_interleave(k)
        fun = _LogisticLoss(x, y, n_classes, layer, lam.reshape(-1), basis or None)
        idx = torch.arange(p * k)
        if init is None:
            prior = torch.bincount(y.long(), minlength=n_classes).to(x.dtype) / n
            th = torch.zeros(p * k, d + 1, n_classes, dtype=x.dtype)
            th[:, d] = torch.log(prior.clamp_min(1e-6)) / fun.gb
        else:
            w0, b0 = init
            th = fun.theta(w0.reshape(p * k, d, n_classes).to(x.dtype),
                           b0.reshape(p * k, n_classes).to(x.dtype), idx)
        th, n_iter, gmax, n_eval = _lbfgs(fun, th, max_iter=max_iter, tol=tol)
        w, b = fun.weights(th, idx)
    if stats is not None:
        stats.update(n_iter=n_iter.view(p, k), max_abs_grad=gmax.view(p, k), n_eval=n_eval,
                     preconditioned=basis is not None and basis is not False)
    return w.view(p, k, d, n_classes), b.view(p, k, n_classes)


def logistic_logits(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(P, N, D) features × (P, D, C) weights + (P, C) biases → (P, N, C) logits."""
    return torch.einsum("pnd,pdc->pnc", x, w) + b[:, None, :]

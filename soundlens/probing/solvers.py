"""Batched linear solvers: many probes (layers × regularization strengths) fitted at once.

A layer sweep fits the same kind of probe on every layer. Stacking the layers into one
(problems, rows, dim) tensor turns a Python loop of small fits into a few large matrix
products, which is where the speed of the sweep comes from.

- ``fit_logistic``: multinomial logistic regression with an L2 penalty: one L-BFGS run per
  (problem, penalty), all in lockstep and batched per layer, each with its own step, history
  and stopping rule, preconditioned in the eigenbasis of the problem's X^T X and rescaled to
  the curvature as the fit sharpens (see ``_LogisticLoss`` and ``_lbfgs``).
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


def standardized(x: torch.Tensor, *, inplace: bool = False
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``standardize`` and apply it: (standardized x, mean, scale), in place when asked.

    Two passes (mean, then the norm of the centred data) instead of ``Tensor.std``'s strided
    reduction, which is several times slower over the rows of a (P, N, D) tensor.
    """
    mean = x.mean(1, keepdim=True)
    xs = x.sub_(mean) if inplace else x - mean
    std = torch.linalg.vector_norm(xs, dim=1, keepdim=True) / x.shape[1] ** 0.5
    std = torch.where(std > 1e-8, std, torch.ones_like(std))
    return xs.div_(std), mean, std


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

    Used only to precondition ``fit_logistic`` (any orthonormal basis gives the same solution),
    so float32 precision is enough.
    """
    gram = torch.bmm(x.transpose(1, 2), x) / x.shape[1]
    s, v = torch.linalg.eigh(gram)
    return s.clamp_min(0), v


def _worth_a_basis(n: int, d: int, k: int, c: int) -> bool:
    """Whether one D×D eigendecomposition costs less than the loss evaluations it saves.

    An eigendecomposition (and the rotation of the data) costs about as much as d/(k·c) loss
    evaluations of 2·n·d·k·c multiply-adds; on correlated features preconditioning saves tens.
    """
    return d * d <= 60 * n * k * c


def _groups(layer: torch.Tensor) -> list[tuple[int, int, int]]:
    """(layer, start, stop) runs of a sorted vector of layer indices."""
    layers, counts = torch.unique_consecutive(layer, return_counts=True)
    out, start = [], 0
    for p, m in zip(layers.tolist(), counts.tolist()):
        out.append((p, start, start + m))
        start += m
    return out


class _LogisticLoss:
    """Mean multinomial log-loss + λ/2·|W|² of many problems, in preconditioned coordinates.

    Problems are flat: problem q uses the features of layer ``layer[q]`` (sorted) and penalty
    ``lam[q]``. Its variables θ (C, D+1) give, with ``scale`` (Q, C, D+1), the weights in the
    eigenbasis of the layer's X^T X (or in the feature basis when there is none)
    U = θ[:, :D] ⊙ scale[:, :D] (so W^T = U V^T) and the biases b = θ[:, D] ⊙ scale[:, D].
    The default scale, (s/C + λ)^-1/2 (s the eigenvalues), makes the Hessian ≈ identity at the
    start (uniform probabilities); ``curvature`` gives the Hessian's diagonal at any point, to
    rescale as the fit sharpens. Both are changes of variables: the optimum is the same.

    ``x`` is what the products use: the standardized features, or, with ``rotated``, their
    coordinates X V in the eigenbasis (then no per-evaluation product with V is needed).
    Gradients are computed in closed form (softmax − one-hot), not by autograd. Everything is
    class-major, (classes, rows): the products are U Z^T and G^T Z, the layouts in which the
    BLAS stays fast with as few as 10 rows (Z U^T and Z^T G are 3–8× slower there), and the
    softmax runs along contiguous rows.
    """

    def __init__(self, x: torch.Tensor, y: torch.Tensor, n_classes: int, layer: torch.Tensor,
                 lam: torch.Tensor, v: torch.Tensor | None, rotated: bool,
                 scale: torch.Tensor) -> None:
        self.x, self.v, self.rotated = x, v, rotated
        self.n, self.d, self.c = x.shape[1], x.shape[2], n_classes
        self.y = y.long()
        self.onehot = torch.nn.functional.one_hot(self.y, n_classes).T.to(x.dtype)  # (C, N)
        self.layer, self.lam, self.scale = layer, lam.to(x.dtype), scale

    @property
    def has_curvature(self) -> bool:
        return self.v is None or self.rotated

    def _rotate(self, u: torch.Tensor, idx: torch.Tensor, back: bool) -> torch.Tensor:
        """Eigenbasis → feature basis (u V^T), or back (u V), for (Q, C, D) blocks."""
        if self.v is None:
            return u
        out = torch.empty_like(u)
        for p, a, z in _groups(self.layer[idx]):
            m = z - a
            v = self.v[p] if back else self.v[p].T
            out[a:z] = (u[a:z].reshape(m * self.c, self.d) @ v).view(m, self.c, self.d)
        return out

    def weights(self, th: torch.Tensor, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """θ (Q, C, D+1) of problems ``idx`` → weights (Q, D, C) and biases (Q, C)."""
        th = th * self.scale[idx]
        return self._rotate(th[:, :, : self.d], idx, False).transpose(1, 2), th[:, :, self.d]

    def theta(self, w: torch.Tensor, b: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        """Inverse of ``weights``: (Q, D, C) weights and (Q, C) biases → θ."""
        u = self._rotate(w.transpose(1, 2).contiguous(), idx, True)
        return torch.cat([u, b[:, :, None]], 2) / self.scale[idx]

    def max_grad(self, grad: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        """Largest |gradient| in the original (W, b), from gradients in θ: (Q,)."""
        g = grad / self.scale[idx]
        gw = self._rotate(g[:, :, : self.d], idx, False)
        return torch.maximum(gw.abs().amax((1, 2)), g[:, :, self.d].abs().amax(1))

    def __call__(self, th: torch.Tensor, idx: torch.Tensor, curvature: bool = False
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Loss (Q,), gradient in θ (Q, C, D+1) and, if asked, the Hessian's diagonal in
        (U, b) coordinates (Q, C, D+1) (requires ``has_curvature``)."""
        n, d, c = self.n, self.d, self.c
        f = torch.empty(len(idx), dtype=th.dtype)
        grad = torch.empty_like(th)
        hess = torch.empty_like(th) if curvature else None
        scale, lam_all = self.scale[idx], self.lam[idx]
        u_all = th * scale
        for p, a, z in _groups(self.layer[idx]):
            m = z - a
            lam = lam_all[a:z]
            u3 = u_all[a:z, :, :d]
            u = u3.reshape(m * c, d).contiguous()  # rows of stride D+1 slow the BLAS down
            wt = u @ self.v[p].T if self.v is not None and not self.rotated else u
            logits = (wt @ self.x[p].T).view(m, c, n)
            logits += u_all[a:z, :, d:]
            logits -= logits.amax(1, keepdim=True)
            prob = logits.exp()
            total = prob.sum(1, keepdim=True)  # (m, 1, N)
            picked = (logits * self.onehot).sum(1, keepdim=True)
            nll = (total.log() - picked).mean(2)[:, 0]
            f[a:z] = nll + 0.5 * lam * u3.pow(2).sum((1, 2))
            prob /= total
            if hess is not None:
                spread = prob * (1 - prob) / n
                hess[a:z, :, :d] = (spread.view(m * c, n) @ self.x[p].square()).view(m, c, d)
                hess[a:z, :, :d] += lam[:, None, None]
                hess[a:z, :, d] = spread.sum(2)
            prob -= self.onehot
            prob /= n  # dloss/dlogits, (m, C, N)
            gw = prob.view(m * c, n) @ self.x[p]
            if self.v is not None and not self.rotated:
                gw = gw @ self.v[p]
            grad[a:z, :, :d] = gw.view(m, c, d) + lam[:, None, None] * u3
            grad[a:z, :, d] = prob.sum(2)
        grad *= scale
        return f, grad, hess


def _dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a * b).sum((1, 2))


def _two_loop(g: torch.Tensor, s_hist: list[torch.Tensor], y_hist: list[torch.Tensor],
              rho_hist: list[torch.Tensor], gamma: torch.Tensor) -> torch.Tensor:
    """L-BFGS direction −H·g, every problem with its own scalars."""
    d = -g
    alphas = []
    for s, y, rho in zip(reversed(s_hist), reversed(y_hist), reversed(rho_hist)):
        a = rho * _dot(s, d)
        d = d - a[:, None, None] * y
        alphas.append(a)
    d = d * gamma[:, None, None]
    for s, y, rho, a in zip(s_hist, y_hist, rho_hist, reversed(alphas)):
        d = d + (a - rho * _dot(y, d))[:, None, None] * s
    return d


def _scale_from(hess: torch.Tensor) -> torch.Tensor:
    """Preconditioner (Q, C, D+1) from a Hessian diagonal; the biases' curvature, which can
    vanish for a class the model is sure about, is floored."""
    return torch.cat([hess[:, :, :-1], hess[:, :, -1:].clamp_min(1e-3)], 2).clamp_min(1e-12).rsqrt()


# Iterations after which a problem's preconditioner is rebuilt from the Hessian's diagonal at
# its current point: as a fit sharpens the curvature of the classes it is sure about collapses,
# and rescaling roughly halves the iterations weakly penalized problems need.
_REFRESH = (5, 15)


def _lbfgs(
    fun: _LogisticLoss, th: torch.Tensor, *, max_iter: int, tol: float, rtol: float,
    refresh: tuple[int, ...] = (), history: int = 10, max_ls: int = 20,
) -> tuple[torch.Tensor, dict]:
    """L-BFGS run separately for every problem, in lockstep: θ (Q, C, D+1) → optimum.

    Every problem has its own history, step length and stopping rule: the largest |gradient|
    in (W, b) ≤ ``tol`` (scikit-learn's lbfgs criterion) and, when ``rtol`` > 0, the decrease
    the quasi-Newton model still predicts (−½ gᵀd) ≤ ``rtol`` · loss; at ``max_iter``
    iterations it stops anyway. Finished problems leave the batch, so their cost stops. The line
    search backtracks (safeguarded quadratic steps) on the problems that need it only, and
    accepts a step on sufficient decrease (Armijo) or, where float32 no longer resolves the
    decrease, on Hager and Zhang's approximate Wolfe conditions. The losses are strictly convex
    (λ > 0), so every step keeps s·y > 0. At the iterations in ``refresh`` the preconditioner
    is rebuilt from the current curvature (variables and history rescaled to match).
    Returns θ and a dict: iterations per problem, final largest |gradient|, loss evaluations.
    """
    q_all = th.shape[0]
    idx = torch.arange(q_all)
    out = th.clone()
    n_iter = torch.full((q_all,), max_iter, dtype=torch.long)
    gmax_out = torch.zeros(q_all, dtype=th.dtype)
    f, g, _ = fun(th, idx)
    n_eval = 1
    s_hist: list[torch.Tensor] = []
    y_hist: list[torch.Tensor] = []
    rho_hist: list[torch.Tensor] = []
    gamma = torch.ones_like(f)
    stuck = torch.zeros_like(f, dtype=torch.bool)
    refresh = refresh if fun.has_curvature else ()
    it = 0
    while True:
        if it in refresh:
            _, _, hess = fun(th, idx, curvature=True)
            n_eval += 1
            new = _scale_from(hess)
            ratio = fun.scale[idx] / new
            fun.scale[idx] = new
            th, g = th * ratio, g / ratio
            s_hist = [s * ratio for s in s_hist]
            y_hist = [y / ratio for y in y_hist]
        d = _two_loop(g, s_hist, y_hist, rho_hist, gamma)
        gtd = _dot(g, d)
        uphill = gtd >= 0
        if bool(uphill.any()):  # lost curvature information: steepest descent this step
            d[uphill] = -g[uphill]
            gtd = _dot(g, d)
        # Stopping: the decrease test first (cheap), the gradient in (W, b) for those passing.
        stop = stuck.clone()
        if it == max_iter:
            stop[:] = True
        cand = ~stop & (-gtd <= 2 * rtol * f.abs()) if rtol > 0 else ~stop
        if bool(cand.any()):
            stop[cand] = fun.max_grad(g[cand], idx[cand]) <= tol
        if bool(stop.any()):
            done = idx[stop]
            out[done] = th[stop]
            gmax_out[done] = fun.max_grad(g[stop], done)
            n_iter[done] = it
            keep = ~stop
            if not bool(keep.any()):
                break
            idx, th, f, g = idx[keep], th[keep], f[keep], g[keep]
            gamma, d, gtd = gamma[keep], d[keep], gtd[keep]
            s_hist = [s[keep] for s in s_hist]
            y_hist = [y[keep] for y in y_hist]
            rho_hist = [r[keep] for r in rho_hist]
        it += 1
        # Line search on the problems whose step is not yet accepted.
        step = torch.ones_like(f)
        todo = torch.arange(len(idx))
        for ls in range(max_ls):
            if ls == 0:  # every problem: no gathers
                dt, f0, gd = d, f, gtd
                trial = th + d
                ft, gt, _ = fun(trial, idx)
            else:
                dt, f0, gd = d[todo], f[todo], gtd[todo]
                trial = th[todo] + step[todo, None, None] * dt
                ft, gt, _ = fun(trial, idx[todo])
            n_eval += 1
            slope = _dot(gt, dt)
            ok = (ft <= f0 + 1e-4 * step[todo] * gd) | (
                (ft <= f0 + 1e-6 * f0.abs()) & (slope >= 0.9 * gd) & (slope <= -0.8 * gd))
            if ls == 0 and bool(ok.all()):
                th_new, f_new, g_new = trial, ft, gt
                todo = todo[:0]
                break
            if ls == 0:
                th_new, f_new, g_new = th.clone(), f.clone(), g.clone()
            acc = todo[ok]
            th_new[acc], f_new[acc], g_new[acc] = trial[ok], ft[ok], gt[ok]
            todo, ft, f0, gd = todo[~ok], ft[~ok], f0[~ok], gd[~ok]
            if len(todo) == 0:
                break
            st = step[todo]
            curv = 2 * (ft - f0 - gd * st)
            quad = torch.where(curv > 0, -gd * st * st / curv.clamp_min(1e-30), 0.5 * st)
            step[todo] = torch.minimum(torch.maximum(quad, 0.1 * st), 0.5 * st)
        s = th_new - th
        y = g_new - g
        sy, yy = _dot(s, y), _dot(y, y)
        good = sy > 1e-10 * (yy * _dot(s, s)).clamp_min(1e-30).sqrt()
        rho = torch.where(good, 1.0 / sy.clamp_min(1e-30), torch.zeros_like(sy))
        gamma = torch.where(good, sy / yy.clamp_min(1e-30), gamma)
        s_hist.append(s)
        y_hist.append(y)
        rho_hist.append(rho)
        if len(s_hist) > history:
            del s_hist[0], y_hist[0], rho_hist[0]
        th, f, g = th_new, f_new, g_new
        # No acceptable step: as converged as float precision allows; it stops.
        stuck = torch.zeros_like(f, dtype=torch.bool)
        stuck[todo] = True
    return out, {"n_iter": n_iter, "max_abs_grad": gmax_out, "n_eval": n_eval}


def _solve_logistic(
    x: torch.Tensor, y: torch.Tensor, n_classes: int, lam: torch.Tensor, *,
    basis: tuple[torch.Tensor, torch.Tensor] | None, rotate: bool,
    init: tuple[torch.Tensor, torch.Tensor] | None = None, hess: torch.Tensor | None = None,
    max_iter: int, tol: float, rtol: float,
) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """``fit_logistic`` on (P, N, D) standardized x and (P, K) penalties.

    ``rotate``: run on X V (one N·D² product per problem, then none per evaluation, and the
    preconditioner follows the curvature); else W^T = U V^T is formed at each evaluation.
    ``hess``: (P, K, C, D+1) Hessian diagonal, in the basis, near ``init``, to precondition
    with instead of the default. The returned dict holds the solver's statistics and, as
    ``"loss"`` and ``"theta"``, what ``curvature_at`` needs.
    """
    p, n, d = x.shape
    k = lam.shape[1]
    q = p * k
    layer = torch.arange(p).repeat_interleave(k)
    lam_q = lam.reshape(q).to(x.dtype)
    if hess is not None:
        scale = _scale_from(hess.reshape(q, n_classes, d + 1).to(x.dtype))
    else:
        s = basis[0].to(x.dtype) if basis is not None else torch.ones(p, d, dtype=x.dtype)
        scale = torch.empty(q, n_classes, d + 1, dtype=x.dtype)
        scale[:, :, :d] = (s[layer] / n_classes + lam_q[:, None]).rsqrt()[:, None, :]
        scale[:, :, d] = float(n_classes) ** 0.5
    v = basis[1].to(x.dtype) if basis is not None else None
    data = torch.bmm(x, v) if rotate and v is not None else x.contiguous()
    fun = _LogisticLoss(data, y, n_classes, layer, lam_q, v, rotate, scale)
    idx = torch.arange(q)
    if init is None:
        prior = torch.bincount(y.long(), minlength=n_classes).to(x.dtype) / n
        th = torch.zeros(q, n_classes, d + 1, dtype=x.dtype)
        th[:, :, d] = torch.log(prior.clamp_min(1e-6))
        th /= scale
    else:
        w0, b0 = init
        th = fun.theta(w0.reshape(q, d, n_classes).to(x.dtype),
                       b0.reshape(q, n_classes).to(x.dtype), idx)
    th, info = _lbfgs(fun, th, max_iter=max_iter, tol=tol, rtol=rtol, refresh=_REFRESH)
    w, b = fun.weights(th, idx)
    info.update(loss=fun, theta=th, preconditioned=basis is not None, rotated=rotate)
    return w.contiguous().view(p, k, d, n_classes), b.view(p, k, n_classes), info


def curvature_at(info: dict, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor | None:
    """Hessian diagonal (R, C, D+1), in the basis, of problems (rows[i], cols[i]) of a
    ``_solve_logistic`` run at its solution; None if that run cannot give it."""
    fun: _LogisticLoss = info["loss"]
    if not fun.has_curvature:
        return None
    k = len(fun.layer) // (int(fun.layer.max()) + 1)
    idx = rows * k + cols
    order = torch.argsort(idx)
    _, _, hess = fun(info["theta"][idx[order]], idx[order], curvature=True)
    return hess[torch.argsort(order)]


def fit_logistic(
    x: torch.Tensor,
    y: torch.Tensor,
    n_classes: int,
    lambdas: torch.Tensor,
    *,
    max_iter: int = 100,
    tol: float = 1e-4,
    rtol: float = 1e-5,
    basis: tuple[torch.Tensor, torch.Tensor] | None | bool = True,
    init: tuple[torch.Tensor, torch.Tensor] | None = None,
    stats: dict | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Multinomial logistic regression for every problem and penalty at once.

    x: (P, N, D) standardized features; y: (N,) class indices; lambdas: (K,) or (P, K) L2
    penalties on the mean log-loss (sklearn's ``C`` is ``1 / (lambda · N)``). Returns weights
    (P, K, D, C) and biases (P, K, C).

    Every (problem, penalty) pair is its own L-BFGS run (all in lockstep, batched per problem,
    see ``_lbfgs``). It stops when its largest |gradient| is ≤ ``tol`` (scikit-learn's lbfgs
    criterion) and the decrease its quasi-Newton model still predicts is ≤ ``rtol`` × the loss
    (0 to drop this second test), or after ``max_iter`` iterations. With weak penalties the
    gradient test alone stops far from the optimum (for λ = 1e-4 the loss can still be 20% above
    its minimum), where the answer depends on the solver's path; the second test brings every
    solver to the same answer. ``basis``: the eigenpairs of X^T X / N
    (``covariance_basis``) to precondition with, True to compute them when that pays off, None
    for none. ``init``: starting weights (P, K, D, C) and biases (P, K, C). ``stats``, when
    given, receives the iterations per problem, the largest final |gradient| and the number of
    loss evaluations.
    """
    p, n, d = x.shape
    lam = lambdas.to(x.dtype).expand(p, lambdas.shape[-1]) if lambdas.ndim == 1 else lambdas
    k = lam.shape[1]
    with _threads_for(p * k * n * d * n_classes):
        if basis is True:
            basis = covariance_basis(x) if _worth_a_basis(n, d, k, n_classes) else None
        w, b, info = _solve_logistic(x, y, n_classes, lam, basis=basis or None,
                                     rotate=bool(basis) and init is None, init=init,
                                     max_iter=max_iter, tol=tol, rtol=rtol)
    del info["loss"], info["theta"]
    if stats is not None:
        stats.update(n_iter=info["n_iter"].view(p, k), max_abs_grad=info["max_abs_grad"].view(p, k),
                     n_eval=info["n_eval"], preconditioned=info["preconditioned"])
    return w, b


def logistic_logits(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(P, N, D) features × (P, D, C) weights + (P, C) biases → (P, N, C) logits."""
    return torch.einsum("pnd,pdc->pnc", x, w) + b[:, None, :]

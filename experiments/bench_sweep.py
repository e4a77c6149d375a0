"""Layer-sweep speed: ``soundlens.probing.sweep`` vs the naive per-layer scikit-learn loop.

Issue target: the sweep is >= 5x faster than a per-layer scikit-learn ``LogisticRegression``
loop on 12 layers x 768 dims x 5,000 clips, at equal held-out accuracy (+-1 point per layer).

Data: synthetic activations (``make_activations``): 12 layers x 5,000 clips x 768 dims, 10
classes (mildly unbalanced). Each layer mixes a clip-level latent shared by all layers (the
residual stream) with fresh noise, both with a power-law variance spectrum, plus a class signal
in a random 64-dim subspace whose strength grows with depth (zero at layer 0: chance level);
then a random dense mixing matrix, log-normal per-feature scales and offsets make the features
correlated and anisotropic, as real activations are. One stratified 70/30 split, used by all.

Variants (all on the same split and the same candidate penalties, float32 features in):

* ``ours``      - the whole ``sweep(features, y, split=..., control=False, n_boot=...)`` call:
  stacking, standardizing, choosing lambda per layer on the 25% inner validation split, refit,
  test prediction and (small) bootstrap; one batched solve for all 12 layers.
* ``sk_select`` - the naive loop with the same selection: for each layer, for each lambda a
  ``Pipeline(StandardScaler, LogisticRegression(C=1/(lambda*n_inner)))`` fitted on the SAME
  inner-train rows (``soundlens.probing.probes.inner_split``), scored on the same validation
  rows, best kept (ties to the stronger penalty, as ours), refitted on the whole training set
  with C = 1/(lambda*n_train), scored on the test rows.
* ``sk_fixed``  - the loop without any selection cost: each layer refitted once at the C equal
  to the lambda ours picked for it (a lower bound on the naive loop's time).
* ``original``  - (``--original``, once) the sweep with the solver as of commit a9bda74 (one
  torch L-BFGS over the summed losses of all problems, autograd), for the before/after figure.
* ``sk_tight``  - (``--tight``, once) ``sk_select`` run to convergence (tol=1e-8,
  max_iter=10000): the exact answer, to tell solver error from selection noise.

scikit-learn runs with its defaults (lbfgs, tol=1e-4, max_iter=100); ours uses the same
tol (1e-4, on the largest |gradient|) and max_iter, plus its own test on the decrease still
predicted (``soundlens.probing.solvers.fit_logistic``). For every thread count in
``--threads`` (torch.set_num_threads and threadpoolctl's limit for numpy/scikit-learn's BLAS
and OpenMP), variants are interleaved (order reversed every other repeat, after an untimed
warm-up run of ours), and the figures are the medians over repeats of wall time, process CPU
time and per-repeat ratios. The solver's iterations per problem and the eigenbasis time come
from one more, separately timed, run of ours.

    python experiments/bench_sweep.py --original --tight --profile   # ~5 min on 2 cores
    python experiments/bench_sweep.py --threads 1 --repeats 1 --quick
"""

from __future__ import annotations

import argparse
import cProfile
import datetime as dt
import io
import json
import os
import platform
import pstats
import shlex
import statistics
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import sklearn
import torch
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_info, threadpool_limits

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import soundlens.probing.probes as probes_mod
import soundlens.probing.sweep as sweep_mod
from soundlens.probing import solvers
from soundlens.probing.probes import DEFAULT_LAMBDAS, inner_split
from soundlens.probing.sweep import Split, make_split, sweep

RESULTS = Path(__file__).resolve().parent / "results"


# ----------------------------------------------------------------------------- data
def make_activations(
    layers: int = 12, rows: int = 5000, dims: int = 768, classes: int = 10,
    signal: float = 0.55, rank: int = 64, seed: int = 0,
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Synthetic (rows, dims) float32 activations per layer and their class labels."""
    g = torch.Generator().manual_seed(seed)
    rng = np.random.default_rng(seed)
    y = rng.choice(classes, size=rows, p=rng.dirichlet(np.full(classes, 20.0)))
    spectrum = torch.arange(1, dims + 1, dtype=torch.float32) ** -0.8  # power-law variances
    stream = torch.randn(rows, dims, generator=g) * spectrum.sqrt()  # shared by all layers
    means = torch.randn(classes, rank, generator=g)[torch.from_numpy(y)]  # (rows, rank)
    feats = {}
    for layer in range(layers):
        strength = signal * (layer / max(1, layers - 1)) ** 1.5
        h = 0.8 * stream + 0.6 * torch.randn(rows, dims, generator=g) * spectrum.sqrt()
        subspace = torch.linalg.qr(torch.randn(dims, rank, generator=g))[0]
        h += 0.1 * strength * means @ subspace.T
        mixing = torch.eye(dims) + torch.randn(dims, dims, generator=g) / dims**0.5
        scale = torch.exp(torch.randn(dims, generator=g))
        offset = 2 * torch.randn(dims, generator=g)
        feats[f"layer{layer:02d}"] = ((h @ mixing) * scale + offset).numpy()
    return feats, y


# ----------------------------------------------------------------------------- variants
def run_ours(features, y, split, lambdas, max_iter, n_boot) -> dict[str, Any]:
    res = sweep(features, y, split=split, control=False, lambdas=lambdas, max_iter=max_iter,
                n_boot=n_boot, keep_probes=False)
    return {"accuracy": [float(a) for a in res.metrics["accuracy"]],
            "lambda": [float(v) for v in res.regularization]}


def _sk_fit(x: np.ndarray, y: np.ndarray, lam: float, max_iter: int, tol: float):
    c = 1.0 / (lam * len(y))
    model = make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=max_iter, tol=tol))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(x, y)
    return model, int(model[-1].n_iter_[0])


def run_sk_select(features, y, split, lambdas, max_iter, tol, seed) -> dict[str, Any]:
    """Per layer: fit every lambda on the inner split, keep the best on validation, refit."""
    y_tr = y[split.train]
    itr, iva = inner_split(y_tr, None, 0.25, seed)  # exactly the rows ours uses
    acc, chosen, iters = [], [], []
    for x in features.values():
        x_tr = x[split.train]
        val = []
        for lam in lambdas:
            model, n_it = _sk_fit(x_tr[itr], y_tr[itr], lam, max_iter, tol)
            val.append(float((model.predict(x_tr[iva]) == y_tr[iva]).mean()))
            iters.append(n_it)
        best = max(range(len(lambdas)), key=lambda i: (val[i], i))  # ties: stronger penalty
        model, n_it = _sk_fit(x_tr, y_tr, lambdas[best], max_iter, tol)
        iters.append(n_it)
        acc.append(float((model.predict(x[split.test]) == y[split.test]).mean()))
        chosen.append(float(lambdas[best]))
    return {"accuracy": acc, "lambda": chosen, "n_iter": iters}


def run_sk_tight(features, y, split, lambdas, seed) -> dict[str, Any]:
    """``sk_select`` run to convergence (tol=1e-8, max_iter=10000): the exact answer."""
    return run_sk_select(features, y, split, lambdas, 10000, 1e-8, seed)


def run_sk_fixed(features, y, split, lams, max_iter, tol) -> dict[str, Any]:
    """Per layer: one fit at the lambda ours chose (no selection cost)."""
    acc, iters = [], []
    for x, lam in zip(features.values(), lams):
        model, n_it = _sk_fit(x[split.train], y[split.train], lam, max_iter, tol)
        iters.append(n_it)
        acc.append(float((model.predict(x[split.test]) == y[split.test]).mean()))
    return {"accuracy": acc, "lambda": list(lams), "n_iter": iters}


# --------------------------------------------------------- the solver as of commit a9bda74
def _original_fit_logistic(x, y, n_classes, lambdas, *, max_iter=100, tol=1e-4):
    p, n, d = x.shape
    lam = lambdas.to(x.dtype).expand(p, lambdas.shape[-1]) if lambdas.ndim == 1 else lambdas
    k = lam.shape[1]
    prior = torch.bincount(y.long(), minlength=n_classes).to(x.dtype) / n
    w = torch.zeros(p, k, d, n_classes, dtype=x.dtype, requires_grad=True)
    b = torch.log(prior.clamp_min(1e-6)).expand(p, k, n_classes).clone().requires_grad_(True)
    lam4 = lam.to(x.dtype)[:, :, None, None]
    target = y.long().expand(p, k, n).reshape(-1)
    opt = torch.optim.LBFGS([w, b], lr=1, max_iter=max_iter, tolerance_grad=tol,
                            tolerance_change=1e-9, history_size=10,
                            line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        logits = torch.einsum("pnd,pkdc->pknc", x, w) + b[:, :, None, :]
        nll = torch.nn.functional.cross_entropy(
            logits.reshape(-1, n_classes), target, reduction="sum") / n
        loss = nll + 0.5 * (lam4 * w.pow(2)).sum()
        loss.backward()
        return loss

    with solvers._threads_for(p * k * n * d * n_classes):
        opt.step(closure)
    return w.detach(), b.detach()


def _original_fit_logistic_selected(x, y, n_classes, lambdas, *, groups=None, val_fraction=0.25,
                                    seed=0, max_iter=100):
    lam = torch.tensor(list(lambdas), dtype=x.dtype)
    tr, va = inner_split(y, groups, val_fraction, seed)
    y_t = torch.as_tensor(y, dtype=torch.long)
    if len(lam) > 1:
        mu, sd = solvers.standardize(x[:, tr])
        w, b = _original_fit_logistic((x[:, tr] - mu) / sd, y_t[tr], n_classes, lam,
                                      max_iter=max_iter)
        xv = (x[:, va] - mu) / sd
        logits = torch.einsum("pnd,pkdc->pknc", xv, w) + b[:, :, None, :]
        acc = (logits.argmax(-1) == y_t[va]).float().mean(-1)
        best = (acc + 1e-9 * torch.arange(len(lam))).argmax(1)
        chosen = lam[best]
    else:
        chosen = lam.expand(x.shape[0])
    mu, sd = solvers.standardize(x)
    w, b = _original_fit_logistic((x - mu) / sd, y_t, n_classes, chosen[:, None],
                                  max_iter=max_iter)
    return w[:, 0], b[:, 0], chosen, mu, sd


def run_original(features, y, split, lambdas, max_iter, n_boot) -> dict[str, Any]:
    current = sweep_mod.fit_logistic_selected
    sweep_mod.fit_logistic_selected = _original_fit_logistic_selected
    try:
        return run_ours(features, y, split, lambdas, max_iter, n_boot)
    finally:
        sweep_mod.fit_logistic_selected = current


# ----------------------------------------------------------------------------- measuring
def timed(fn: Callable[[], dict[str, Any]]) -> tuple[dict[str, Any], float, float]:
    t0, c0 = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - t0, time.process_time() - c0


def solver_diagnostics(fn: Callable[[], Any]) -> dict[str, Any]:
    """Run ``fn`` recording the eigenbasis time and every solve's iterations and evaluations."""
    calls: list[dict[str, Any]] = []
    basis_s: list[float] = []
    solve, basis = probes_mod._solve_logistic, probes_mod.covariance_basis

    def recording_solve(x, *args, **kwargs):
        t0 = time.perf_counter()
        w, b, info = solve(x, *args, **kwargs)
        p = x.shape[0]
        calls.append({
            "shape": list(x.shape), "seconds": round(time.perf_counter() - t0, 3),
            "warm_start": kwargs.get("init") is not None, "rotated": info["rotated"],
            "preconditioned": info["preconditioned"], "loss_evaluations": info["n_eval"],
            "iterations": info["n_iter"].view(p, -1).tolist(),
            "max_abs_grad": float(info["max_abs_grad"].max()),
        })
        return w, b, info

    def recording_basis(x):
        t0 = time.perf_counter()
        out = basis(x)
        basis_s.append(round(time.perf_counter() - t0, 3))
        return out

    probes_mod._solve_logistic, probes_mod.covariance_basis = recording_solve, recording_basis
    try:
        t0 = time.perf_counter()
        fn()
        total = time.perf_counter() - t0
    finally:
        probes_mod._solve_logistic, probes_mod.covariance_basis = solve, basis
    return {"total_s": round(total, 3), "eigenbasis_s": basis_s, "solves": calls}


def profile_top(fn: Callable[[], Any], n: int = 20) -> str:
    prof = cProfile.Profile()
    prof.enable()
    fn()
    prof.disable()
    buf = io.StringIO()
    pstats.Stats(prof, stream=buf).sort_stats("tottime").print_stats(n)
    return buf.getvalue()


def med(xs: Sequence[float]) -> float:
    return float(statistics.median(xs))


def bench_threads(threads: int, repeats: int, features, y, split: Split, args
                  ) -> dict[str, Any]:
    torch.set_num_threads(threads)
    lambdas = list(args.lambdas)
    with threadpool_limits(threads):
        load_before = os.getloadavg()
        variants: dict[str, Callable[[], dict[str, Any]]] = {
            "ours": lambda: run_ours(features, y, split, lambdas, args.max_iter, args.n_boot),
        }
        warm, warm_s, _ = timed(variants["ours"])  # untimed warm-up; gives ours' lambdas
        print(f"[{threads} thread(s)] warm-up ours {warm_s:.2f}s", flush=True)
        variants["sk_select"] = lambda: run_sk_select(features, y, split, lambdas,
                                                      args.max_iter, args.tol, args.seed)
        variants["sk_fixed"] = lambda: run_sk_fixed(features, y, split, warm["lambda"],
                                                    args.max_iter, args.tol)
        once = set()  # variants timed in the first repeat only
        if args.original and threads == args.threads[0]:
            variants["original"] = lambda: run_original(features, y, split, lambdas,
                                                        args.max_iter, args.n_boot)
            once.add("original")
        if args.tight and threads == args.threads[0]:
            variants["sk_tight"] = lambda: run_sk_tight(features, y, split, lambdas, args.seed)
            once.add("sk_tight")
        wall: dict[str, list[float]] = {k: [] for k in variants}
        cpu: dict[str, list[float]] = {k: [] for k in variants}
        loads: dict[str, list[float]] = {k: [] for k in variants}
        outputs: dict[str, dict[str, Any]] = {}
        names = list(variants)
        for r in range(repeats):
            order = names if r % 2 == 0 else names[::-1]
            for name in order:
                if name in once and r > 0:
                    continue
                out, w, c = timed(variants[name])
                wall[name].append(w)
                cpu[name].append(c)
                loads[name].append(round(os.getloadavg()[0], 2))
                outputs.setdefault(name, out)
                print(f"[{threads} thread(s)] repeat {r} {name:9s} wall {w:7.2f}s cpu {c:7.2f}s "
                      f"load {os.getloadavg()[0]:.2f}", flush=True)
        diag = solver_diagnostics(variants["ours"])
        prof = profile_top(variants["ours"]) if args.profile else None
        load_after = os.getloadavg()

    ours = outputs["ours"]
    result: dict[str, Any] = {
        "threads": threads, "loadavg_before": load_before, "loadavg_after": load_after,
        "wall_s": {k: [round(v, 3) for v in vs] for k, vs in wall.items()},
        "cpu_s": {k: [round(v, 3) for v in vs] for k, vs in cpu.items()},
        "median_wall_s": {k: round(med(vs), 3) for k, vs in wall.items()},
        "median_cpu_s": {k: round(med(vs), 3) for k, vs in cpu.items()},
        "loadavg_1min_after_each": loads,
        "accuracy": {k: [round(a, 4) for a in o["accuracy"]] for k, o in outputs.items()},
        "lambda": {k: o["lambda"] for k, o in outputs.items()},
        "sklearn_fits_at_max_iter": {
            k: f"{sum(i >= args.max_iter for i in outputs[k]['n_iter'])} of "
               f"{len(outputs[k]['n_iter'])}" for k in ("sk_select", "sk_fixed")},
        "sklearn_iterations": {k: outputs[k]["n_iter"] for k in outputs if k.startswith("sk_")},
        "ours_solver": diag,
    }
    speedup, delta = {}, {}
    for k in outputs:
        if k == "ours":
            continue
        n = min(len(wall[k]), len(wall["ours"]))
        ratios = [wall[k][i] / wall["ours"][i] for i in range(n)]
        cpu_ratios = [cpu[k][i] / cpu["ours"][i] for i in range(n)]
        speedup[k] = {"wall": round(med(ratios), 2), "cpu": round(med(cpu_ratios), 2),
                      "wall_per_repeat": [round(v, 2) for v in ratios]}
        d = [abs(a - b) for a, b in zip(ours["accuracy"], outputs[k]["accuracy"])]
        delta[k] = {"max_abs_points": round(100 * max(d), 2),
                    "per_layer_points": [round(100 * v, 2) for v in d],
                    "same_lambda": int(np.isclose(ours["lambda"], outputs[k]["lambda"],
                                                  rtol=1e-5).sum())}
    result["speedup_vs_ours"] = speedup  # other variant's time / ours
    result["accuracy_delta_vs_ours"] = delta
    if "sk_tight" in outputs:  # how far each answer is from the converged one
        exact = outputs["sk_tight"]["accuracy"]
        result["accuracy_delta_vs_converged_sklearn"] = {
            k: round(100 * max(abs(a - b) for a, b in zip(o["accuracy"], exact)), 2)
            for k, o in outputs.items() if k != "sk_tight"}
    result["target_met"] = {
        k: bool(speedup[k]["wall"] >= 5 and delta[k]["max_abs_points"] <= 1.0)
        for k in ("sk_select", "sk_fixed")}
    if prof:
        result["profile_ours"] = prof
    return result


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--layers", type=int, default=12)
    p.add_argument("--rows", type=int, default=5000)
    p.add_argument("--dims", type=int, default=768)
    p.add_argument("--classes", type=int, default=10)
    p.add_argument("--signal", type=float, default=0.55, help="class signal of the last layer")
    p.add_argument("--lambdas", type=lambda s: [float(v) for v in s.split(",")],
                   default=list(DEFAULT_LAMBDAS))
    p.add_argument("--max-iter", type=int, default=100)
    p.add_argument("--tol", type=float, default=1e-4, help="scikit-learn's tol (ours: 1e-4)")
    p.add_argument("--n-boot", type=int, default=100, help="bootstrap resamples in ours")
    p.add_argument("--threads", type=lambda s: [int(v) for v in s.split(",")], default=[1, 2])
    p.add_argument("--repeats", type=lambda s: [int(v) for v in s.split(",")], default=[3, 2],
                   help="repeats per thread count (the last one applies to any further)")
    p.add_argument("--original", action="store_true",
                   help="also time the solver as of commit a9bda74 (first thread count only)")
    p.add_argument("--tight", action="store_true",
                   help="also run sk_select to convergence (tol=1e-8) once: the exact answer")
    p.add_argument("--profile", action="store_true", help="cProfile one extra run of ours")
    p.add_argument("--quick", action="store_true", help="3 layers x 1000 rows x 128 dims")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=str(RESULTS / "bench_sweep.json"))
    args = p.parse_args(argv)
    if args.quick:
        args.layers, args.rows, args.dims = 3, 1000, 128

    t_start = time.perf_counter()
    load_start = os.getloadavg()
    features, y = make_activations(args.layers, args.rows, args.dims, args.classes,
                                   args.signal, seed=args.seed)
    split = make_split(y, test_size=0.3, seed=args.seed)  # stratified 70/30, as sweep's default
    print(f"data: {args.layers} layers x {args.rows} rows x {args.dims} dims, "
          f"{args.classes} classes; split {split.how}", flush=True)

    runs = [bench_threads(t, args.repeats[min(i, len(args.repeats) - 1)], features, y, split, args)
            for i, t in enumerate(args.threads)]
    out = {
        "benchmark": "sweep",
        "command": "python experiments/bench_sweep.py " + shlex.join(argv or sys.argv[1:]),
        "date": dt.datetime.now().isoformat(timespec="seconds"),
        "parameters": {k: v for k, v in vars(args).items() if k != "out"},
        "data": {"sites": list(features), "rows": args.rows, "dims": args.dims,
                 "classes": int(args.classes), "class_counts": np.bincount(y).tolist(),
                 "train": len(split.train), "test": len(split.test), "split": split.how},
        "timed": {"ours": "the whole sweep(..., control=False, n_boot=N, keep_probes=False) call",
                  "sk_select": "per-layer Pipeline(StandardScaler, LogisticRegression) loop "
                               "with the same lambda selection, refit and test prediction",
                  "sk_fixed": "per-layer loop, one fit at ours' lambda, test prediction"},
        "loadavg_start": load_start, "loadavg_end": os.getloadavg(),
        "cpu_count": os.cpu_count(), "platform": platform.platform(),
        "versions": {"torch": torch.__version__, "sklearn": sklearn.__version__,
                     "numpy": np.__version__, "python": platform.python_version()},
        "blas": [{k: i.get(k) for k in ("internal_api", "version", "architecture")}
                 for i in threadpool_info()],
        "target": "speed-up >= 5x vs the naive scikit-learn loop at max |delta accuracy| <= 1 "
                  "point per layer",
        "results": runs,
        "total_seconds": round(time.perf_counter() - t_start, 1),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=1))
    for r in runs:
        print(f"\n{r['threads']} thread(s): median wall {r['median_wall_s']}")
        print(f"  speed-up (their time / ours): "
              f"{ {k: v['wall'] for k, v in r['speedup_vs_ours'].items()} }")
        print(f"  max |delta accuracy| (points): "
              f"{ {k: v['max_abs_points'] for k, v in r['accuracy_delta_vs_ours'].items()} }")
        print(f"  target met: {r['target_met']}")
    print(f"wrote {args.out} ({out['total_seconds']}s)")
    return out


if __name__ == "__main__":
    main()

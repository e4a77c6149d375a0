"""Capture overhead: extraction to an activation store vs a plain forward over the same clips.

Two variants run over the same in-memory ``datasets.Dataset`` of synthetic clips (noise +
tones, WAV bytes in a ``datasets.Audio`` column, as ``soundlens.data`` builds them):

* ``plain``   – a loop doing exactly what ``extract`` does to prepare a batch (row read,
  decode, resample, check, ``lm.inputs``) followed by the plain forward, no hooks
  (Whisper: ``lm.model.get_encoder()(input_features)``; wav2vec2: ``lm.model(**inputs)``).
* ``extract`` – ``soundlens.hooks.extract`` with every encoder layer as a site, mean pooling,
  writing the store to disk (a fresh folder each repeat).
* ``capture`` (optional, ``--variants plain,capture,extract``) – the plain loop with
  ``soundlens.hooks.capture`` instead of the bare forward: splits hook + pooling cost from
  store / loop cost.

Two finer measurements back the pass-level ratio up: per batch, on the same prepared inputs,
the bare forward vs ``capture`` (adjacent pairs, ``--fine-rounds``), and the time of extract's
bookkeeping outside the forward (dataset fingerprint, store create + one shard + finish).

Variants are interleaved (plain extract, extract plain, plain extract, ...: alternating order
cancels slow drift in machine load) after an untimed one-batch warm-up of each; the figure is
the median over repeats of the per-repeat ratio extract / plain, for wall clock and for process
CPU time (the steadier one when other jobs share the cores). torch runs with a fixed thread
count (default 1: on a shared 2-core machine one thread gives the steadiest timings).

    python experiments/bench_capture_overhead.py                 # defaults, < 5 min
    python experiments/bench_capture_overhead.py --clips 16 --batch-sizes 1,4 --repeats 5 --fine-rounds 2 --profile
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
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import datasets
import numpy as np
import soundfile as sf
import torch

from soundlens.data.loading import check_audio, resample
from soundlens.hooks import capture, example_audio, extract
from soundlens.models import load
from soundlens.models.loaded import LoadedModel

SR = 16000
RESULTS = Path(__file__).resolve().parent / "results"


# ----------------------------------------------------------------------------- data
def make_clips(n: int, min_s: float, max_s: float, seed: int = 0) -> list[np.ndarray]:
    """Noise plus a few tones, lengths spread evenly over [min_s, max_s]."""
    rng = np.random.default_rng(seed)
    clips = []
    for i in range(n):
        dur = min_s + (max_s - min_s) * (i / max(1, n - 1))
        t = np.arange(int(dur * SR)) / SR
        x = 0.05 * rng.standard_normal(t.size)
        for f in rng.uniform(100, 2000, size=3):
            x += 0.1 * np.sin(2 * np.pi * f * t + rng.uniform(0, 2 * np.pi))
        clips.append(x.astype(np.float32))
    rng.shuffle(clips)  # mixed lengths inside batches, as in real data
    return clips


def wav_bytes(x: np.ndarray) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, x, SR, format="WAV", subtype="FLOAT")
    return buf.getvalue()


def make_dataset(clips: list[np.ndarray]) -> datasets.Dataset:
    ds = datasets.Dataset.from_dict({
        "audio": [{"bytes": wav_bytes(c), "path": None} for c in clips],
        "clip_id": [f"clip-{i:03d}" for i in range(len(clips))],
    })
    return ds.cast_column("audio", datasets.Audio(sampling_rate=SR))


# ----------------------------------------------------------------------------- models
def load_model(which: str, tmp: Path) -> tuple[LoadedModel, Callable[[dict[str, Any]], Any]]:
    """The model and its plain (hook-free) forward."""
    if which == "whisper":
        lm = load("whisper-tiny.en")
        enc = lm.model.get_encoder()
        return lm, lambda inputs: enc(inputs["input_features"])
    if which == "w2v2":
        import transformers as T

        folder = tmp / "wav2vec2-base-random"
        torch.manual_seed(0)
        T.Wav2Vec2Model(T.Wav2Vec2Config()).eval().save_pretrained(folder)  # base size
        T.Wav2Vec2FeatureExtractor(
            feature_size=1, sampling_rate=SR, padding_value=0.0, do_normalize=True,
            return_attention_mask=True,
        ).save_pretrained(folder)
        lm = load(str(folder))
        return lm, lambda inputs: lm.model(**inputs)
    raise ValueError(f"unknown model {which!r}")


def layer_sites(lm: LoadedModel, which: str) -> list[str]:
    sites = lm.sites()
    if which == "layers":  # every encoder layer output (the residual stream)
        return [n for n, s in sites.items() if s.kind == "layer" and n.startswith("encoder.")]
    if which == "all":  # every non-head encoder site: layers, attn, mlp, embeddings, ...
        return [n for n, s in sites.items() if s.kind != "head" and
                (n.startswith("encoder.") or n == "feature_extractor")]
    raise ValueError(which)


# ----------------------------------------------------------------------------- variants
def prepared_batches(lm: LoadedModel, ds: datasets.Dataset, batch_size: int):
    """What extract does before capture, row by row (same calls, same order)."""
    n = len(ds)
    for b in range(0, n, batch_size):
        clips = []
        for i in range(b, min(b + batch_size, n)):
            row = ds[i]
            audio, sr = example_audio(row["audio"])
            clips.append(check_audio(resample(audio, sr, lm.sample_rate), str(row["clip_id"])))
        yield clips, lm.inputs(clips, sampling_rate=lm.sample_rate)


def run_plain(lm, ds, sites, bs, forward, tmp) -> None:
    with torch.no_grad():
        for _clips, inputs in prepared_batches(lm, ds, bs):
            forward(inputs)


def run_capture(lm, ds, sites, bs, forward, tmp) -> None:
    for clips, inputs in prepared_batches(lm, ds, bs):
        capture(lm, inputs, sites, "mean", n_samples=[len(c) for c in clips])


def run_extract(lm, ds, sites, bs, forward, tmp) -> None:
    out = tmp / f"store-{time.perf_counter_ns()}"
    store = extract(lm, ds, sites, out, pooling="mean", batch_size=bs, id_column="clip_id",
                    progress=False)
    assert store.complete and store.rows == len(ds), (store.rows, len(ds))
    shutil.rmtree(out)


VARIANTS = {"plain": run_plain, "capture": run_capture, "extract": run_extract}


def timed(fn: Callable[[], None]) -> tuple[float, float]:
    w0, c0 = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - w0, time.process_time() - c0


def fine_comparison(lm, ds, sites, bs, forward, rounds: int) -> dict[str, Any]:
    """Per batch, on the same prepared inputs: bare forward vs ``capture`` (hooks + pooling).

    Adjacent pairs (order alternating) are a fraction of a second apart, so load drifts on a
    shared machine cancel far better than in whole-pass pairs.
    """
    batches = list(prepared_batches(lm, ds, bs))
    plain_t: list[float] = []
    cap_t: list[float] = []
    ratios: list[float] = []
    for r in range(rounds):
        for k, (clips, inputs) in enumerate(batches):
            t: dict[str, float] = {}
            for v in (("plain", "capture") if (r + k) % 2 == 0 else ("capture", "plain")):
                t0 = time.perf_counter()
                if v == "plain":
                    with torch.no_grad():
                        forward(inputs)
                else:
                    capture(lm, inputs, sites, "mean", n_samples=[len(c) for c in clips])
                t[v] = time.perf_counter() - t0
            plain_t.append(t["plain"])
            cap_t.append(t["capture"])
            ratios.append(t["capture"] / t["plain"])
    return {
        "pairs": len(ratios), "rounds": rounds,
        "median_ratio_capture_over_plain_forward": statistics.median(ratios),
        "sum_ratio_capture_over_plain_forward": sum(cap_t) / sum(plain_t),
        "median_batch_plain_s": statistics.median(plain_t),
        "median_batch_capture_s": statistics.median(cap_t),
        "ratios": ratios,
    }


def store_costs(lm, ds, sites, tmp: Path, repeats: int = 3) -> dict[str, float]:
    """Seconds for extract's bookkeeping outside the forward: fingerprint and store writes."""
    from soundlens.hooks import ActivationStore, dataset_fingerprint

    _clips, inputs = next(prepared_batches(lm, ds.select([0]), 1))
    dims = {s: int(a.shape[1]) for s, a in capture(lm, inputs, sites, "mean").items()}
    arrays = {s: np.random.default_rng(0).standard_normal((len(ds), d)).astype(np.float32)
              for s, d in dims.items()}
    fp, wr = [], []
    for r in range(repeats):
        t0 = time.perf_counter()
        dataset_fingerprint(ds, "audio")
        fp.append(time.perf_counter() - t0)
        out = tmp / f"store-cost-{r}"
        t0 = time.perf_counter()
        store = ActivationStore.create_or_resume(out, {"r": r}, overwrite=True)
        store.append(arrays, np.arange(len(ds)), len(ds))
        store.finish()
        wr.append(time.perf_counter() - t0)
        shutil.rmtree(out)
    return {"fingerprint_s": statistics.median(fp), "store_create_append_finish_s":
            statistics.median(wr)}


def bench_model(which: str, args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    lm, forward = load_model(which, tmp)
    sites = layer_sites(lm, args.sites)
    clips = make_clips(args.clips, args.min_seconds, args.max_seconds, seed=args.seed)
    ds = make_dataset(clips)
    variants = args.variants.split(",")
    rows: dict[int, Any] = {}
    for bs in args.batch_sizes:
        call = {v: (lambda v=v, d=ds, b=bs: VARIANTS[v](lm, d, sites, b, forward, tmp))
                for v in variants}
        warm = ds.select(range(min(bs, len(ds))))
        for v in variants:  # warm-up on one batch: first decode, allocator growth, lazy imports
            call[v](d=warm)
        wall: dict[str, list[float]] = {v: [] for v in variants}
        cpu: dict[str, list[float]] = {v: [] for v in variants}
        for r in range(args.repeats):
            # Interleaved; the order alternates (A B, B A, A B, ...) so a slow drift in machine
            # load does not favour one variant.
            for v in (variants if r % 2 == 0 else variants[::-1]):
                w, c = timed(call[v])
                wall[v].append(w)
                cpu[v].append(c)
            print(f"  {which} bs={bs} repeat {r + 1}/{args.repeats}: "
                  + ", ".join(f"{v} {wall[v][-1]:.2f}s wall {cpu[v][-1]:.2f}s cpu"
                              for v in variants), flush=True)
        res: dict[str, Any] = {
            "median_wall_s": {v: statistics.median(wall[v]) for v in variants},
            "median_cpu_s": {v: statistics.median(cpu[v]) for v in variants},
            "wall_s": wall, "cpu_s": cpu,
        }
        for v in variants:
            if v == "plain":
                continue
            pair_w = [a / b for a, b in zip(wall[v], wall["plain"], strict=True)]
            pair_c = [a / b for a, b in zip(cpu[v], cpu["plain"], strict=True)]
            res[f"ratio_{v}_over_plain"] = {
                "wall_median_of_pairs": statistics.median(pair_w),
                "cpu_median_of_pairs": statistics.median(pair_c),
                "wall_ratio_of_medians": res["median_wall_s"][v] / res["median_wall_s"]["plain"],
                "wall_pairs": pair_w, "cpu_pairs": pair_c,
            }
        if args.fine_rounds:
            res["fine"] = fine_comparison(lm, ds, sites, bs, forward, args.fine_rounds)
            f = res["fine"]
            print(f"  {which} bs={bs} per-batch capture/plain forward: median "
                  f"{f['median_ratio_capture_over_plain_forward']:.3f} over {f['pairs']} pairs",
                  flush=True)
        res["bookkeeping"] = store_costs(lm, ds, sites, tmp)
        res["bookkeeping"]["fraction_of_plain_pass"] = (
            sum(res["bookkeeping"].values()) / res["median_wall_s"]["plain"])
        if args.profile and "extract" in variants:
            prof = cProfile.Profile()
            prof.runcall(call["extract"])
            s = io.StringIO()
            st = pstats.Stats(prof, stream=s)
            st.sort_stats("cumulative").print_stats(30)
            st.sort_stats("tottime").print_stats(20)
            res["profile_extract_top"] = s.getvalue()
            print(s.getvalue())
        rows[bs] = res
    return {
        "model": lm.name if which == "whisper" else "wav2vec2-base-sized (random weights)",
        "source": lm.source, "sites": sites,
        "n_clips": len(clips), "seconds_of_audio": sum(len(c) for c in clips) / SR,
        "by_batch_size": rows,
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--models", default="whisper,w2v2", help="comma list of whisper, w2v2")
    p.add_argument("--clips", type=int, default=8, help="clips per dataset")
    p.add_argument("--min-seconds", type=float, default=4.0)
    p.add_argument("--max-seconds", type=float, default=10.0)
    p.add_argument("--batch-sizes", type=lambda s: [int(x) for x in s.split(",")], default=[4],
                   help="comma list, e.g. 1,4")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--sites", choices=["layers", "all"], default="layers")
    p.add_argument("--variants", default="plain,extract",
                   help="comma list from plain, capture, extract; plain must be included")
    p.add_argument("--fine-rounds", type=int, default=2,
                   help="rounds of per-batch plain-vs-capture pairs on the same inputs (0: off)")
    p.add_argument("--profile", action="store_true", help="cProfile one extra extract pass")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=str(RESULTS / "bench_capture_overhead.json"))
    args = p.parse_args(argv)
    if "plain" not in args.variants.split(","):
        p.error("--variants must include plain")
    torch.set_num_threads(args.threads)
    datasets.disable_progress_bars()
    load_before = os.getloadavg()
    t0 = time.perf_counter()
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for which in args.models.split(","):
            print(f"== {which}", flush=True)
            results[which] = bench_model(which, args, Path(tmp))
    out = {
        "benchmark": "capture_overhead",
        "command": shlex.join([sys.executable.split("/")[-1], *sys.argv]),
        "date": dt.datetime.now().isoformat(timespec="seconds"),
        "parameters": {k: v for k, v in vars(args).items() if k != "out"},
        "torch_threads": torch.get_num_threads(),
        "loadavg_before": load_before, "loadavg_after": os.getloadavg(),
        "cpu_count": os.cpu_count(), "platform": platform.platform(),
        "versions": {"torch": torch.__version__, "datasets": datasets.__version__},
        "total_seconds": time.perf_counter() - t0,
        "target": "extract / plain <= 1.10",
        "results": results,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=1))
    print(f"\nload average before {load_before}, after {out['loadavg_after']}, "
          f"threads {args.threads}, repeats {args.repeats}")
    print(f"{'model':8} {'bs':>3} {'variant':8} {'median wall s':>14} {'median cpu s':>13} "
          f"{'ratio wall':>10} {'ratio cpu':>10}")
    for which, r in results.items():
        for bs, res in r["by_batch_size"].items():
            for v, w in res["median_wall_s"].items():
                rat = res.get(f"ratio_{v}_over_plain")
                rw = f"{rat['wall_median_of_pairs']:.3f}" if rat else "1"
                rc = f"{rat['cpu_median_of_pairs']:.3f}" if rat else "1"
                print(f"{which:8} {bs:>3} {v:8} {w:14.2f} {res['median_cpu_s'][v]:13.2f} "
                      f"{rw:>10} {rc:>10}")
    print(f"wrote {args.out} ({out['total_seconds']:.0f} s)")
    return out


if __name__ == "__main__":
    main()

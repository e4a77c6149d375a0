"""Peak memory of extraction at 1x and 10x dataset size: it should not grow with the dataset.

The parent builds a random-weight model (``build_tiny``, tiny or small) and two datasets of
short synthetic clips (N and 10·N rows; WAV bytes in a ``datasets.Audio`` column, as
``soundlens.data`` builds them), saves them with ``save_to_disk``. Each extraction then runs in
a fresh subprocess that opens its dataset with ``load_from_disk`` (memory-mapped Arrow, as a
user would) and extracts every encoder layer (mean pooling) into a store on disk.

Each child reports:

* ``ru_maxrss``: peak resident set size from ``resource.getrusage(RUSAGE_SELF)`` at the end;
* sampled peaks (every 10 ms from ``/proc/self/status``) of ``VmRSS``, ``RssAnon`` (heap:
  what extraction itself allocates) and ``RssFile`` (file-backed pages: shared libraries and
  the memory-mapped Arrow file, whose touched pages count in RSS although the kernel can drop
  them at any time);
* the same figures just before ``extract`` starts (model loaded, dataset opened), so growth
  during extraction can be told from the fixed cost of torch + transformers.

Target: peak RSS at 10x within 10 % of 1x. ``--scales 10,30`` adds a 30x run to show whether
growth keeps going or levels off.

    python experiments/bench_extract_memory.py                    # 100 vs 1,000 clips of 1 s
    python experiments/bench_extract_memory.py --rows 200 --size small
"""

from __future__ import annotations

import argparse
import datetime as dt
import io
import json
import os
import platform
import resource
import shlex
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

SR = 16000
RESULTS = Path(__file__).resolve().parent / "results"
FIELDS = ("VmRSS", "RssAnon", "RssFile", "RssShmem")


def proc_status() -> dict[str, float]:
    """Current VmRSS / RssAnon / RssFile / RssShmem of this process, MiB."""
    out = {}
    with open("/proc/self/status") as f:
        for line in f:
            key, _, val = line.partition(":")
            if key in FIELDS:
                out[key] = int(val.split()[0]) / 1024
    return out


class PeakSampler(threading.Thread):
    """Samples /proc/self/status every ``interval`` s; ``peak`` holds each field's maximum."""

    def __init__(self, interval: float = 0.01) -> None:
        super().__init__(daemon=True)
        self.interval = interval
        self.peak = proc_status()
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.is_set():
            for k, v in proc_status().items():
                self.peak[k] = max(self.peak.get(k, 0.0), v)
            self._stop_event.wait(self.interval)

    def stop(self) -> dict[str, float]:
        self._stop_event.set()
        self.join()
        for k, v in proc_status().items():
            self.peak[k] = max(self.peak.get(k, 0.0), v)
        return self.peak


def maxrss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


# ----------------------------------------------------------------------------- child
def child(args: argparse.Namespace) -> None:
    import datasets
    import torch

    from soundlens.hooks import extract
    from soundlens.models import load

    torch.set_num_threads(args.threads)
    lm = load(args.model)
    sites = [n for n, s in lm.sites().items() if s.kind == "layer" and n.startswith("encoder.")]
    if args.sites == "all":
        sites = [n for n in lm.sites() if ".heads." not in n]
    ds = datasets.load_from_disk(args.dataset)
    before = {"ru_maxrss": maxrss_mib(), **proc_status()}
    sampler = PeakSampler()
    sampler.start()
    t0 = time.perf_counter()
    store = extract(lm, ds, sites, args.store, pooling="mean", batch_size=args.batch_size,
                    shard_rows=args.shard_rows, progress=False)
    seconds = time.perf_counter() - t0
    peak = sampler.stop()
    assert store.complete and store.rows == len(ds), (store.rows, len(ds))
    print("RESULT " + json.dumps({
        "rows": len(ds), "sites": len(sites), "extract_seconds": seconds,
        "ru_maxrss_mib": maxrss_mib(), "peak_sampled_mib": peak, "before_extract_mib": before,
        "store_shards": len(store.manifest["shards"]),
    }))


# ----------------------------------------------------------------------------- parent
def make_dataset(n: int, seconds: float, seed: int, folder: Path) -> int:
    """Save n clips (noise + a tone) to ``folder``; returns the Arrow bytes on disk."""
    import datasets
    import numpy as np
    import soundfile as sf

    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SR)) / SR
    rows = []
    for _ in range(n):
        x = 0.05 * rng.standard_normal(t.size) + 0.2 * np.sin(2 * np.pi * rng.uniform(100, 2000) * t)
        buf = io.BytesIO()
        sf.write(buf, x.astype(np.float32), SR, format="WAV", subtype="FLOAT")
        rows.append({"bytes": buf.getvalue(), "path": None})
    ds = datasets.Dataset.from_dict({"audio": rows, "clip_id": [f"c{i}" for i in range(n)]})
    ds = ds.cast_column("audio", datasets.Audio(sampling_rate=SR))
    ds.save_to_disk(str(folder))
    return sum(f.stat().st_size for f in folder.glob("*.arrow"))


def prepare(args: argparse.Namespace) -> None:
    """Child mode: build the model and the datasets (kept out of the parent, see run_child)."""
    from soundlens.models.tiny import build_tiny

    tmp = Path(args.tmp)
    build_tiny(args.family, tmp / "model", size=args.size, seed=args.seed)
    sizes = json.loads(args.sizes)
    arrow = {label: make_dataset(n, args.seconds, args.seed, tmp / f"ds-{label}")
             for label, n in sizes.items()}
    print("RESULT " + json.dumps(arrow))


def run_child(args: argparse.Namespace, *extra: str) -> dict[str, Any]:
    """Run this script in a fresh interpreter and return its RESULT line.

    The parent imports nothing heavy (no torch, no datasets) and builds nothing itself: on Linux
    a child's ru_maxrss starts from the parent's RSS at fork (the high-water mark survives
    exec), so a fat parent would hide the child's own peak.
    """
    cmd = [sys.executable, __file__, "--threads", str(args.threads), "--sites", args.sites,
           "--batch-size", str(args.batch_size), "--shard-rows", str(args.shard_rows),
           "--family", args.family, "--size", args.size, "--seconds", str(args.seconds),
           "--seed", str(args.seed), *extra]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"child failed:\n{proc.stderr[-4000:]}")
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")][-1]
    return json.loads(line.removeprefix("RESULT "))


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rows", type=int, default=100, help="rows of the 1x dataset")
    p.add_argument("--scales", type=lambda x: [int(v) for v in x.split(",")], default=[10],
                   help="comma list: bigger datasets of rows*scale rows (e.g. 10,30)")
    p.add_argument("--seconds", type=float, default=1.0, help="clip length")
    p.add_argument("--family", default="wav2vec2")
    p.add_argument("--size", choices=["tiny", "small"], default="tiny")
    p.add_argument("--sites", choices=["layers", "all"], default="layers")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--shard-rows", type=int, default=256)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--repeats", type=int, default=1, help="children per size (1x, 10x, 1x, ...)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=str(RESULTS / "bench_extract_memory.json"))
    # child mode
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--model", help=argparse.SUPPRESS)
    p.add_argument("--dataset", help=argparse.SUPPRESS)
    p.add_argument("--store", help=argparse.SUPPRESS)
    p.add_argument("--prepare", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--tmp", help=argparse.SUPPRESS)
    p.add_argument("--sizes", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        child(args)
        return {}
    if args.prepare:
        prepare(args)
        return {}

    parent_rss = maxrss_mib()
    load_before = os.getloadavg()
    t0 = time.perf_counter()
    sizes = {"1x": args.rows, **{f"{k}x": args.rows * k for k in args.scales}}
    runs: dict[str, list[dict[str, Any]]] = {k: [] for k in sizes}
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        arrow_bytes = run_child(args, "--prepare", "--tmp", tmp, "--sizes", json.dumps(sizes))
        for r in range(args.repeats):
            for label in sizes:  # 1x, 10x, 1x, 10x ... each in a fresh process
                res = run_child(args, "--child", "--model", str(tmp_path / "model"),
                                "--dataset", str(tmp_path / f"ds-{label}"),
                                "--store", str(tmp_path / f"st-{label}-{r}"))
                runs[label].append(res)
                print(f"  {label}: {res['rows']} rows, ru_maxrss {res['ru_maxrss_mib']:.1f} MiB, "
                      f"peak anon {res['peak_sampled_mib']['RssAnon']:.1f} MiB, "
                      f"peak file {res['peak_sampled_mib']['RssFile']:.1f} MiB, "
                      f"{res['extract_seconds']:.1f} s", flush=True)

    def med(label: str, get) -> float:
        # Upper median over repeats (with two runs: the larger, conservative for a peak).
        vals = sorted(get(x) for x in runs[label])
        return vals[len(vals) // 2]

    small, *bigs = sizes
    figures: dict[str, Any] = {}
    for name, get in {
        "ru_maxrss_mib": lambda x: x["ru_maxrss_mib"],
        "peak_vmrss_sampled_mib": lambda x: x["peak_sampled_mib"]["VmRSS"],
        "peak_rss_anon_mib": lambda x: x["peak_sampled_mib"]["RssAnon"],
        "peak_rss_file_mib": lambda x: x["peak_sampled_mib"]["RssFile"],
        "rss_before_extract_mib": lambda x: x["before_extract_mib"]["VmRSS"],
        "anon_growth_during_extract_mib":
            lambda x: x["peak_sampled_mib"]["RssAnon"] - x["before_extract_mib"]["RssAnon"],
        "file_growth_during_extract_mib":
            lambda x: x["peak_sampled_mib"]["RssFile"] - x["before_extract_mib"]["RssFile"],
    }.items():
        a = med(small, get)
        figures[name] = {small: a}
        for big in bigs:
            b = med(big, get)
            figures[name][big] = b
            figures[name][f"ratio_{big}_over_1x"] = b / a if a else None
    out = {
        "benchmark": "extract_memory",
        "command": shlex.join([Path(sys.executable).name, *sys.argv]),
        "date": dt.datetime.now().isoformat(timespec="seconds"),
        "parameters": {k: v for k, v in vars(args).items()
                       if k not in ("out", "child", "model", "dataset", "store", "prepare", "tmp",
                                    "sizes")},
        "rows": sizes, "arrow_bytes_on_disk": arrow_bytes,
        "loadavg_before": load_before, "loadavg_after": os.getloadavg(),
        "cpu_count": os.cpu_count(), "platform": platform.platform(),
        "parent_ru_maxrss_mib": parent_rss,
        "total_seconds": time.perf_counter() - t0,
        "target": "ru_maxrss at 10x within 10 % of 1x",
        "figures": figures, "runs": runs,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=1))
    print(f"\n{'MiB':32} {small:>9} " + " ".join(f"{b:>9} {'ratio':>7}" for b in bigs))
    for name, f in figures.items():
        cells = []
        for b in bigs:
            r = f[f"ratio_{b}_over_1x"]
            cells.append(f"{f[b]:9.1f} {r:7.3f}" if r is not None else f"{f[b]:9.1f} {'-':>7}")
        print(f"{name:32} {f[small]:9.1f} " + " ".join(cells))
    print("arrow on disk: " + ", ".join(f"{k} {v / 2**20:.1f} MiB" for k, v in arrow_bytes.items()))
    print(f"load average before {load_before}, after {out['loadavg_after']}; "
          f"wrote {args.out} ({out['total_seconds']:.0f} s)")
    return out


if __name__ == "__main__":
    main()

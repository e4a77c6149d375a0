"""Benchmark soundlens.data concept rendering: clips per second and audio-seconds per wall-second.

For each (concept, n) it times the whole `soundlens data make` path (sample → render over a fixed
number of worker processes → Dataset → save_to_disk + card) and, separately, rendering alone in
one process. Medians over --repeats. Writes experiments/results/bench_data.json.

    python experiments/bench_data.py                       # 1000-clip music datasets + speech
    python experiments/bench_data.py --quick               # small sizes, for a smoke run
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from soundlens.data.concepts import get_concept, make_dataset, render_clips, save_dataset  # noqa: E402


def bench_make(name: str, n: int, workers: int, repeats: int) -> dict:
    walls, seconds = [], None
    for r in range(repeats):
        out = Path(tempfile.mkdtemp(prefix="bench-data-"))
        try:
            t0 = time.perf_counter()
            ds = make_dataset(name, n=n, seed=r, workers=workers)
            save_dataset(ds, out / name, name, get_concept(name).config_cls(), r)
            walls.append(time.perf_counter() - t0)
            card = json.loads((out / name / "card.json").read_text())
            seconds = card["sizes"]["total_seconds"]
        finally:
            shutil.rmtree(out, ignore_errors=True)
    wall = statistics.median(walls)
    return {
        "concept": name, "n": n, "workers": workers, "repeats": repeats, "wall_s": [round(w, 2) for w in walls],
        "median_wall_s": round(wall, 2), "clips_per_s": round(n / wall, 1), "audio_s": seconds,
        "audio_s_per_wall_s": round(seconds / wall, 1),
    }  # fmt: skip


def bench_render(name: str, n: int, repeats: int) -> dict:
    concept = get_concept(name)
    cfg = concept.config_cls()
    params = concept.sample(cfg, n, np.random.default_rng(0))
    render_clips(concept, cfg, params[:4], workers=1)  # warm: synth/soundfont load, imports
    walls, seconds = [], 0.0
    for _ in range(repeats):
        t0 = time.perf_counter()
        clips = render_clips(concept, cfg, params, workers=1)
        walls.append(time.perf_counter() - t0)
        seconds = sum(len(c) for c in clips) / cfg.sample_rate
    wall = statistics.median(walls)
    return {
        "concept": name, "n": n, "workers": 1, "render_only": True, "median_wall_s": round(wall, 3),
        "clips_per_s": round(n / wall, 1), "audio_s": round(seconds, 1), "audio_s_per_wall_s": round(seconds / wall, 1),
    }  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--out", default=str(ROOT / "experiments" / "results" / "bench_data.json"))
    args = ap.parse_args()
    torch.set_num_threads(1)
    n_music, n_speech = (100, 20) if args.quick else (1000, 200)
    results = {
        "command": " ".join([os.path.relpath(sys.executable, ROOT), *sys.argv]),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
                    "loadavg_before": os.getloadavg()},  # fmt: skip
        "make": [], "render_only": [],
    }
    for name in ("notes", "chords", "tempos"):
        results["render_only"].append(bench_render(name, n_music, args.repeats))
        print(results["render_only"][-1], flush=True)
    for name in ("chords", "notes", "tempos"):
        results["make"].append(bench_make(name, n_music, args.workers, args.repeats))
        print(results["make"][-1], flush=True)
    for name in ("spoken_digits", "speech_rate"):
        results["make"].append(bench_make(name, n_speech, args.workers, 1 if not args.quick else 1))
        print(results["make"][-1], flush=True)
    results["machine"]["loadavg_after"] = os.getloadavg()
    music = [r for r in results["make"] if r["n"] == n_music]
    results["summary"] = {
        "music_1000_clips_max_median_wall_s": max(r["median_wall_s"] for r in music),
        "under_2_minutes": all(r["median_wall_s"] < 120 for r in music),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2))
    print(json.dumps(results["summary"]), "->", args.out)


if __name__ == "__main__":
    main()

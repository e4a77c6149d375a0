"""Probe reports: summary.json a script can read and a layer-curve PNG a person can look at."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from soundlens.probing.sweep import SweepResult


def summarize(result: SweepResult, *, model_sites: list[str], random_sites: dict[str, str],
              feature_baseline: str | None, meta: dict[str, Any]) -> dict[str, Any]:
    """JSON-ready summary: per-site metrics with intervals, baselines, selectivity, best site."""
    rows = {r["site"]: r for r in result.table()}
    primary = result.primary
    best = result.best_site(model_sites)
    per_site = []
    for s in model_sites:
        row = dict(rows[s])
        rnd = random_sites.get(s)
        if rnd:
            row["random_weights"] = rows[rnd][primary]
        per_site.append(row)
    baselines: dict[str, Any] = dict(result.baselines)
    if feature_baseline:
        baselines[feature_baseline] = rows[feature_baseline]
    if random_sites:
        rnd_best = result.best_site(list(random_sites.values()))
        baselines["random_weights_best"] = {"site": rnd_best, **rows[rnd_best]}
    return {
        **meta,
        "task": result.task,
        "metric": primary,
        "classes": result.classes,
        "split": {"how": result.split.how, "train": int(len(result.split.train)),
                  "test": int(len(result.split.test))},
        "control": result.control_how or None,
        "best_site": best,
        "best": rows[best],
        "baselines": baselines,
        "sites": per_site,
    }


def plot_layer_curves(summaries: dict[str, dict[str, Any]], path: str | Path,
                      title: str = "") -> Path:
    """Metric per site for one or more concepts, with baselines and the control drawn."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(summaries)
    fig, axes = plt.subplots(1, n, figsize=(5.2 * n, 4.2), squeeze=False)
    for ax, (concept, s) in zip(axes[0], summaries.items()):
        metric = s["metric"]
        sites = [r["site"] for r in s["sites"]]
        x = np.arange(len(sites))
        vals = np.array([r[metric] for r in s["sites"]])
        ci = np.array([r[f"{metric}_ci"] for r in s["sites"]])
        ax.plot(x, vals, "o-", color="C0", label=f"probe ({metric})")
        ax.fill_between(x, ci[:, 0], ci[:, 1], color="C0", alpha=0.2, label="95% CI")
        if any("random_weights" in r for r in s["sites"]):
            ax.plot(x, [r.get("random_weights", np.nan) for r in s["sites"]], "s--", color="C3",
                    label="random weights")
        if "control_accuracy" in s["sites"][0]:
            ax.plot(x, [r["control_accuracy"] for r in s["sites"]], "x:", color="C7",
                    label="control task")
        base = s["baselines"]
        if "majority" in base:
            ax.axhline(base["majority"]["accuracy"], color="k", lw=1, ls=":", label="majority")
        for name in ("chroma", "mfcc"):
            if name in base:
                ax.axhline(base[name][metric], color="C2", lw=1.5, ls="-.", label=name)
        ax.set_xticks(x, [t.replace("encoder.", "").replace("layers.", "L") for t in sites],
                      rotation=45, ha="right", fontsize=8)
        ax.set_title(f"{concept}: {s.get('label', '')}")
        ax.set_ylabel(metric)
        if metric == "accuracy":
            ax.set_ylim(0, 1.02)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="best")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_json(data: Any, path: str | Path) -> Path:
    path = Path(path)
    path.write_text(json.dumps(data, indent=2, default=_jsonable))
    return path


def _jsonable(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    return str(o)

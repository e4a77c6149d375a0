"""The probe job: model + labelled audio → activations → layer sweep → report on disk.

``probe_dataset`` runs one label column of one dataset; ``probe_concepts`` runs built-in
concept datasets. Everything a run makes lands in its output folder: activation stores (so a
rerun resumes), ``summary.json``, ``layer_curve.png``, probe weights and directions.
"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from safetensors.numpy import save_file

from soundlens.errors import SoundlensError
from soundlens.hooks.extract import example_audio, extract
from soundlens.models.loaded import LoadedModel
from soundlens.probing.baselines import FeatureKind, handcrafted_matrix, randomized
from soundlens.probing.directions import from_probe, mean_difference, pca_of_means
from soundlens.probing.probes import ProbeError, check_labels
from soundlens.probing.report import plot_layer_curves, summarize, write_json
from soundlens.probing.sweep import Task, make_split, sweep

# Built-in concepts for `soundlens probe MODEL` with no dataset: (concept, label, baseline).
DEFAULT_CONCEPTS: dict[str, tuple[str, FeatureKind]] = {
    "notes": ("pitch_class", "chroma"),
    "chords": ("quality", "chroma"),
    "voices": ("voice", "mfcc"),
    "languages": ("language", "mfcc"),
    "tempos": ("bpm", "chroma"),
    "speech_pitch": ("f0_shift", "mfcc"),
}


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_")[-80:]


def default_sites(lm: LoadedModel) -> list[str]:
    """Every layer of the audio encoder (or of the model, when it has no separate encoder)."""
    sites = lm.sites()
    layers = [s for s, v in sites.items() if v.kind == "layer"]
    prefixes = lm.spec.encoder_prefixes
    if prefixes:
        layers = [s for s in layers if s.startswith(prefixes)]
    if not layers:
        layers = [s for s, v in sites.items() if v.kind == "module"]
    if not layers:
        raise SoundlensError(f"{lm.name} exposes no layer sites; pass sites explicitly")
    return layers


def _labels(ds: Any, label: str) -> tuple[np.ndarray, list[str] | None]:
    if label not in ds.column_names:
        raise ProbeError(
            f"no label column {label!r}; the dataset has: {', '.join(ds.column_names)}"
        )
    feat = ds.features[label]
    values = np.asarray(ds[label])
    names = list(feat.names) if hasattr(feat, "names") else None
    return values, names


def infer_task(values: np.ndarray, names: list[str] | None) -> Task:
    """Class labels (strings, ClassLabel, few integers) → classification; else regression."""
    if names is not None or values.dtype.kind in "OUSb":
        return "classification"
    if values.dtype.kind in "iu" and len(np.unique(values)) <= max(20, len(values) // 20):
        return "classification"
    return "regression"


def probe_dataset(
    lm: LoadedModel,
    ds: Any,
    label: str,
    out: str | Path,
    *,
    sites: Sequence[str] | None = None,
    pooling: str = "mean",
    task: Task | None = None,
    groups: str | None = None,
    control_type: str | None = None,
    baseline: FeatureKind | None = None,
    random_baseline: bool = True,
    trim: bool = False,
    batch_size: int = 8,
    seed: int = 0,
    progress: bool = True,
    meta: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Probe every site for ``label`` and write the report into ``out``; returns the summary."""
    t0 = time.perf_counter()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    values, names = _labels(ds, label)
    task = task or infer_task(values, names)
    # Label problems are reported before any extraction: a one-class column, too few examples.
    if task == "classification":
        check_labels(values, n_folds=2)
    elif np.ptp(values.astype(float)) == 0:
        raise ProbeError(f"the label column {label!r} is constant: nothing to probe")
    for col in (groups, control_type):
        if col and col not in ds.column_names:
            raise ProbeError(f"no column {col!r}; the dataset has: {', '.join(ds.column_names)}")
    site_names = [lm.site(s).name for s in (sites or default_sites(lm))]

    store = extract(lm, ds, site_names, out / "activations" / _slug(lm.name), pooling=pooling,
                    batch_size=batch_size, trim=trim, progress=progress)
    rows = store.indices()
    if len(rows) < 4:
        raise ProbeError(f"only {len(rows)} usable clips after skipping bad ones")
    features = {s: store.array(s) for s in site_names}
    random_sites: dict[str, str] = {}
    if random_baseline:
        rnd = randomized(lm, seed)
        rstore = extract(rnd, ds, site_names, out / "activations" / _slug(rnd.name),
                         pooling=pooling, batch_size=batch_size, trim=trim, progress=progress)
        if not np.array_equal(rstore.indices(), rows):
            raise SoundlensError("random-weight extraction kept different rows")
        for s in site_names:
            random_sites[s] = f"random:{s}"
            features[random_sites[s]] = rstore.array(s)
    if baseline:
        clips = []
        for i in rows:
            audio, sr = example_audio(ds[int(i)]["audio"])
            clips.append(audio)
        features[baseline] = handcrafted_matrix(clips, sr, baseline)

    y = values[rows]
    if task == "classification" and names is not None:
        y = np.asarray(names, dtype=object)[y.astype(int)]
    g = np.asarray(ds[groups])[rows] if groups else None
    types = np.asarray(ds[control_type])[rows] if control_type else None
    split = make_split(y if task == "classification" else y.astype(float), groups=g, seed=seed,
                       task=task)
    result = sweep(features, y, task=task, split=split, groups=g, control_types=types, seed=seed)

    summary = summarize(
        result, model_sites=site_names, random_sites=random_sites,
        feature_baseline=baseline,
        meta={
            "model": lm.name, "model_source": lm.source, "label": label,
            "pooling": pooling, "rows": int(len(rows)), "skipped": store.skipped,
            "input": ("trimmed to the clip (approximation)" if trim
                      else "full model input window"),
            "dataset_fingerprint": store.manifest["key"]["dataset"],
            **(meta or {}),
        },
    )
    _save_probes_and_directions(result, features, y, task, summary, out)
    summary["seconds"] = round(time.perf_counter() - t0, 1)
    write_json(summary, out / "summary.json")
    plot_layer_curves({meta.get("concept", label) if meta else label: summary},
                      out / "layer_curve.png", title=f"{lm.name}: {label}")
    return summary


def _save_probes_and_directions(result: Any, features: dict[str, np.ndarray], y: np.ndarray,
                                task: Task, summary: dict[str, Any], out: Path) -> None:
    tensors = {}
    for s, p in result.probes.items():
        tensors[f"{s}/coef"] = p["coef"].astype(np.float32)
        tensors[f"{s}/intercept"] = np.asarray(p["intercept"], dtype=np.float32)
    if tensors:
        save_file(tensors, str(out / "probes.safetensors"))
    best = summary["best_site"]
    x = features[best][result.split.train]
    prov = {"model": summary["model"], "model_source": summary["model_source"],
            "site": best, "label": summary["label"], "pooling": summary["pooling"],
            "dataset_fingerprint": summary["dataset_fingerprint"]}
    labels = [str(c) for c in result.classes] if result.classes else [summary["label"]]
    made = [from_probe(best, result.probes[best]["coef"], x, labels, prov)]
    if task == "classification":
        y_train = np.asarray(y)[result.split.train].astype(str)
        made += [mean_difference(best, x, y_train, prov), pca_of_means(best, x, y_train, prov)]
    files = []
    for d in made:
        path = d.save(out / "directions" / f"{_slug(best)}.{d.method}")
        files.append(str(path.relative_to(out)))
    summary["directions"] = files


def probe_concepts(
    lm: LoadedModel,
    out: str | Path,
    *,
    concepts: Sequence[str] = ("notes", "chords", "voices"),
    n: int = 240,
    seed: int = 0,
    **kwargs: Any,
) -> dict[str, Any]:
    """Probe built-in concept datasets rendered at the model's sample rate; one report each
    plus a combined plot and summary."""
    from soundlens.data import get_concept, load_concept

    out = Path(out)
    summaries: dict[str, dict[str, Any]] = {}
    for name in concepts:
        concept = get_concept(name)
        label, baseline = DEFAULT_CONCEPTS.get(name, (concept.target, (
            "chroma" if concept.domain == "music" else "mfcc")))
        ds = load_concept(name, n=n, seed=seed, sample_rate=lm.sample_rate)
        summaries[name] = probe_dataset(lm, ds, label, out / name, baseline=baseline, seed=seed,
                                        meta={"concept": name}, **kwargs)
    plot_layer_curves(summaries, out / "layer_curves.png", title=f"{lm.name}: built-in concepts")
    combined = {
        "model": lm.name,
        "concepts": {
            k: {"label": s["label"], "metric": s["metric"], "best_site": s["best_site"],
                "best": s["best"][s["metric"]], "best_ci": s["best"][f"{s['metric']}_ci"],
                "baselines": s["baselines"], "input": s["input"], "rows": s["rows"],
                "seconds": s["seconds"]}
            for k, s in summaries.items()
        },
    }
    write_json(combined, out / "summary.json")
    return combined

"""Concept registry: name → generator, label set, task type, default split; and dataset building.

A concept is a parameter sampler plus a renderer. ``sample(config, n, rng)`` draws ``n``
parameter dicts (balanced over the label grid, nuisance parameters such as instrument or voice
drawn at random); ``render(params, config)`` turns one dict into mono float32 audio at
``config.sample_rate``. Labels are columns of the parameter dicts: they are true by construction.
Rendering is deterministic given the parameters, so the dataset depends only on the seed, never on
how the clips were spread over worker processes.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import multiprocessing as mp
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from soundlens.data.errors import DataError, UnknownConceptError
from soundlens.errors import closest

if TYPE_CHECKING:
    import datasets

GENERATOR_VERSION = "1"  # bump when rendering changes: invalidates load_concept's cache


# ----------------------------------------------------------------------------- configs
@dataclass(frozen=True)
class GeneratorConfig:
    """Base of every concept's config. Frozen; ``from_dict`` rejects unknown fields."""

    sample_rate: int = 22050

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]

    @classmethod
    def from_dict(cls, values: dict[str, Any] | None = None, **more: Any) -> GeneratorConfig:
        values = {**(values or {}), **more}
        names = cls.field_names()
        unknown = [k for k in values if k not in names]
        if unknown:
            hints = "; ".join(
                f"'{k}'" + (f" (did you mean {', '.join(closest(k, names, n=2))}?)" if closest(k, names, n=2) else "")
                for k in unknown
            )
            raise DataError(f"unknown field(s) for {cls.__name__}: {hints}. Valid fields: {', '.join(names)}")
        fixed = {}
        defaults = {f.name: f.default for f in dataclasses.fields(cls)}
        for k, v in values.items():
            fixed[k] = _coerce(k, v, defaults[k])
        cfg = cls(**fixed)
        cfg.validate()
        return cfg

    def validate(self) -> None:
        if int(self.sample_rate) < 4000:
            raise DataError(f"sample_rate must be at least 4000 Hz, got {self.sample_rate}")

    def to_dict(self) -> dict[str, Any]:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(self).items()}


def _coerce(name: str, value: Any, default: Any) -> Any:
    """Turn CLI strings and JSON lists into the default's type (tuples stay tuples)."""
    if isinstance(value, str) and not isinstance(default, str) and default is not None:
        text = value.strip()
        try:
            value = json.loads(text)
        except json.JSONDecodeError:
            value = [p.strip() for p in text.split(",")] if "," in text or isinstance(default, tuple) else text
    if isinstance(default, tuple):
        if not isinstance(value, (list, tuple)):
            value = [value]
        kind = type(default[0]) if default else None
        out = []
        for item in value:
            try:
                out.append(kind(item) if kind in (int, float) else item)
            except (TypeError, ValueError) as err:
                raise DataError(f"field '{name}': cannot read {item!r} as {kind.__name__}") from err
        return tuple(out)
    if isinstance(default, bool):
        if isinstance(value, str):
            return value.lower() in ("1", "true", "yes")
        return bool(value)
    if isinstance(default, (int, float)):
        try:
            return type(default)(value)
        except (TypeError, ValueError) as err:
            raise DataError(f"field '{name}': cannot read {value!r} as {type(default).__name__}") from err
    return value


# ----------------------------------------------------------------------------- concept spec
Task = Literal["classification", "regression"]


@dataclass(frozen=True)
class Concept:
    """One registered concept: how to sample parameters, render them, and type the labels."""

    name: str
    domain: Literal["music", "speech"]
    task: Task
    target: str
    description: str
    config_cls: type[GeneratorConfig]
    sample: Callable[[Any, int | None, np.random.Generator], list[dict]]
    render: Callable[[dict, Any], np.ndarray]
    columns: Callable[[Any], dict[str, Any]]  # config -> {column: datasets feature}
    split: Literal["stratified", "extrapolation"] = "stratified"
    sources: tuple[str, ...] = ()  # sound sources and their licences, for the dataset card
    check_tools: Callable[[Any], None] | None = None  # raises MissingToolError

    def config(self, values: dict[str, Any] | None = None, **more: Any) -> GeneratorConfig:
        return self.config_cls.from_dict(values, **more)

    def label_set(self, config: GeneratorConfig | None = None) -> list[str] | str:
        """Class names of the target, or a range description for regression."""
        config = config or self.config_cls()
        feat = self.columns(config)[self.target]
        if hasattr(feat, "names"):
            return list(feat.names)
        lo, hi = _regression_range(self, config)
        return f"{lo:g}..{hi:g}"

    def label_columns(self, config: GeneratorConfig | None = None) -> list[str]:
        return list(self.columns(config or self.config_cls()))


def _regression_range(concept: Concept, config: GeneratorConfig) -> tuple[float, float]:
    for attr in ("bpm_range", "semitones", "rates"):
        if hasattr(config, attr):
            vals = getattr(config, attr)
            return float(min(vals)), float(max(vals))
    return float("nan"), float("nan")


_REGISTRY: dict[str, Concept] = {}


def register(concept: Concept) -> Concept:
    _REGISTRY[concept.name] = concept
    return concept


def _load_registry() -> dict[str, Concept]:
    from soundlens.data import music, speech  # noqa: F401  (they register on import)

    return _REGISTRY


def list_concepts(domain: str | None = None) -> list[Concept]:
    return [c for c in _load_registry().values() if domain is None or c.domain == domain]


def get_concept(name: str) -> Concept:
    reg = _load_registry()
    if name not in reg:
        near = closest(name, reg)
        hint = f" Did you mean: {', '.join(near)}?" if near else ""
        raise UnknownConceptError(
            f"unknown concept '{name}'.{hint} Known concepts: {', '.join(sorted(reg))} "
            "(`soundlens data list` shows their label sets)."
        )
    return reg[name]


# ----------------------------------------------------------------------------- sampling helpers
def balanced(grid: Sequence[Any], n: int | None, rng: np.random.Generator) -> list[Any]:
    """``n`` items cycling through shuffled copies of ``grid`` (each label as even as possible).

    ``n=None`` gives the whole grid once, shuffled.
    """
    grid = list(grid)
    if not grid:
        raise DataError("the label grid is empty: the config leaves no values to draw")
    if n is None:
        n = len(grid)
    if n < 1:
        raise DataError(f"n must be at least 1, got {n}")
    out: list[Any] = []
    while len(out) < n:
        out.extend(grid[i] for i in rng.permutation(len(grid)))
    return out[:n]


# ----------------------------------------------------------------------------- rendering
def _render_task(task: tuple[str, GeneratorConfig, dict]) -> np.ndarray:
    name, config, params = task
    return get_concept(name).render(params, config)


def _default_workers() -> int:
    return max(1, min(4, os.cpu_count() or 1))


def render_clips(
    concept: Concept, config: GeneratorConfig, params: list[dict], workers: int | None = None, progress: bool = False
) -> list[np.ndarray]:
    """Render every parameter dict, in order, over ``workers`` processes (each keeps one synth)."""
    workers = _default_workers() if workers is None else max(1, int(workers))
    if "torch" in sys.modules:
        # A forked child of a process whose torch/OpenMP threads have run deadlocks inside
        # FluidSynth (seen here), and spawn/forkserver would re-import the caller's script:
        # next to a loaded model, render in this process (still hundreds of clips a second).
        workers = 1
    tasks = [(concept.name, config, p) for p in params]
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(tasks), desc=f"render {concept.name}", unit="clip")
    out: list[np.ndarray] = []
    if workers == 1 or len(tasks) < 8:
        for t in tasks:
            out.append(_render_task(t))
            if bar:
                bar.update()
    else:
        method = "fork" if sys.platform.startswith("linux") else "spawn"
        chunk = max(1, min(32, len(tasks) // (workers * 4)))
        with mp.get_context(method).Pool(workers) as pool:
            for clip in pool.imap(_render_task, tasks, chunksize=chunk):
                out.append(clip)
                if bar:
                    bar.update()
    if bar:
        bar.close()
    return out


def wav_bytes(audio: np.ndarray, sample_rate: int, subtype: str = "PCM_16") -> bytes:
    import soundfile as sf

    buf = io.BytesIO()
    sf.write(buf, np.asarray(audio, dtype=np.float32), int(sample_rate), format="WAV", subtype=subtype)
    return buf.getvalue()


def build_dataset(
    audio: list[np.ndarray], sample_rate: int, columns: dict[str, list], features: dict[str, Any]
) -> datasets.Dataset:
    """A Dataset with an ``audio`` column (WAV bytes, ``datasets.Audio(sampling_rate)``) + labels."""
    import datasets

    feats = datasets.Features({"audio": datasets.Audio(sampling_rate=int(sample_rate)), **features})
    data = {"audio": [{"bytes": wav_bytes(a, sample_rate), "path": None} for a in audio]}
    for col in features:
        vals = columns[col]
        feat = features[col]
        if isinstance(feat, datasets.ClassLabel):
            vals = [feat.str2int(v) if isinstance(v, str) else int(v) for v in vals]
        data[col] = vals
    return datasets.Dataset.from_dict(data, features=feats)


def make_dataset(
    name: str,
    n: int | None = None,
    seed: int = 0,
    sample_rate: int | None = None,
    config: GeneratorConfig | dict | None = None,
    workers: int | None = None,
    progress: bool = False,
) -> datasets.Dataset:
    """Render ``n`` clips of concept ``name`` (``n=None``: the whole label grid once).

    The same (name, config, n, seed) always gives the same dataset.
    """
    concept = get_concept(name)
    cfg = _resolve_config(concept, config, sample_rate)
    if concept.check_tools:
        concept.check_tools(cfg)
    rng = np.random.default_rng(int(seed))
    params = concept.sample(cfg, n, rng)
    clips = render_clips(concept, cfg, params, workers=workers, progress=progress)
    feats = concept.columns(cfg)
    columns = {col: [p[col] for p in params] for col in feats}
    ds = build_dataset(clips, cfg.sample_rate, columns, feats)
    ds.info.description = json.dumps(
        {"concept": name, "n": len(params), "seed": int(seed), "config": cfg.to_dict(), "version": GENERATOR_VERSION}
    )
    return ds


def _resolve_config(concept: Concept, config: GeneratorConfig | dict | None, sample_rate: int | None) -> GeneratorConfig:
    if config is None:
        cfg = concept.config_cls()
    elif isinstance(config, dict):
        cfg = concept.config(config)
    elif isinstance(config, concept.config_cls):
        cfg = config
    else:
        raise DataError(f"config for '{concept.name}' must be a {concept.config_cls.__name__} or a dict")
    if sample_rate is not None:
        cfg = dataclasses.replace(cfg, sample_rate=int(sample_rate))
    cfg.validate()
    return cfg


# ----------------------------------------------------------------------------- splits
def default_split(ds: datasets.Dataset, name: str, test_size: float = 0.3, seed: int = 0) -> datasets.DatasetDict:
    """The concept's default train/test split.

    Classification: stratified on the target. Regression (tempos): SynTheory's extrapolation
    split, train on the middle 70% of the target's range, test on the lowest and highest 15%.
    """
    import datasets

    concept = get_concept(name)
    if concept.split == "extrapolation":
        y = np.asarray(ds[concept.target], dtype=float)
        lo, hi = np.quantile(y, [test_size / 2, 1 - test_size / 2]) if len(y) else (0, 0)
        # by range, not by rank, when the dataset covers the configured range
        cfg = json.loads(ds.info.description or "{}").get("config", {})
        if "bpm_range" in cfg:
            a, b = cfg["bpm_range"]
            lo, hi = a + (b - a) * test_size / 2, b - (b - a) * test_size / 2
        inside = (y >= lo) & (y <= hi)
        return datasets.DatasetDict(
            train=ds.select(np.flatnonzero(inside)), test=ds.select(np.flatnonzero(~inside))
        )
    return ds.train_test_split(test_size=test_size, seed=seed, stratify_by_column=concept.target)


# ----------------------------------------------------------------------------- cache + card
def cache_key(name: str, config: GeneratorConfig, n: int | None, seed: int) -> str:
    blob = json.dumps(
        {"concept": name, "config": config.to_dict(), "n": n, "seed": int(seed), "version": GENERATOR_VERSION},
        sort_keys=True,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


def default_cache_dir() -> Path:
    env = os.environ.get("SOUNDLENS_CACHE")
    return Path(env) / "concepts" if env else Path.home() / ".cache" / "soundlens" / "concepts"


def load_concept(
    name: str,
    n: int | None = None,
    seed: int = 0,
    sample_rate: int | None = None,
    config: GeneratorConfig | dict | None = None,
    cache_dir: str | Path | None = None,
    workers: int | None = None,
) -> datasets.Dataset:
    """``make_dataset`` with an on-disk cache keyed by a hash of (concept, config, n, seed, rate)."""
    import datasets

    concept = get_concept(name)
    cfg = _resolve_config(concept, config, sample_rate)
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    path = root / f"{name}-{cache_key(name, cfg, n, seed)}"
    if (path / "dataset_info.json").exists():
        return datasets.load_from_disk(str(path))
    ds = make_dataset(name, n=n, seed=seed, config=cfg, workers=workers)
    save_dataset(ds, path, name, cfg, seed)
    return datasets.load_from_disk(str(path))


def save_dataset(ds: datasets.Dataset, out: str | Path, name: str, config: GeneratorConfig, seed: int) -> Path:
    """save_to_disk plus README.md (dataset card) and card.json, written atomically."""
    import shutil
    import tempfile

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    try:
        ds.save_to_disk(str(tmp))
        card = dataset_card(name, config, seed, ds)
        (tmp / "card.json").write_text(json.dumps(card, indent=2))
        (tmp / "README.md").write_text(card_markdown(card))
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def dataset_card(name: str, config: GeneratorConfig, seed: int, ds: datasets.Dataset) -> dict[str, Any]:
    concept = get_concept(name)
    durations = None
    try:
        import soundfile as sf

        tab = ds.data.column("audio").to_pylist()
        durations = [sf.info(io.BytesIO(r["bytes"])).duration for r in tab]
    except Exception:  # pragma: no cover - card is best effort about durations
        pass
    return {
        "concept": name,
        "domain": concept.domain,
        "task": concept.task,
        "target": concept.target,
        "description": concept.description,
        "label_set": concept.label_set(config),
        "label_columns": concept.label_columns(config),
        "generator": {"config": config.to_dict(), "version": GENERATOR_VERSION, "seed": int(seed)},
        "sizes": {
            "n": len(ds),
            "sample_rate": int(config.sample_rate),
            "total_seconds": round(float(sum(durations)), 2) if durations else None,
            "clip_seconds": [round(min(durations), 3), round(max(durations), 3)] if durations else None,
        },
        "default_split": (
            "extrapolation: train on the middle 70% of the target range, test on the extremes"
            if concept.split == "extrapolation"
            else "stratified random 70/30 on the target"
        ),
        "sources": list(concept.sources),
    }


def card_markdown(card: dict[str, Any]) -> str:
    labels = card["label_set"]
    labels_txt = ", ".join(map(str, labels)) if isinstance(labels, list) else str(labels)
    lines = [
        "---",
        f"license: {'mit' if card['domain'] == 'music' else 'other'}",
        f"pretty_name: soundlens {card['concept']}",
        "tags: [soundlens, synthetic, probing]",
        "---",
        f"# soundlens concept dataset: {card['concept']}",
        "",
        card["description"],
        "",
        f"- domain: {card['domain']}; task: {card['task']}; target column: `{card['target']}`",
        f"- label set: {labels_txt}",
        f"- label columns: {', '.join(card['label_columns'])}",
        f"- clips: {card['sizes']['n']} at {card['sizes']['sample_rate']} Hz, "
        f"{card['sizes']['total_seconds']} s in total, clip length {card['sizes']['clip_seconds']} s",
        f"- seed: {card['generator']['seed']}; generator version {card['generator']['version']}",
        f"- default split: {card['default_split']}",
        "",
        "Labels are the generator's parameters (true by construction; the test suite checks a sample",
        "of every concept with an independent measurement).",
        "",
        "## Generator parameters",
        "```",
        *[f"{k}: {json.dumps(v)}" for k, v in card["generator"]["config"].items()],
        "```",
        "",
        "## Sound sources and licences",
        *[f"- {s}" for s in card["sources"]],
        "",
        "Reproduce: `soundlens data make "
        f"{card['concept']} --n {card['sizes']['n']} --seed {card['generator']['seed']} --out DIR`"
        " (plus `--set key=value` for any parameter above that differs from the default).",
        "",
    ]
    return "\n".join(lines)


__all__ = [
    "Concept",
    "GeneratorConfig",
    "balanced",
    "build_dataset",
    "default_split",
    "get_concept",
    "list_concepts",
    "load_concept",
    "make_dataset",
    "register",
    "render_clips",
    "save_dataset",
]


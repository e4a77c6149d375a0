"""Any audio a user has → a ``datasets.Dataset``: mono, at the model's rate, plus label columns.

Sources (``load_audio``):
- a folder + a CSV of labels (``labels="labels.csv"``, one row per file, a file column);
- a CSV file alone (paths relative to the CSV's folder);
- a folder without a CSV: ``datasets``' audiofolder (labels from subfolder names or metadata.csv);
- a ``datasets.Dataset`` / ``DatasetDict`` split with an audio column;
- a Hugging Face hub id (``"org/name"``, needs the hub);
- in memory: ``from_arrays(arrays, sample_rate, labels)``.

Every clip is decoded, mixed to mono, resampled, checked (unreadable, empty, NaN/inf, silent →
skipped and reported by name, with a ``SkippedAudioWarning``) and cut by a ``ClipPolicy``.
"""

from __future__ import annotations

import csv
import re
import io
import os
import warnings
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from soundlens.data.errors import DataError, SkippedAudioWarning
from soundlens.errors import AudioInputError, closest

if TYPE_CHECKING:
    import datasets

AUDIO_EXTENSIONS = (".wav", ".flac", ".mp3", ".ogg", ".opus", ".m4a", ".aac", ".aiff", ".aif", ".wma", ".webm")
FILE_COLUMNS = ("file", "file_name", "filename", "path", "audio", "filepath")


@dataclass(frozen=True)
class ClipPolicy:
    """How long clips are cut.

    ``mode="crop"`` keeps one window of ``max_seconds`` (``crop_at`` start, center or random with
    ``seed``); ``mode="chunk"`` splits into windows of ``max_seconds`` every ``hop_seconds``
    (default: no overlap), adding ``chunk_index`` and ``start_seconds`` columns; ``mode="none"``
    keeps clips whole. Clips or last chunks shorter than ``min_seconds`` are dropped (and reported).
    """

    mode: Literal["none", "crop", "chunk"] = "crop"
    max_seconds: float | None = 10.0
    crop_at: Literal["start", "center", "random"] = "start"
    hop_seconds: float | None = None
    min_seconds: float = 0.0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.mode not in ("none", "crop", "chunk"):
            raise DataError(f"ClipPolicy.mode must be 'none', 'crop' or 'chunk', got {self.mode!r}")
        if self.crop_at not in ("start", "center", "random"):
            raise DataError(f"ClipPolicy.crop_at must be 'start', 'center' or 'random', got {self.crop_at!r}")
        if self.mode != "none" and (self.max_seconds is None or self.max_seconds <= 0):
            raise DataError(f"ClipPolicy(mode={self.mode!r}) needs max_seconds > 0")
        if self.hop_seconds is not None and self.hop_seconds <= 0:
            raise DataError("ClipPolicy.hop_seconds must be > 0")

    def apply(self, audio: np.ndarray, sample_rate: int, key: str = "") -> list[tuple[float, np.ndarray]]:
        """[(start_seconds, window), ...] for one clip."""
        n = len(audio)
        min_n = int(round(self.min_seconds * sample_rate))
        if self.mode == "none" or n <= int(round((self.max_seconds or 0) * sample_rate)):
            return [(0.0, audio)] if n >= min_n else []
        win = int(round(self.max_seconds * sample_rate))
        if self.mode == "crop":
            if self.crop_at == "start":
                start = 0
            elif self.crop_at == "center":
                start = (n - win) // 2
            else:  # random, but reproducible per clip
                seed = np.frombuffer(key.encode()[:64].ljust(8, b"\0"), dtype=np.uint8).sum() + self.seed
                start = int(np.random.default_rng(int(seed)).integers(0, n - win + 1))
            return [(start / sample_rate, audio[start : start + win])]
        hop = int(round((self.hop_seconds or self.max_seconds) * sample_rate))
        out = []
        for start in range(0, n, hop):
            piece = audio[start : start + win]
            if len(piece) >= max(min_n, 1):
                out.append((start / sample_rate, piece))
            if start + win >= n:
                break
        return out


@dataclass
class LoadReport:
    """What was loaded and what was skipped (by name, with the reason)."""

    loaded: int = 0
    rows: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)

    def __str__(self) -> str:
        lines = [f"loaded {self.loaded} clip(s) into {self.rows} row(s); skipped {len(self.skipped)}"]
        lines += [f"  skipped {name}: {why}" for name, why in self.skipped]
        return "\n".join(lines)


# ----------------------------------------------------------------------------- decoding + checks
def decode_audio(source: str | os.PathLike | bytes, sample_rate: int) -> np.ndarray:
    """Decode a file (or its bytes) to mono float32 at ``sample_rate``. Raises AudioInputError."""
    import soundfile as sf

    name = "<bytes>" if isinstance(source, bytes) else str(source)
    try:
        data = io.BytesIO(source) if isinstance(source, bytes) else str(source)
        audio, sr = sf.read(data, dtype="float32", always_2d=True)
        audio = audio.mean(axis=1)
    except Exception as sf_err:  # formats libsndfile cannot read: try FFmpeg through torchcodec
        try:
            from torchcodec.decoders import AudioDecoder

            dec = AudioDecoder(source if isinstance(source, bytes) else str(source), sample_rate=int(sample_rate), num_channels=1)
            samples = dec.get_all_samples()
            audio, sr = samples.data.numpy().reshape(-1).astype(np.float32), int(samples.sample_rate)
        except Exception as err:
            raise AudioInputError(f"cannot decode {name}: {sf_err}; FFmpeg: {err}") from err
    return resample(audio, sr, sample_rate)


def resample(audio: np.ndarray, orig_sr: int, target_sr: int) -> np.ndarray:
    audio = np.asarray(audio, dtype=np.float32)
    if int(orig_sr) == int(target_sr) or audio.size == 0:
        return audio
    import librosa

    return librosa.resample(audio, orig_sr=int(orig_sr), target_sr=int(target_sr), res_type="soxr_hq").astype(np.float32)


def check_audio(audio: np.ndarray, name: str = "audio", silence_threshold: float = 1e-4) -> np.ndarray:
    """Raise AudioInputError for empty, non-finite or silent audio; return it as float32 mono."""
    audio = np.asarray(audio, dtype=np.float32)
    if audio.ndim == 2:  # (channels, samples) or (samples, channels): mix to mono
        audio = audio.mean(axis=0 if audio.shape[0] < audio.shape[1] else 1)
    if audio.ndim != 1:
        raise AudioInputError(f"{name}: expected mono or (channels, samples) audio, got shape {audio.shape}")
    if audio.size == 0:
        raise AudioInputError(f"{name}: empty (0 samples)")
    if not np.all(np.isfinite(audio)):
        raise AudioInputError(f"{name}: contains NaN or infinite samples")
    if float(np.max(np.abs(audio))) < silence_threshold:
        raise AudioInputError(f"{name}: silent (peak below {silence_threshold:g})")
    return audio


# ----------------------------------------------------------------------------- building
def _build(
    items: Iterable[tuple[str, Any, int | None, dict]],
    sample_rate: int,
    policy: ClipPolicy,
    label_features: dict | None,
    silence_threshold: float,
) -> tuple[datasets.Dataset, LoadReport]:
    """items: (name, file path | bytes | array, source rate or None for files, labels)."""
    import datasets

    from soundlens.data.concepts import wav_bytes

    report = LoadReport()
    audio_col, sources, starts, chunk_idx = [], [], [], []
    label_cols: dict[str, list] = {}
    label_order: list[str] | None = None
    for name, src, src_rate, labels in items:
        try:
            if isinstance(src, np.ndarray) or isinstance(src, list):
                audio = check_audio(np.asarray(src, dtype=np.float32), name, silence_threshold)
                audio = resample(audio, int(src_rate), sample_rate)
            else:
                audio = decode_audio(src, sample_rate)
            audio = check_audio(audio, name, silence_threshold)
        except AudioInputError as err:
            report.skipped.append((name, str(err).removeprefix(f"{name}: ")))
            continue
        pieces = policy.apply(audio, sample_rate, key=name)
        if not pieces:
            report.skipped.append((name, f"shorter than min_seconds={policy.min_seconds:g}"))
            continue
        report.loaded += 1
        if label_order is None:
            label_order = list(labels)
            label_cols = {k: [] for k in label_order}
        for i, (start, piece) in enumerate(pieces):
            audio_col.append({"bytes": wav_bytes(piece, sample_rate, subtype="FLOAT"), "path": None})
            sources.append(name)
            starts.append(float(start))
            chunk_idx.append(i)
            for k in label_order:
                label_cols[k].append(labels.get(k))
    report.rows = len(audio_col)
    if report.skipped:
        names = ", ".join(f"{n} ({why})" for n, why in report.skipped)
        warnings.warn(f"skipped {len(report.skipped)} file(s): {names}", SkippedAudioWarning, stacklevel=3)
    if not audio_col:
        raise AudioInputError(f"no usable audio: every input was skipped.\n{report}")
    data: dict[str, list] = {"audio": audio_col, "source": sources, **label_cols}
    feats: dict[str, Any] = {"audio": datasets.Audio(sampling_rate=int(sample_rate)), "source": datasets.Value("string")}
    if policy.mode == "chunk":
        data["chunk_index"], data["start_seconds"] = chunk_idx, starts
        feats["chunk_index"], feats["start_seconds"] = datasets.Value("int32"), datasets.Value("float32")
    elif policy.mode == "crop":
        data["start_seconds"] = starts
        feats["start_seconds"] = datasets.Value("float32")
    for k in label_cols:
        if label_features and k in label_features:
            feats[k] = label_features[k]
            if isinstance(feats[k], datasets.ClassLabel):
                data[k] = [feats[k].str2int(v) if isinstance(v, str) else v for v in data[k]]
    ds = datasets.Dataset.from_dict(data)
    for k, feat in feats.items():
        ds = ds.cast_column(k, feat)
    return ds, report


# ----------------------------------------------------------------------------- sources
def from_arrays(
    arrays: Sequence[np.ndarray],
    sample_rate: int | Sequence[int],
    labels: dict[str, Sequence] | None = None,
    target_rate: int = 16000,
    policy: ClipPolicy | None = None,
    names: Sequence[str] | None = None,
    silence_threshold: float = 1e-4,
    return_report: bool = False,
):
    """In-memory arrays (each at ``sample_rate``, or one rate per array) → Dataset."""
    labels = dict(labels or {})
    n = len(arrays)
    for k, v in labels.items():
        if len(v) != n:
            raise DataError(f"label column '{k}' has {len(v)} values for {n} arrays")
    rates = [int(sample_rate)] * n if np.isscalar(sample_rate) else [int(r) for r in sample_rate]
    names = list(names) if names is not None else [f"array[{i}]" for i in range(n)]
    items = ((names[i], np.asarray(arrays[i]), rates[i], {k: labels[k][i] for k in labels}) for i in range(n))
    ds, report = _build(items, int(target_rate), policy or ClipPolicy(mode="none", max_seconds=None), None, silence_threshold)
    return (ds, report) if return_report else ds


def _read_csv(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            rows = list(reader)
            return list(reader.fieldnames or []), rows
    except (OSError, csv.Error, UnicodeDecodeError) as err:
        raise DataError(f"cannot read the label CSV {path}: {err}") from err


def _csv_items(
    folder: Path, csv_path: Path, label_columns: Sequence[str] | None, file_column: str | None
) -> tuple[list[tuple[str, Any, None, dict]], list[str]]:
    header, rows = _read_csv(csv_path)
    if file_column is None:
        found = [c for c in FILE_COLUMNS if c in header]
        if not found:
            raise DataError(
                f"{csv_path} has no file column: expected one of {', '.join(FILE_COLUMNS)} (columns: "
                f"{', '.join(header)}); pass file_column=NAME"
            )
        file_column = found[0]
    elif file_column not in header:
        raise DataError(f"file column '{file_column}' is not in {csv_path} (columns: {', '.join(header)})")
    if label_columns is None:
        label_columns = [c for c in header if c != file_column]
    missing = [c for c in label_columns if c not in header]
    if missing:
        hints = "; ".join(f"'{m}'" + (f" (did you mean {closest(m, header, n=1)[0]!r}?)" if closest(m, header, n=1) else "") for m in missing)
        raise DataError(f"label column(s) {hints} not in {csv_path}; its columns are: {', '.join(header)}")
    items = []
    for row in rows:
        rel = row[file_column]
        path = Path(rel) if os.path.isabs(rel) else folder / rel
        labels = {c: _auto_type(row[c]) for c in label_columns}
        if not path.is_file():
            items.append((rel, f"{path}", None, labels))  # decode fails → reported as unreadable
        else:
            items.append((rel, str(path), None, labels))
    return items, list(label_columns)


def _auto_type(value: str) -> Any:
    for kind in (int, float):
        try:
            return kind(value)
        except (TypeError, ValueError):
            pass
    return value


def _labels_as_classes(items: list, label_columns: Sequence[str]) -> dict:
    """String label columns become ClassLabel features (sorted names); numbers stay numbers."""
    import datasets

    feats = {}
    for col in label_columns:
        vals = [it[3].get(col) for it in items]
        if vals and all(isinstance(v, str) for v in vals):
            feats[col] = datasets.ClassLabel(names=sorted(set(vals)))
    return feats


def load_audio(
    source: Any,
    sample_rate: int = 16000,
    *,
    labels: str | os.PathLike | None = None,
    label_columns: Sequence[str] | None = None,
    file_column: str | None = None,
    audio_column: str = "audio",
    split: str = "train",
    name: str | None = None,
    policy: ClipPolicy | None = None,
    silence_threshold: float = 1e-4,
    class_labels: bool = True,
    return_report: bool = False,
):
    """Load ``source`` (see the module docstring) as a Dataset of mono audio at ``sample_rate``.

    ``policy`` (default: crop to the first 10 s) cuts long clips. Bad files are skipped, named in a
    ``SkippedAudioWarning`` and in the ``LoadReport`` (``return_report=True`` returns
    ``(dataset, report)``). A missing label column or an empty result is a ``DataError``.
    """
    import datasets

    policy = policy or ClipPolicy()
    sample_rate = int(sample_rate)
    if isinstance(source, datasets.DatasetDict):
        if split not in source:
            raise DataError(f"split '{split}' not in the DatasetDict (splits: {', '.join(source)})")
        source = source[split]
    if isinstance(source, datasets.Dataset):
        items, cols, feats = _dataset_items(source, audio_column, label_columns)
        ds, report = _build(items, sample_rate, policy, feats if class_labels else None, silence_threshold)
        return (ds, report) if return_report else ds
    if isinstance(source, (list, tuple)) and source and isinstance(source[0], np.ndarray):
        raise DataError("for in-memory arrays call soundlens.data.from_arrays(arrays, sample_rate, labels)")
    path = Path(source) if isinstance(source, (str, os.PathLike)) else None
    if path is not None and path.exists():
        if path.is_file() and path.suffix.lower() == ".csv":
            items, cols = _csv_items(path.parent, path, label_columns, file_column)
        elif path.is_dir() and labels is not None:
            items, cols = _csv_items(path, Path(labels), label_columns, file_column)
        elif path.is_dir():
            items, cols, feats = _audiofolder_items(path, label_columns)
            ds, report = _build(items, sample_rate, policy, feats if class_labels else None, silence_threshold)
            return (ds, report) if return_report else ds
        else:
            items, cols = [(path.name, str(path), None, {})], []
        feats = _labels_as_classes(items, cols) if class_labels else None
        ds, report = _build(items, sample_rate, policy, feats, silence_threshold)
        return (ds, report) if return_report else ds
    looks_local = isinstance(source, str) and source.lower().endswith((*AUDIO_EXTENSIONS, ".csv"))
    if isinstance(source, str) and not looks_local and re.fullmatch(r"[\w.-]+(/[\w.-]+)?", source) and not source.startswith("."):
        hub = _load_hub(source, name, split)
        items, cols, feats = _dataset_items(hub, audio_column, label_columns)
        ds, report = _build(items, sample_rate, policy, feats if class_labels else None, silence_threshold)
        return (ds, report) if return_report else ds
    raise DataError(f"no such file or folder: {source}")


def _audiofolder_items(folder: Path, label_columns: Sequence[str] | None):
    """``datasets``' audiofolder: labels from metadata.csv/jsonl or from subfolder names."""
    import datasets

    try:
        dd = datasets.load_dataset("audiofolder", data_dir=str(folder))
    except Exception as err:
        raise DataError(
            f"{folder} is not a usable audiofolder ({err}). Put audio files in it (optionally in one "
            "subfolder per label), or pass labels=CSV with a file column and label columns."
        ) from err
    split = next(iter(dd.values()))
    return _dataset_items(split, "audio", label_columns, root=folder)


def _dataset_items(ds: datasets.Dataset, audio_column: str, label_columns: Sequence[str] | None, root: Path | None = None):
    import datasets

    if audio_column not in ds.column_names:
        raise DataError(
            f"no audio column '{audio_column}' (columns: {', '.join(ds.column_names)}); pass audio_column=NAME"
        )
    cols = [c for c in ds.column_names if c != audio_column] if label_columns is None else list(label_columns)
    missing = [c for c in cols if c not in ds.column_names]
    if missing:
        raise DataError(f"label column(s) {missing} not in the dataset; its columns are: {', '.join(ds.column_names)}")
    feats = {c: ds.features[c] for c in cols}
    raw = ds.cast_column(audio_column, datasets.Audio(decode=False)) if isinstance(ds.features[audio_column], datasets.Audio) else ds

    def gen() -> Iterator:
        for i, row in enumerate(raw):
            a = row[audio_column]
            labels = {c: row[c] for c in cols}
            if isinstance(a, dict) and a.get("bytes"):
                yield (a.get("path") or f"row {i}", a["bytes"], None, labels)
            elif isinstance(a, dict) and a.get("path"):
                p = a["path"]
                yield (os.path.relpath(p, root) if root else p, p, None, labels)
            elif isinstance(a, dict) and "array" in a:
                yield (f"row {i}", np.asarray(a["array"]), int(a["sampling_rate"]), labels)
            else:
                yield (f"row {i}", b"", None, labels)

    return gen(), cols, feats


def _load_hub(repo_id: str, name: str | None, split: str):
    import datasets

    try:
        return datasets.load_dataset(repo_id, name=name, split=split)
    except Exception as err:
        raise DataError(
            f"could not load '{repo_id}' (split '{split}') from the Hugging Face hub: {err}. Check the id "
            "and your network; offline, pass a local folder, a CSV, or a datasets.Dataset instead."
        ) from err


def open_dataset(source: str | os.PathLike, sample_rate: int, **kwargs: Any) -> datasets.Dataset:
    """A dataset from what a user points the CLI at, decoded mono at ``sample_rate``.

    A folder written by ``save_to_disk`` (ours or anyone's) is opened as is and re-checked; an
    audio folder uses its ``labels.csv`` when present (else audiofolder conventions); anything
    else goes to ``load_audio`` (CSV file, hub id).
    """
    import datasets

    path = Path(source)
    if path.is_dir() and ((path / "state.json").exists() or (path / "dataset_dict.json").exists()):
        return load_audio(datasets.load_from_disk(str(path)), sample_rate, **kwargs)
    if path.is_dir() and (path / "labels.csv").exists() and "labels" not in kwargs:
        kwargs["labels"] = path / "labels.csv"
    return load_audio(source, sample_rate, **kwargs)

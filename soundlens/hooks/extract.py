"""Extraction over a dataset: batched capture, shard by shard, resumable, bad clips skipped."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from soundlens.data.loading import check_audio, resample
from soundlens.errors import SoundlensError
from soundlens.hooks.capture import POOLINGS, Pooling, capture
from soundlens.hooks.memory import dataset_files, release
from soundlens.hooks.store import ActivationStore
from soundlens.models.loaded import LoadedModel


def dataset_fingerprint(dataset: Any, audio_column: str) -> str:
    """A fingerprint of the dataset's content: `datasets`' own when it has one."""
    fp = getattr(dataset, "_fingerprint", None)
    if fp:
        return f"datasets:{fp}:{len(dataset)}"
    h = hashlib.sha256()
    for row in dataset:
        audio, sr = example_audio(row[audio_column])
        h.update(np.ascontiguousarray(audio).tobytes())
        h.update(str(sr).encode())
    return f"sha256:{h.hexdigest()[:16]}:{len(dataset)}"


def example_audio(value: Any) -> tuple[np.ndarray, int]:
    """(mono samples, sample rate) from a dataset audio cell in any form `datasets` gives.

    `datasets` 5 decodes through torchcodec (an ``AudioDecoder``); older code and in-memory
    data use ``{"array", "sampling_rate"}`` dicts.
    """
    if isinstance(value, dict) and "array" in value:
        return np.asarray(value["array"], dtype=np.float32), int(value["sampling_rate"])
    if hasattr(value, "get_all_samples"):
        s = value.get_all_samples()
        data = s.data.numpy()
        return data.mean(axis=0).astype(np.float32), int(s.sample_rate)
    raise SoundlensError(f"cannot read audio from a {type(value).__name__} cell")


def extract(
    lm: LoadedModel,
    dataset: Any,
    sites: Sequence[str],
    out: str | os.PathLike[str],
    *,
    pooling: Pooling = "mean",
    batch_size: int = 8,
    shard_rows: int = 256,
    audio_column: str = "audio",
    id_column: str | None = None,
    overwrite: bool = False,
    progress: bool = True,
    trim: bool = False,
) -> ActivationStore:
    """Capture pooled activations at ``sites`` for every row of ``dataset`` into a store.

    Rerunning on an interrupted store continues where it stopped. A row whose audio cannot be
    decoded, is empty, silent or not finite is skipped and reported by name in the manifest.
    ``trim`` runs a fixed-window encoder (Whisper) on inputs trimmed to the batch's longest clip
    instead of its padded window: faster, and approximate (recorded in the store's key).
    """
    if pooling not in POOLINGS or pooling == "none":
        raise ValueError("extraction pools over time: choose one of mean, max, meanstd, last")
    resolved = [lm.site(s).name for s in sites]  # unknown names fail here, before any work
    if audio_column not in dataset.column_names:
        raise SoundlensError(
            f"dataset has no audio column {audio_column!r}; columns: {', '.join(dataset.column_names)}"
        )
    key = {
        "model": lm.source,
        "sites": resolved,
        "pooling": pooling,
        "dataset": dataset_fingerprint(dataset, audio_column),
        "sample_rate": lm.sample_rate,
        "input": "trimmed" if trim else "full",
    }
    store = ActivationStore.create_or_resume(out, key, overwrite=overwrite)
    total = len(dataset)
    files = dataset_files(dataset)
    start = store.manifest["rows_done"]
    bar = tqdm(total=total, initial=start, desc=f"extract {lm.name}", unit="clip",
               disable=not progress)
    for lo in range(start, total, shard_rows):
        hi = min(lo + shard_rows, total)
        parts: dict[str, list[np.ndarray]] = {s: [] for s in resolved}
        kept: list[int] = []
        skipped: list[dict[str, Any]] = []
        for b in range(lo, hi, batch_size):
            clips, idx = [], []
            for i in range(b, min(b + batch_size, hi)):
                name = f"row {i}"
                try:
                    row = dataset[i]
                    name = str(row[id_column]) if id_column else name
                    audio, sr = example_audio(row[audio_column])
                    audio = check_audio(resample(audio, sr, lm.sample_rate), name)
                except Exception as e:  # noqa: BLE001 - one bad clip never stops the run
                    skipped.append({"index": i, "name": name, "reason": str(e)})
                    continue
                clips.append(audio)
                idx.append(i)
            if clips:
                inputs = lm.inputs(clips, sampling_rate=lm.sample_rate, trim=trim)
                acts = capture(lm, inputs, resolved, pooling, n_samples=[len(c) for c in clips],
                               trim=trim)
                for s in resolved:
                    if acts[s].shape[0] != len(clips):
                        raise SoundlensError(
                            f"{lm.name} turned {len(clips)} clips into {acts[s].shape[0]} rows "
                            f"at {s} (it frames long clips into windows); extract clips no "
                            "longer than one model window"
                        )
                    parts[s].append(acts[s].numpy())
                kept.extend(idx)
            bar.update(min(b + batch_size, hi) - b)
        arrays = {s: np.concatenate(p) for s, p in parts.items() if p}
        store.append(arrays, np.asarray(kept, dtype=np.int64), hi, skipped)
        del arrays, parts
        release(files)  # peak memory must not grow with the dataset
    bar.close()
    store.finish()
    return store


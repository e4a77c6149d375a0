"""The activation store: a folder of safetensors shards plus a JSON manifest.

The manifest names what the activations are (model, sites, pooling, dataset fingerprint) and
how far extraction got. Each shard is written to a temporary file and renamed, then the
manifest is rewritten the same way, so a job killed at any moment leaves a store whose manifest
describes only complete shards: a rerun continues from there and ends with exactly the rows of
an uninterrupted run. No pickle: arrays in safetensors, metadata in JSON.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from safetensors.numpy import load_file, save_file

from soundlens.errors import SoundlensError

FORMAT = 1
INDEX_KEY = "__index__"


class StoreError(SoundlensError, ValueError):
    """A store that does not match the requested extraction, or is damaged."""


def key_hash(key: dict[str, Any]) -> str:
    """A short stable hash of what the activations are (model, sites, pooling, data)."""
    blob = json.dumps(key, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


@dataclass
class ActivationStore:
    """Read (and, during extraction, append to) one store folder."""

    folder: Path
    manifest: dict[str, Any]

    # ---- creation / opening ---------------------------------------------------------
    @classmethod
    def open(cls, folder: str | os.PathLike[str]) -> ActivationStore:
        """Open an existing store for reading."""
        folder = Path(folder)
        path = folder / "manifest.json"
        if not path.is_file():
            raise StoreError(f"{folder} is not an activation store (no manifest.json)")
        try:
            manifest = json.loads(path.read_text())
        except json.JSONDecodeError as e:
            raise StoreError(f"{path} is not valid JSON ({e})") from e
        if manifest.get("format") != FORMAT:
            raise StoreError(f"{path}: unknown store format {manifest.get('format')!r}")
        return cls(folder, manifest)

    @classmethod
    def create_or_resume(
        cls, folder: str | os.PathLike[str], key: dict[str, Any], *, overwrite: bool = False
    ) -> ActivationStore:
        """Resume a store made for the same key, or start a new one.

        A store made for a different key (other model, sites, pooling or dataset) is an error
        unless ``overwrite``: stale activations are never reused silently.
        """
        folder = Path(folder)
        wanted = key_hash(key)
        if (folder / "manifest.json").is_file():
            store = cls.open(folder)
            if store.manifest["key_hash"] == wanted:
                return store
            if not overwrite:
                old = store.manifest["key"]
                diff = sorted(k for k in set(old) | set(key) if old.get(k) != key.get(k))
                raise StoreError(
                    f"{folder} holds activations for a different extraction (differs in: "
                    f"{', '.join(diff)}); choose another folder or pass overwrite=True"
                )
            for f in folder.glob("shard-*.safetensors"):
                f.unlink()
        folder.mkdir(parents=True, exist_ok=True)
        store = cls(
            folder,
            {"format": FORMAT, "key": key, "key_hash": wanted, "rows_done": 0, "shards": [],
             "skipped": [], "dims": {}, "complete": False},
        )
        store._write_manifest()
        return store

    # ---- writing --------------------------------------------------------------------
    def _write_manifest(self) -> None:
        data = json.dumps(self.manifest, indent=1, default=str).encode()
        _atomic_write_bytes(self.folder / "manifest.json", data)

    def append(
        self,
        arrays: dict[str, np.ndarray],
        indices: np.ndarray,
        rows_done: int,
        skipped: Iterable[dict[str, Any]] = (),
    ) -> None:
        """Commit one shard: its rows (dataset ``indices``) and the rows it skipped.

        ``rows_done`` is the dataset position reached after this shard, skipped rows included.
        """
        n = len(indices)
        for site, arr in arrays.items():
            if arr.shape[0] != n:
                raise StoreError(f"site {site}: {arr.shape[0]} rows for {n} indices")
        k = len(self.manifest["shards"])
        name = f"shard-{k:05d}.safetensors"
        if n:
            tensors = {s: np.ascontiguousarray(a, dtype=np.float32) for s, a in arrays.items()}
            tensors[INDEX_KEY] = np.asarray(indices, dtype=np.int64)
            path = self.folder / name
            tmp = path.with_name(f".{name}.tmp-{os.getpid()}")
            save_file(tensors, str(tmp))
            os.replace(tmp, path)
            self.manifest["shards"].append({"file": name, "rows": n})
            self.manifest["dims"] = {s: int(a.shape[1]) for s, a in arrays.items()}
        self.manifest["skipped"].extend(skipped)
        self.manifest["rows_done"] = int(rows_done)
        self._write_manifest()

    def finish(self) -> None:
        """Mark the store complete."""
        self.manifest["complete"] = True
        self._write_manifest()

    # ---- reading --------------------------------------------------------------------
    @property
    def sites(self) -> list[str]:
        """Site names in the store, in extraction order."""
        return list(self.manifest["key"]["sites"])

    @property
    def rows(self) -> int:
        """Rows written (skipped clips excluded)."""
        return sum(s["rows"] for s in self.manifest["shards"])

    @property
    def complete(self) -> bool:
        return bool(self.manifest.get("complete"))

    @property
    def skipped(self) -> list[dict[str, Any]]:
        """Rows that were not extracted, each with its index, name and reason."""
        return list(self.manifest["skipped"])

    def _load(self, names: list[str]) -> dict[str, list[np.ndarray]]:
        out: dict[str, list[np.ndarray]] = {n: [] for n in names}
        for shard in self.manifest["shards"]:
            path = self.folder / shard["file"]
            try:
                data = load_file(str(path))
            except Exception as e:  # noqa: BLE001 - name the damaged shard
                raise StoreError(f"shard {path} cannot be read ({e})") from e
            for n in names:
                out[n].append(data[n])
        return out

    def array(self, site: str) -> np.ndarray:
        """All rows of one site as (rows, dim) float32."""
        if site not in self.sites:
            raise StoreError(f"site {site!r} is not in this store; it has: {', '.join(self.sites)}")
        parts = self._load([site])[site]
        dim = self.manifest["dims"].get(site, 0)
        return np.concatenate(parts) if parts else np.zeros((0, dim), np.float32)

    def stack(self, sites: list[str] | None = None) -> np.ndarray:
        """(sites, rows, dim) for sites of equal width: the input of a batched layer sweep."""
        names = sites or self.sites
        dims = {self.manifest["dims"][s] for s in names}
        if len(dims) != 1:
            raise StoreError(f"sites have different widths {sorted(dims)}; sweep them separately")
        loaded = self._load(names)
        return np.stack([np.concatenate(loaded[s]) for s in names])

    def indices(self) -> np.ndarray:
        """Dataset row index of every stored row."""
        parts = self._load([INDEX_KEY])[INDEX_KEY]
        return np.concatenate(parts) if parts else np.zeros(0, np.int64)

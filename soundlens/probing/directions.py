"""Directions in activation space: where a concept points, ready for ITI-style steering.

Three ways to get one per class (or one for a regression target):
- ``probe``: the trained probe's weights (multinomial weights centred across classes, i.e.
  each class against the average of the others; a ridge probe's single weight vector);
- ``mean_difference``: mean activation of the class minus the mean of the rest;
- ``pca``: first principal component of the class means (one direction for the concept).
Each is a unit vector stored with σ, the standard deviation of the activations projected on
it (ITI shifts by α·σ·θ). Saved as safetensors + JSON provenance; loading runs no code.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
from safetensors.numpy import load_file, save_file

from soundlens.errors import SoundlensError

Method = Literal["probe", "mean_difference", "pca"]


@dataclass
class Directions:
    """Unit directions (K, D) at one site, their labels and σ, and where they came from."""

    site: str
    method: Method
    labels: list[str]
    vectors: np.ndarray
    sigma: np.ndarray
    provenance: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.vectors.ndim != 2 or len(self.labels) != self.vectors.shape[0]:
            raise SoundlensError(
                f"directions at {self.site}: {self.vectors.shape} vectors for {len(self.labels)} labels"
            )

    def vector(self, label: str) -> np.ndarray:
        """The unit direction for one label."""
        if label not in self.labels:
            raise SoundlensError(f"no direction for {label!r}; labels: {', '.join(self.labels)}")
        return self.vectors[self.labels.index(label)]

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write ``path.safetensors`` (vectors, σ) and ``path.json`` (everything else)."""
        base = Path(path)
        base.parent.mkdir(parents=True, exist_ok=True)
        arr_path, meta_path = artifact_paths(base)
        save_file({"vectors": self.vectors.astype(np.float32),
                   "sigma": self.sigma.astype(np.float32)}, str(arr_path))
        meta = {"site": self.site, "method": self.method, "labels": self.labels,
                "dim": int(self.vectors.shape[1]), "provenance": self.provenance}
        meta_path.write_text(json.dumps(meta, indent=2, default=str))
        return base

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Directions:
        """Read what ``save`` wrote (no code is executed)."""
        arr_path, meta_path = artifact_paths(Path(path))
        for p in (meta_path, arr_path):
            if not p.is_file():
                raise SoundlensError(f"missing {p}: directions are saved as .json + .safetensors")
        meta = json.loads(meta_path.read_text())
        arrays = load_file(str(arr_path))
        return cls(meta["site"], meta["method"], meta["labels"], arrays["vectors"],
                   arrays["sigma"], meta.get("provenance", {}))


def artifact_paths(base: Path) -> tuple[Path, Path]:
    # Site names contain dots, so suffixes are appended, never substituted.
    return Path(f"{base}.safetensors"), Path(f"{base}.json")


def _unit(v: np.ndarray) -> np.ndarray:
    norm = np.linalg.norm(v, axis=-1, keepdims=True)
    return v / np.where(norm > 0, norm, 1.0)


def _sigma(x: np.ndarray, vectors: np.ndarray) -> np.ndarray:
    return (x @ vectors.T).std(0)


def from_probe(site: str, coef: np.ndarray, x: np.ndarray, labels: list[str],
               provenance: dict[str, Any] | None = None) -> Directions:
    """Directions from probe weights: (C, D) multinomial weights or (1, D) ridge weights."""
    w = coef - coef.mean(0, keepdims=True) if coef.shape[0] > 1 else coef
    vec = _unit(w)
    return Directions(site, "probe", labels, vec, _sigma(x, vec), dict(provenance or {}))


def mean_difference(site: str, x: np.ndarray, y: np.ndarray,
                    provenance: dict[str, Any] | None = None) -> Directions:
    """Per class: mean of the class minus mean of all other rows."""
    labels = np.unique(y)
    if len(labels) < 2:
        raise SoundlensError("mean-difference directions need at least two classes")
    vec = np.stack([x[y == c].mean(0) - x[y != c].mean(0) for c in labels])
    vec = _unit(vec)
    return Directions(site, "mean_difference", [str(c) for c in labels], vec, _sigma(x, vec),
                      dict(provenance or {}))


def pca_of_means(site: str, x: np.ndarray, y: np.ndarray,
                 provenance: dict[str, Any] | None = None) -> Directions:
    """The first principal component of the centred class means (sign: towards the last class)."""
    labels = np.unique(y)
    if len(labels) < 2:
        raise SoundlensError("a PCA direction needs at least two classes")
    means = np.stack([x[y == c].mean(0) for c in labels])
    centred = means - means.mean(0)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    v = vt[:1]
    if float(centred[-1] @ v[0]) < 0:
        v = -v
    v = _unit(v)
    return Directions(site, "pca", [f"{labels[0]}->{labels[-1]}"], v, _sigma(x, v),
                      dict(provenance or {}))

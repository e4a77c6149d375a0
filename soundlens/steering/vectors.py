"""Steering vectors: site → unit direction, σ per site, a strength, and where they came from.

A ``SteeringVector`` is data, not code: ``save(path)`` writes ``path.safetensors`` (one float32
array per site) and ``path.json`` (σ, α, provenance); ``load`` reads them back without
unpickling or executing anything. ``to_edits`` turns it into ``Edit``s for
``soundlens.hooks.interventions.Intervene`` (ITI's shift: x ← x + α·σ·θ at every site).

Constructors: ``from_directions`` (one label of a ``Directions`` file from probing) and
``from_contrast`` (difference of means between positive and negative activations, per site).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from safetensors.numpy import load_file, save_file

from soundlens.errors import SoundlensError
from soundlens.hooks.interventions import Edit, Rows, Steps
from soundlens.probing.directions import Directions, artifact_paths

FORMAT_VERSION = 1


class SteeringVectorError(SoundlensError, ValueError):
    """A steering vector that cannot be built, saved or loaded as asked."""


@dataclass
class SteeringVector:
    """Unit directions per site, σ per site (ITI's std of projections), α and provenance.

    ``provenance`` records model, site(s), probe/concept and the dataset fingerprint; it is
    free-form JSON-serialisable data.
    """

    directions: dict[str, np.ndarray]
    sigma: dict[str, float] = field(default_factory=dict)
    alpha: float = 1.0
    provenance: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.directions:
            raise SteeringVectorError("a steering vector needs at least one site")
        dirs: dict[str, np.ndarray] = {}
        for site, v in self.directions.items():
            arr = np.asarray(v, dtype=np.float32)
            if arr.ndim != 1 or arr.size == 0:
                raise SteeringVectorError(
                    f"direction at {site!r} must be a non-empty 1-D array, got shape {arr.shape}"
                )
            if not np.all(np.isfinite(arr)):
                raise SteeringVectorError(f"direction at {site!r} has NaN or inf values")
            norm = float(np.linalg.norm(arr))
            if norm == 0.0:
                raise SteeringVectorError(f"direction at {site!r} is the zero vector")
            dirs[str(site)] = (arr / norm).astype(np.float32)
        self.directions = dirs
        unknown = set(self.sigma) - set(dirs)
        if unknown:
            raise SteeringVectorError(
                f"sigma given for sites without a direction: {sorted(unknown)}"
            )
        self.sigma = {s: float(self.sigma.get(s, 1.0)) for s in dirs}
        self.alpha = float(self.alpha)

    @property
    def sites(self) -> list[str]:
        return list(self.directions)

    # ---- constructors -------------------------------------------------------------------
    @classmethod
    def from_directions(
        cls, directions: Directions, label: str, *, alpha: float = 1.0,
        provenance: Mapping[str, Any] | None = None,
    ) -> SteeringVector:
        """The direction of one label (class or concept) from a probing ``Directions``."""
        vec = directions.vector(label)
        sigma = float(np.asarray(directions.sigma).reshape(-1)[directions.labels.index(label)])
        prov = {**directions.provenance, "site": directions.site, "concept": label,
                "method": directions.method, **dict(provenance or {})}
        return cls({directions.site: vec}, {directions.site: sigma}, alpha, prov)

    @classmethod
    def from_contrast(
        cls, positives: Mapping[str, np.ndarray], negatives: Mapping[str, np.ndarray], *,
        alpha: float = 1.0, provenance: Mapping[str, Any] | None = None,
    ) -> SteeringVector:
        """Per site: mean(positives) − mean(negatives), unit-normalised (ITI's mass-mean shift).

        ``positives[site]`` is (N, D), ``negatives[site]`` (M, D). σ is the std of all rows
        (positives and negatives) projected on the unit direction.
        """
        if set(positives) != set(negatives):
            raise SteeringVectorError(
                f"positives and negatives must cover the same sites: "
                f"{sorted(positives)} vs {sorted(negatives)}"
            )
        dirs, sigma = {}, {}
        for site in positives:
            pos = np.asarray(positives[site], dtype=np.float64)
            neg = np.asarray(negatives[site], dtype=np.float64)
            if pos.ndim != 2 or neg.ndim != 2 or pos.shape[1] != neg.shape[1]:
                raise SteeringVectorError(
                    f"site {site!r}: positives {pos.shape} and negatives {neg.shape} must be "
                    f"(N, D) and (M, D) with the same D"
                )
            if len(pos) == 0 or len(neg) == 0:
                raise SteeringVectorError(f"site {site!r}: positives and negatives need rows")
            diff = pos.mean(0) - neg.mean(0)
            norm = float(np.linalg.norm(diff))
            if norm == 0.0 or not np.isfinite(norm):
                raise SteeringVectorError(
                    f"site {site!r}: positives and negatives have the same mean; no direction"
                )
            theta = diff / norm
            dirs[site] = theta
            sigma[site] = float((np.concatenate([pos, neg]) @ theta).std())
        prov = {"method": "mean_difference", "sites": list(dirs), "n_positive":
                {s: len(positives[s]) for s in dirs}, "n_negative":
                {s: len(negatives[s]) for s in dirs}, **dict(provenance or {})}
        return cls(dirs, sigma, alpha, prov)

    # ---- use ----------------------------------------------------------------------------
    def to_edits(
        self, alpha: float | None = None, *, rows: Rows = None, steps: Steps = None,
        schedule: Callable[[int], float] | None = None,
    ) -> list[Edit]:
        """One ``add`` edit per site: x ← x + α·σ·θ (α defaults to the vector's own)."""
        a = self.alpha if alpha is None else float(alpha)
        label = str(self.provenance.get("concept", ""))
        return [
            Edit(site, self.directions[site].copy(), "add", alpha=a, sigma=self.sigma[site],
                 rows=rows, steps=steps, schedule=schedule, label=label)
            for site in self.directions
        ]

    # ---- files --------------------------------------------------------------------------
    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write ``path.safetensors`` (directions) and ``path.json`` (σ, α, provenance)."""
        base = Path(path)
        base.parent.mkdir(parents=True, exist_ok=True)
        arr_path, meta_path = artifact_paths(base)
        save_file({site: v.astype(np.float32) for site, v in self.directions.items()},
                  str(arr_path))
        meta = {"format": "soundlens.SteeringVector", "version": FORMAT_VERSION,
                "sites": self.sites,
                "dims": {s: int(v.shape[0]) for s, v in self.directions.items()},
                "sigma": self.sigma, "alpha": self.alpha, "provenance": self.provenance}
        meta_path.write_text(json.dumps(meta, indent=2, default=str))
        return base

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> SteeringVector:
        """Read what ``save`` wrote; no code runs (safetensors + JSON)."""
        arr_path, meta_path = artifact_paths(Path(path))
        for p in (meta_path, arr_path):
            if not p.is_file():
                raise SteeringVectorError(
                    f"missing {p}: a steering vector is saved as {meta_path.name} + {arr_path.name}"
                )
        try:
            meta = json.loads(meta_path.read_text())
        except json.JSONDecodeError as e:
            raise SteeringVectorError(f"{meta_path} is not valid JSON: {e}") from e
        if meta.get("format") != "soundlens.SteeringVector":
            raise SteeringVectorError(f"{meta_path} does not describe a soundlens steering vector")
        arrays = load_file(str(arr_path))
        missing = [s for s in meta["sites"] if s not in arrays]
        if missing:
            raise SteeringVectorError(f"{arr_path} lacks directions for sites {missing}")
        dirs = {s: arrays[s] for s in meta["sites"]}
        return cls(dirs, dict(meta.get("sigma", {})), float(meta.get("alpha", 1.0)),
                   dict(meta.get("provenance", {})))


__all__ = ["SteeringVector", "SteeringVectorError"]

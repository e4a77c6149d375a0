"""Errors soundlens raises on purpose: each names the culprit and says what to do."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class SoundlensError(Exception):
    """Base class: a problem with the user's input or environment, explained."""


class ModelNotFoundError(SoundlensError, LookupError):
    """The name is neither an embedded model, a local folder, nor reachable on the hub."""


class HubUnavailableError(SoundlensError, ConnectionError):
    """A hub id was given but the Hugging Face hub cannot be reached."""


class ModelFolderError(SoundlensError, ValueError):
    """A local model folder is missing files or holds corrupt ones."""


class EmbeddedModelUnavailableError(SoundlensError, ImportError):
    """An embedded model's registry package is not installed."""


class UnknownSiteError(SoundlensError, LookupError):
    """A site name that is neither canonical for this model nor a module path."""

    def __str__(self) -> str:  # LookupError would quote the message
        return str(self.args[0]) if self.args else ""


class AudioInputError(SoundlensError, ValueError):
    """Audio that cannot be used as given: empty, NaN, wrong rate or shape."""


def closest(name: str, candidates: Iterable[str], n: int = 5, cutoff: float = 0.5) -> list[str]:
    """The candidates most similar to `name`, best first."""
    return difflib.get_close_matches(name, list(candidates), n=n, cutoff=cutoff)

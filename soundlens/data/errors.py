"""Errors of soundlens.data. Each says what went wrong and what to install or pass."""

from __future__ import annotations

from soundlens.errors import SoundlensError


class DataError(SoundlensError, ValueError):
    """A dataset request that cannot be met: unknown concept, bad config, missing column."""


class UnknownConceptError(DataError, LookupError):
    """A concept name that is not registered; the message lists close names."""

    def __str__(self) -> str:  # LookupError would quote the message
        return str(self.args[0]) if self.args else ""


class MissingToolError(DataError, RuntimeError):
    """A soundfont, synthesizer library or TTS program is not installed."""


class SkippedAudioWarning(UserWarning):
    """Some files of a user's folder could not be used and were skipped (named in the message)."""

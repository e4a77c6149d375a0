"""soundlens.data: labelled audio datasets and synthetic concept datasets.

- ``load_audio`` / ``from_arrays``: a user's audio (folder + CSV, audiofolder, datasets.Dataset,
  hub id, arrays) → ``datasets.Dataset`` with a mono ``audio`` column at one rate, plus labels.
- ``make_dataset`` / ``load_concept``: SynTheory-style music concepts and TTS speech concepts with
  labels true by construction (``list_concepts`` names them; ``verify_concept`` measures them).
"""

from soundlens.data.concepts import (
    Concept,
    GeneratorConfig,
    default_split,
    get_concept,
    list_concepts,
    load_concept,
    make_dataset,
    save_dataset,
)
from soundlens.data.errors import DataError, MissingToolError, SkippedAudioWarning, UnknownConceptError
from soundlens.data.loading import ClipPolicy, LoadReport, from_arrays, load_audio

__all__ = [
    "ClipPolicy",
    "Concept",
    "DataError",
    "GeneratorConfig",
    "LoadReport",
    "MissingToolError",
    "SkippedAudioWarning",
    "UnknownConceptError",
    "default_split",
    "from_arrays",
    "get_concept",
    "list_concepts",
    "load_audio",
    "load_concept",
    "make_dataset",
    "save_dataset",
]

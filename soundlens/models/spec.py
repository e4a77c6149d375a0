"""Family specs: what soundlens needs to know about one model family.

A spec maps canonical site names (the same across families) onto module paths, says how
audio and text become model inputs, at what sample rate, and whether the model generates.
Module paths are found by suffix so one spec serves every head class of a family
(``Wav2Vec2Model``'s ``encoder.layers`` and ``Wav2Vec2ForCTC``'s ``wav2vec2.encoder.layers``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from soundlens.models.loaded import LoadedModel

Generates = Literal["text", "audio"] | None


@dataclass(frozen=True)
class LayerGroup:
    """A stack of repeated blocks, exposed as ``{canonical}.{i}`` with optional parts.

    ``path`` is a suffix of the module path of the ``ModuleList``. ``attn`` and ``mlp`` are
    paths relative to one block; ``attn_out`` is the attention output projection, whose
    input holds the heads side by side (``heads.{h}`` sites read and write its slices).
    """

    canonical: str
    path: str
    attn: str | None = None
    attn_out: str | None = None
    mlp: str | None = None
    channels_first: bool = False  # blocks output (batch, channels, time), e.g. convolutions
    blocks: bool = True  # False: the group only names parts (e.g. cross-attention) of blocks


@dataclass(frozen=True)
class FamilySpec:
    """Everything family-specific; the rest of soundlens reads only this."""

    name: str
    model_types: tuple[str, ...]
    model_class: str
    layer_groups: tuple[LayerGroup, ...] = ()
    extra_sites: dict[str, str] = field(default_factory=dict)
    # Canonical names (or name prefixes) of extra sites whose output is (batch, channels, time).
    channels_first_sites: tuple[str, ...] = ()
    # Canonical names (or prefixes) whose 4-D output is (batch, channels, time, freq).
    time_major_4d_sites: tuple[str, ...] = ()
    generates: Generates = None
    takes: tuple[Literal["audio", "text"], ...] = ("audio",)
    # Extra processor arguments for audio (e.g. padding with an attention mask), and whether
    # a batch of texts is padded by us (Bark's processor pads to its max_length itself).
    audio_processor_kwargs: dict[str, Any] = field(default_factory=dict)
    pad_text: bool = True
    # The shortest call that runs every part of the model once (e.g. two generation steps for a
    # decoder); None: a plain forward. Used to discover site shapes.
    smoke_forward: Callable[[LoadedModel, dict[str, Any]], Any] | None = None
    # Custom input preparation / sample rate for non-transformers families (ONNX conversions).
    prepare: Callable[..., dict[str, Any]] | None = None
    # A cheaper forward that runs only the audio encoder; used when every requested site's
    # name starts with one of ``encoder_prefixes`` (e.g. Whisper's encoder for probing).
    encoder_forward: Callable[[LoadedModel, dict[str, Any]], Any] | None = None
    encoder_prefixes: tuple[str, ...] = ()
    # Fraction of each padded input that is real audio, per row, for pooling over real frames
    # only; None means every frame is real (inputs padded with a mask are handled generically).
    valid_fraction: Callable[[LoadedModel, dict[str, Any], list[int]], Any] | None = None
    # Optional approximation for fixed-window encoders (Whisper): run the encoder on the input
    # trimmed to the longest clip of the batch instead of the padded window. It changes the
    # activations, so it is only used when asked for, and reports say so.
    trimmed_encoder_forward: Callable[[LoadedModel, dict[str, Any], list[int]], Any] | None = None
    trim_processor_kwargs: dict[str, Any] = field(default_factory=dict)
    sample_rate: Callable[[LoadedModel], int] | None = None
    output_sample_rate: Callable[[LoadedModel], int] | None = None
    description: str = ""


@dataclass(frozen=True)
class Site:
    """A named place where activations are read or written.

    ``module_path`` is the module whose output (or, for heads, whose input slice
    ``[head*head_dim:(head+1)*head_dim]``) the site denotes.
    """

    name: str
    module_path: str
    kind: Literal["layer", "attn", "mlp", "head", "module"]
    head: int | None = None
    head_dim: int | None = None
    channels_first: bool = False  # 3-D output is (batch, channels, time), not (batch, time, dim)
    time_major_4d: bool = False  # 4-D output is (batch, channels, time, freq)

    @property
    def reads_input(self) -> bool:
        """Heads live in the input of the attention output projection."""
        return self.kind == "head"

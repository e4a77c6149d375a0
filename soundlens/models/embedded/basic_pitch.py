"""Spotify basic-pitch (ICASSP 2022) note transcription, as a hookable torch module.

The registry package ``basic-pitch`` (Apache-2.0) bundles the trained network as ONNX
(``basic_pitch/saved_models/icassp_2022/nmp.onnx``, opset 15, exported from TensorFlow). Its
default install pulls TensorFlow, so soundlens installs it with ``--no-deps`` and never imports
the ``basic_pitch`` package: the ONNX file is located through the package metadata and turned
into a ``torch.fx.GraphModule`` by onnx2torch (:mod:`soundlens.models.embedded.onnx_util`).

The network (16.7k trained weights besides the fixed CQT kernels) takes mono 22.05 kHz audio
in fixed windows of ``AUDIO_N_SAMPLES = 2 s * 22050 - 256 = 43844`` samples, input shape
``(windows, 43844, 1)``, and computes inside the graph a CQT (nnAudio-style convolutions,
8 octave stages, 309 bins at 3 per semitone from 27.5 Hz, 172 frames of 256 samples), its log
magnitude normalised per window, a harmonic stack (harmonics 0.5, 1 … 7; 264 bins) and three
small convolutional heads. It returns three posteriorgrams per window, all ``(windows, 172, ·)``
and in this order: ``onset`` (88 piano keys, A0 = MIDI 21 …), ``note`` (88 keys: the note is
sounding) and ``contour`` (264 bins, 3 per semitone: multipitch salience).

Converter gap fixed here: the CQT's last ``reflect`` pad pads the middle axis of a 3-D tensor,
which onnx2torch's Pad module refuses ("reflect padding is implemented for padding the last …
dimensions"). After conversion every reflect/edge ``OnnxPadDynamic`` is swapped in place (same
module name) for :class:`AnyAxisPad`, which reflects by index gathering on any axis. Likewise
``OnnxSlice`` modules become ``TupleSlice`` (index with a tuple of slices: torch deprecates the
list onnx2torch passes and warns on every call). The graph's input placeholder is renamed ``x``
so ``model(**lm.inputs(...))`` works.

Framing (what :func:`prepare` does, following ``basic_pitch.inference``): each clip gets
``overlap/2 = 3840`` zero samples in front (15 frames), then windows of 43844 samples start every
``43844 - 30*256 = 36164`` samples; the last window is zero-padded. A clip shorter than one window
is one zero-padded window. Windows of all clips are stacked along the batch axis in clip order
(:func:`window_counts` says how many each clip has). :func:`unwrap` reverses it: it drops 15
frames at each end of every window, concatenates, and trims to ``floor(n_samples * 86 / 22050)``
frames (basic-pitch counts 86 frames per second, ``22050 // 256``).

Sites (``extra_sites``; module paths are the ONNX node names onnx2torch gives the modules):
``layers.0`` … ``layers.14`` follow the data flow, see :data:`SITE_ROLES`. ``layers.0``/``1``
are (windows, 172 frames, 309 bins); ``layers.2`` … ``14`` are NCHW maps (windows, channels,
172 frames, bins): time is axis 2 (:data:`TIME_MAJOR_4D_SITES`). One batch row is one window,
not one clip: clips longer than 32324 samples (1.47 s) take several rows (:func:`clip_slices`).
"""

from __future__ import annotations

import functools
import importlib.metadata
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from soundlens.errors import EmbeddedModelUnavailableError
from soundlens.models.embedded import distribution
from soundlens.models.spec import FamilySpec

if TYPE_CHECKING:
    import torch

    from soundlens.models.loaded import LoadedModel

PACKAGE = "basic-pitch"
ONNX_RELPATH = "basic_pitch/saved_models/icassp_2022/nmp.onnx"

SAMPLE_RATE = 22050
FFT_HOP = 256
AUDIO_N_SAMPLES = SAMPLE_RATE * 2 - FFT_HOP  # 43844 samples per window
FRAMES_PER_WINDOW = 172
N_OVERLAPPING_FRAMES = 30
OVERLAP_SAMPLES = N_OVERLAPPING_FRAMES * FFT_HOP  # 7680
HOP_SAMPLES = AUDIO_N_SAMPLES - OVERLAP_SAMPLES  # 36164
ANNOTATIONS_FPS = SAMPLE_RATE // FFT_HOP  # 86, basic-pitch's (rounded) frame rate
MIDI_OFFSET = 21  # pitch index 0 is A0
N_PITCHES = 88
CONTOUR_BINS_PER_SEMITONE = 3

ONNX_INPUT = "serving_default_input_2:0"
# ONNX output name → our name; the torch module returns them in the graph's output order.
ONNX_OUTPUTS = {
    "StatefulPartitionedCall:2": "onset",
    "StatefulPartitionedCall:1": "note",
    "StatefulPartitionedCall:0": "contour",
}
OUTPUT_NAMES = ("onset", "note", "contour")

# Canonical site → (module path = onnx2torch module name, role). Shapes for B windows.
_SITES: list[tuple[str, str]] = [
    (
        "model_1/cq_t2010v2_1/transpose_70;model_1/cq_t2010v2_1/transpose_70",
        "cqt: CQT magnitude (B, 172 frames, 309 bins: 3 per semitone from 27.5 Hz = A0)",
    ),
    (
        "model_1/normalized_log_1/Reshape_2;model_1/normalized_log_1/Reshape_2",
        "log_cqt: log magnitude scaled to [0, 1] per window (B, 172, 309)",
    ),
    (
        "model_1/re_lu_3/Relu;model_1/re_lu_3/Relu;model_1/batch_normalization_3/FusedBatchNormV3;"
        "model_1/batch_normalization_3/FusedBatchNormV3;model_1/conv2d_4/BiasAdd/ReadVariableOp;"
        "model_1/conv2d_4/BiasAdd/ReadVariableOp;model_1/conv2d_4/BiasAdd;model_1/conv2d_4/BiasAdd;"
        "model_1/conv2d_2/Conv2D;model_1/conv2d_2/Conv2D;model_1/conv2d_4/Conv2D;"
        "model_1/conv2d_4/Conv2D1__376",
        "harmonic_stack: batch-normed log CQT stacked at harmonics 0.5,1..7 "
        "(B, 8, 172, 264), NCHW; input of the onset and contour branches",
    ),
    (
        "model_1/re_lu_1/Relu;model_1/re_lu_1/Relu;model_1/batch_normalization_2/FusedBatchNormV3;"
        "model_1/batch_normalization_2/FusedBatchNormV3;model_1/conv2d_1/BiasAdd/ReadVariableOp;"
        "model_1/conv2d_1/BiasAdd/ReadVariableOp;model_1/conv2d_1/BiasAdd;model_1/conv2d_1/BiasAdd;"
        "model_1/conv2d_1/Conv2D;model_1/conv2d_1/Conv2D1",
        "contour.conv: 3x39 conv (+ folded batch norm), pre-ReLU (B, 8, 172, 264)",
    ),
    ("Relu__38", "contour.relu: its ReLU (B, 8, 172, 264)"),
    (
        "model_1/contours-reduced/BiasAdd;model_1/contours-reduced/BiasAdd;model_1/conv2d_5/Conv2D;"
        "model_1/conv2d_5/Conv2D;model_1/contours-reduced/Conv2D;model_1/contours-reduced/Conv2D;"
        "model_1/contours-reduced/BiasAdd/ReadVariableOp;"
        "model_1/contours-reduced/BiasAdd/ReadVariableOp",
        "contour.logits: 5x5 conv to one channel (B, 1, 172, 264)",
    ),
    (
        "model_1/contours-reduced/Sigmoid;model_1/contours-reduced/Sigmoid",
        "contour: sigmoid, the contour posteriorgram (B, 1, 172, 264)",
    ),
    (
        "model_1/re_lu_2/Relu;model_1/re_lu_2/Relu;"
        "model_1/conv2d_2/BiasAdd;model_1/conv2d_2/BiasAdd;"
        "model_1/conv2d_2/Conv2D;model_1/conv2d_2/Conv2D;"
        "model_1/conv2d_2/BiasAdd/ReadVariableOp;model_1/conv2d_2/BiasAdd/ReadVariableOp",
        "note.conv: 7x7 conv, stride 3 in frequency, on the contour (B, 32, 172, 88), pre-ReLU",
    ),
    ("Relu__42", "note.relu: its ReLU (B, 32, 172, 88)"),
    (
        "model_1/conv2d_3/BiasAdd;model_1/conv2d_3/BiasAdd;model_1/conv2d_5/Conv2D;"
        "model_1/conv2d_5/Conv2D;model_1/conv2d_3/Conv2D;model_1/conv2d_3/Conv2D;"
        "model_1/conv2d_3/BiasAdd/ReadVariableOp;model_1/conv2d_3/BiasAdd/ReadVariableOp",
        "note.logits: 7x3 conv to one channel (B, 1, 172, 88)",
    ),
    (
        "model_1/conv2d_3/Sigmoid;model_1/conv2d_3/Sigmoid",
        "note: sigmoid, the note posteriorgram (B, 1, 172, 88)",
    ),
    (
        "model_1/re_lu_3/Relu;model_1/re_lu_3/Relu;model_1/batch_normalization_3/FusedBatchNormV3;"
        "model_1/batch_normalization_3/FusedBatchNormV3;model_1/conv2d_4/BiasAdd/ReadVariableOp;"
        "model_1/conv2d_4/BiasAdd/ReadVariableOp;model_1/conv2d_4/BiasAdd;model_1/conv2d_4/BiasAdd;"
        "model_1/conv2d_2/Conv2D;model_1/conv2d_2/Conv2D;model_1/conv2d_4/Conv2D;"
        "model_1/conv2d_4/Conv2D1",
        "onset.conv: 5x5 conv, stride 3 in frequency, on the harmonic stack (+ folded batch "
        "norm), pre-ReLU (B, 32, 172, 88)",
    ),
    ("Relu__35", "onset.relu: its ReLU (B, 32, 172, 88); concatenated with the note output"),
    (
        "model_1/conv2d_5/BiasAdd;model_1/conv2d_5/BiasAdd;model_1/conv2d_5/Conv2D;"
        "model_1/conv2d_5/Conv2D;model_1/conv2d_5/BiasAdd/ReadVariableOp;"
        "model_1/conv2d_5/BiasAdd/ReadVariableOp",
        "onset.logits: 3x3 conv over [onset.relu, note] to one channel (B, 1, 172, 88)",
    ),
    (
        "model_1/conv2d_5/Sigmoid;model_1/conv2d_5/Sigmoid",
        "onset: sigmoid, the onset posteriorgram (B, 1, 172, 88)",
    ),
]

EXTRA_SITES: dict[str, str] = {f"layers.{i}": path for i, (path, _) in enumerate(_SITES)}
SITE_ROLES: dict[str, str] = {f"layers.{i}": role for i, (_, role) in enumerate(_SITES)}
# Sites whose 4-D output is (batch, channels, time, freq): time is axis 2, not the last axis
# (soundlens.hooks.capture.to_btd reads 4-D maps as (batch, channels, freq, time)).
TIME_MAJOR_4D_SITES: tuple[str, ...] = tuple(f"layers.{i}" for i in range(2, len(_SITES)))


# --------------------------------------------------------------------------------------
# Framing
# --------------------------------------------------------------------------------------
def n_windows(n_samples: int) -> int:
    """How many 43844-sample windows basic-pitch cuts a clip of ``n_samples`` into."""
    padded = int(n_samples) + OVERLAP_SAMPLES // 2
    return max(1, -(-padded // HOP_SAMPLES))


def frame_clip(clip: np.ndarray) -> np.ndarray:
    """One mono clip → ``(n_windows, 43844, 1)`` float32, as ``basic_pitch.inference`` does."""
    clip = np.asarray(clip, dtype=np.float32).reshape(-1)
    audio = np.concatenate([np.zeros(OVERLAP_SAMPLES // 2, dtype=np.float32), clip])
    n = n_windows(clip.shape[0])
    out = np.zeros((n, AUDIO_N_SAMPLES, 1), dtype=np.float32)
    for w in range(n):
        seg = audio[w * HOP_SAMPLES : w * HOP_SAMPLES + AUDIO_N_SAMPLES]
        out[w, : seg.shape[0], 0] = seg
    return out


def window_counts(clips: Sequence[np.ndarray]) -> list[int]:
    """Windows each clip contributes to the batch :func:`prepare` builds (in clip order)."""
    return [n_windows(np.asarray(c).shape[-1]) for c in clips]


def clip_slices(clips: Sequence[np.ndarray]) -> list[slice]:
    """Batch rows (windows) of each clip in the batch :func:`prepare` builds."""
    out, start = [], 0
    for n in window_counts(clips):
        out.append(slice(start, start + n))
        start += n
    return out


def unwrap(windows_out: np.ndarray, n_samples: int) -> np.ndarray:
    """Per-window outputs ``(n_windows, 172, K)`` of one clip → ``(frames, K)`` for the clip."""
    arr = np.asarray(windows_out)
    if arr.ndim != 3:
        raise ValueError(f"expected (windows, frames, bins), got shape {arr.shape}")
    half = N_OVERLAPPING_FRAMES // 2
    arr = arr[:, half:-half, :]
    flat = arr.reshape(arr.shape[0] * arr.shape[1], arr.shape[2])
    n_frames = int(np.floor(int(n_samples) * (ANNOTATIONS_FPS / SAMPLE_RATE)))
    return flat[:n_frames]


def frame_times(n_frames: int) -> np.ndarray:
    """Seconds of unwrapped frames, with basic-pitch's per-window drift correction."""
    idx = np.arange(n_frames)
    original = idx * FFT_HOP / SAMPLE_RATE
    window_offset = (FFT_HOP / SAMPLE_RATE) * (
        FRAMES_PER_WINDOW - AUDIO_N_SAMPLES / FFT_HOP
    ) + 0.0018  # basic-pitch's own alignment constant
    return original - window_offset * np.floor(idx / FRAMES_PER_WINDOW)


def prepare(lm: Any, clips: list[np.ndarray] | None, text: Any = None) -> dict[str, Any]:
    """Validated 22.05 kHz mono clips → ``{"x": (sum of windows, 43844, 1) float32 tensor}``.

    Each clip is framed on its own (:func:`frame_clip`); the rows of clip ``k`` are
    ``clip_slices(clips)[k]``, and ``unwrap(outputs[rows], len(clip))`` gives its frames.
    """
    import torch

    if not clips:
        from soundlens.errors import AudioInputError

        raise AudioInputError("basic-pitch needs audio: pass one or more mono 22.05 kHz clips")
    x = np.concatenate([frame_clip(c) for c in clips], axis=0)
    return {"x": torch.from_numpy(x)}


def valid_fraction(lm: Any, inputs: dict[str, Any], n_samples: list[int]) -> list[float] | None:
    """Per window (batch row), the fraction from its start that holds the clip's audio.

    Window ``k`` of a clip of ``n`` samples starts ``k * 36164`` samples into the clip padded
    with 3840 zeros in front, so audio runs to ``min(1, (3840 + n - k * 36164) / 43844)`` of it
    (the 15 leading frames of window 0 are that padding, counted as real, as basic-pitch's
    own model sees them). None when ``n_samples`` does not describe the batch.
    """
    x = inputs.get("x")
    counts = [n_windows(n) for n in n_samples]
    if x is None or not counts or sum(counts) != int(x.shape[0]):
        return None
    out = []
    for n, c in zip(n_samples, counts, strict=True):
        for k in range(c):
            real = OVERLAP_SAMPLES // 2 + int(n) - k * HOP_SAMPLES
            out.append(float(min(1.0, max(real, 1) / AUDIO_N_SAMPLES)))
    return out


BASIC_PITCH_SPEC = FamilySpec(
    name="basic-pitch",
    model_types=(),
    model_class="onnx2torch",
    layer_groups=(),
    extra_sites=EXTRA_SITES,
    time_major_4d_sites=TIME_MAJOR_4D_SITES,
    generates=None,
    takes=("audio",),
    prepare=prepare,
    valid_fraction=valid_fraction,
    sample_rate=lambda lm: SAMPLE_RATE,
    description=(
        "Spotify basic-pitch note transcription CNN (22.05 kHz, 2 s windows of 43844 samples, "
        "input (windows, 43844, 1); outputs onset, note (172 x 88 keys from A0) and contour "
        "(172 x 264) posteriorgrams). Sites layers.0-14 in data-flow order: "
        + "; ".join(f"{k} {v.split(':')[0]}" for k, v in SITE_ROLES.items())
    ),
)


# --------------------------------------------------------------------------------------
# Conversion
# --------------------------------------------------------------------------------------
def onnx_path() -> Path:
    """The bundled ``nmp.onnx`` (found through package metadata; ``basic_pitch`` not imported)."""
    dist = distribution(PACKAGE, "basic-pitch")
    path = Path(str(dist.locate_file(ONNX_RELPATH)))
    if not path.is_file():
        raise EmbeddedModelUnavailableError(
            f"{PACKAGE} {dist.version} has no {ONNX_RELPATH} (looked at {path})"
        )
    return path


@functools.cache
def _any_axis_pad_class() -> type:
    import torch
    from torch import nn

    class AnyAxisPad(nn.Module):
        """ONNX ``Pad`` in reflect/edge mode on any axes (onnx2torch only pads trailing ones)."""

        def __init__(self, mode: str) -> None:
            super().__init__()
            self.mode = mode

        def extra_repr(self) -> str:
            return f"mode={self.mode!r}"

        def forward(
            self, x: torch.Tensor, pads: torch.Tensor, constant_value: Any = None
        ) -> torch.Tensor:
            p = [int(v) for v in pads.tolist()]
            n = x.dim()
            for axis in range(n):
                before, after = p[axis], p[axis + n]
                if before == 0 and after == 0:
                    continue
                if min(before, after) < 0:
                    raise ValueError("negative pads are not supported")
                length = x.shape[axis]
                idx = torch.arange(-before, length + after, device=x.device)
                if self.mode == "reflect":
                    if max(before, after) >= length:
                        raise ValueError(
                            f"reflect pad {before}/{after} needs more than {length} samples"
                        )
                    idx = idx.abs()
                    idx = torch.where(idx > length - 1, 2 * (length - 1) - idx, idx)
                else:  # edge / replicate
                    idx = idx.clamp(0, length - 1)
                x = x.index_select(axis, idx)
            return x

    return AnyAxisPad


@functools.cache
def _tuple_slice_class() -> type:
    import torch
    from onnx2torch.node_converters.slice import OnnxSlice, _get_slices

    class TupleSlice(OnnxSlice):
        """onnx2torch's ``OnnxSlice`` indexing with a tuple, not a list, of slices.

        Indexing with a list of slices is deprecated in torch (it warns on every call and may
        one day be read as a tensor index); the result is the same.
        """

        def forward(
            self,
            input_tensor: torch.Tensor,
            starts: torch.Tensor,
            ends: torch.Tensor,
            axes: torch.Tensor | None = None,
            steps: torch.Tensor | None = None,
        ) -> torch.Tensor:
            if torch.onnx.is_in_onnx_export():
                return super().forward(input_tensor, starts, ends, axes, steps)
            flip, pos, neg = _get_slices(starts, ends, axes, steps)
            x = input_tensor
            if flip:
                x = torch.flip(x, dims=flip)
            if pos:
                x = x[tuple(pos)]
            if neg:
                x = x[tuple(neg)]
            return x

    return TupleSlice


def _swap_modules(gm: torch.nn.Module) -> dict[str, int]:
    """Fix two onnx2torch gaps in place, keeping module names (so sites stay put).

    Reflect/edge ``OnnxPadDynamic`` → :class:`AnyAxisPad`; ``OnnxSlice`` → ``TupleSlice``.
    """
    from onnx2torch.node_converters.pad import OnnxPadDynamic
    from onnx2torch.node_converters.slice import OnnxSlice

    pad_cls, slice_cls = _any_axis_pad_class(), _tuple_slice_class()
    counts = {"pad": 0, "slice": 0}
    for name, mod in list(gm.named_modules()):
        if isinstance(mod, OnnxPadDynamic) and mod.mode in ("reflect", "replicate"):
            new: torch.nn.Module = pad_cls(mod.mode)
            counts["pad"] += 1
        elif type(mod) is OnnxSlice:
            new = slice_cls()
            counts["slice"] += 1
        else:
            continue
        parent_name, _, attr = name.rpartition(".")
        parent = gm.get_submodule(parent_name) if parent_name else gm
        parent._modules[attr] = new
    return counts


def _rename_input(gm: Any, name: str = "x") -> None:
    placeholders = [node for node in gm.graph.nodes if node.op == "placeholder"]
    if len(placeholders) != 1:
        raise RuntimeError(f"expected one graph input, found {len(placeholders)}")
    node = placeholders[0]
    node.target = name
    node.name = name
    gm.graph.lint()
    gm.recompile()


def convert_basic_pitch(path: str | Path | None = None) -> Any:
    """The ONNX network as a torch ``fx.GraphModule`` (eval mode) taking ``x``."""
    from soundlens.models.embedded.onnx_util import convert, import_onnx2torch

    import_onnx2torch()
    gm = convert(path or onnx_path())
    counts = _swap_modules(gm)
    if counts["pad"] == 0:
        raise RuntimeError("no reflect Pad found in the basic-pitch graph: unexpected ONNX file")
    _rename_input(gm, "x")
    return gm.eval()


def load_basic_pitch() -> LoadedModel:
    """Basic-pitch as a LoadedModel of family ``basic-pitch`` (converted on each call, ~0.1 s)."""
    from soundlens.models.loaded import LoadedModel

    t0 = time.perf_counter()
    path = onnx_path()
    model = convert_basic_pitch(path)
    version = importlib.metadata.version(PACKAGE)
    return LoadedModel(
        name="basic-pitch",
        model=model,
        processor=None,
        spec=BASIC_PITCH_SPEC,
        source=f"{PACKAGE} {version} ({ONNX_RELPATH} converted by onnx2torch)",
        extras={
            "basic_pitch": {
                "onnx": str(path),
                "outputs": list(OUTPUT_NAMES),
                "window_samples": AUDIO_N_SAMPLES,
                "hop_samples": HOP_SAMPLES,
                "frames_per_window": FRAMES_PER_WINDOW,
                "fps": ANNOTATIONS_FPS,
                "midi_offset": MIDI_OFFSET,
                "site_roles": dict(SITE_ROLES),
                "load_seconds": round(time.perf_counter() - t0, 3),
            }
        },
    )


# --------------------------------------------------------------------------------------
# Running it
# --------------------------------------------------------------------------------------
def run_windows(lm: LoadedModel, x: Any, batch_size: int = 8) -> dict[str, np.ndarray]:
    """Run the torch module on windows ``(n, 43844, 1)``: {onset, note, contour} numpy arrays."""
    import torch

    xt = torch.as_tensor(np.asarray(x, dtype=np.float32)) if not torch.is_tensor(x) else x
    outs: dict[str, list[np.ndarray]] = {k: [] for k in OUTPUT_NAMES}
    with torch.no_grad():
        for i in range(0, xt.shape[0], batch_size):
            res = lm.model(x=xt[i : i + batch_size])
            for k, v in zip(OUTPUT_NAMES, res, strict=True):
                outs[k].append(v.detach().cpu().numpy())
    return {k: np.concatenate(v, axis=0) for k, v in outs.items()}


def run_onnxruntime(x: np.ndarray, path: str | Path | None = None) -> dict[str, np.ndarray]:
    """The original ONNX graph under onnxruntime (CPU), for checking the conversion."""
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path or onnx_path()), providers=["CPUExecutionProvider"])
    names = list(ONNX_OUTPUTS)
    res = sess.run(names, {ONNX_INPUT: np.asarray(x, dtype=np.float32)})
    return {ONNX_OUTPUTS[n]: r for n, r in zip(names, res, strict=True)}


def model_output(
    lm: LoadedModel, audio: np.ndarray, sampling_rate: int = SAMPLE_RATE
) -> dict[str, np.ndarray]:
    """One clip → unwrapped {onset (frames, 88), note (frames, 88), contour (frames, 264)}."""
    inputs = lm.inputs(audio, sampling_rate=sampling_rate)
    n_samples = int(np.asarray(audio).reshape(-1).shape[0])
    raw = run_windows(lm, inputs["x"])
    return {k: unwrap(v, n_samples) for k, v in raw.items()}


def note_activations(
    lm: LoadedModel, audio: np.ndarray, sampling_rate: int = SAMPLE_RATE
) -> np.ndarray:
    """One clip → note posteriorgram ``(frames, 88)``; column ``p`` is MIDI pitch ``p + 21``."""
    return model_output(lm, audio, sampling_rate)["note"]


def _inferred_onsets(onsets: np.ndarray, frames: np.ndarray, n_diff: int = 2) -> np.ndarray:
    diffs = []
    for n in range(1, n_diff + 1):
        appended = np.concatenate([np.zeros((n, frames.shape[1])), frames])
        diffs.append(appended[n:, :] - appended[:-n, :])
    frame_diff = np.min(diffs, axis=0)
    frame_diff[frame_diff < 0] = 0
    frame_diff[:n_diff, :] = 0
    peak = np.max(frame_diff)
    if peak > 0:
        frame_diff = np.max(onsets) * frame_diff / peak
    return np.max([onsets, frame_diff], axis=0)


def notes_from_posteriorgrams(
    note: np.ndarray,
    onset: np.ndarray,
    onset_threshold: float = 0.5,
    frame_threshold: float = 0.3,
    min_note_frames: int = 11,
    infer_onsets: bool = True,
    melodia_trick: bool = True,
    energy_tol: int = 11,
) -> list[tuple[int, int, int, float]]:
    """basic-pitch's ``output_to_notes_polyphonic`` (Apache-2.0, Spotify), without pitch bends.

    Returns ``(start_frame, end_frame, midi_pitch, amplitude)`` tuples.
    """
    from scipy.signal import argrelmax

    frames = np.array(note, dtype=np.float64)
    onsets = np.array(onset, dtype=np.float64)
    n_frames = frames.shape[0]
    if n_frames == 0:
        return []
    max_idx = frames.shape[1] - 1
    if infer_onsets:
        onsets = _inferred_onsets(onsets, frames)
    peak_mat = np.zeros(onsets.shape)
    peaks = argrelmax(onsets, axis=0)
    peak_mat[peaks] = onsets[peaks]
    t_idx, f_idx = np.where(peak_mat >= onset_threshold)
    remaining = frames.copy()
    events: list[tuple[int, int, int, float]] = []

    def clear(sl: Any, f: int) -> None:
        remaining[sl, f] = 0
        if f < max_idx:
            remaining[sl, f + 1] = 0
        if f > 0:
            remaining[sl, f - 1] = 0

    for start, f in zip(t_idx[::-1], f_idx[::-1], strict=True):  # backwards in time
        if start >= n_frames - 1:
            continue
        i, k = start + 1, 0
        while i < n_frames - 1 and k < energy_tol:
            k = k + 1 if remaining[i, f] < frame_threshold else 0
            i += 1
        i -= k
        if i - start <= min_note_frames:
            continue
        clear(slice(start, i), f)
        events.append((int(start), int(i), int(f) + MIDI_OFFSET, float(frames[start:i, f].mean())))

    if melodia_trick:
        while np.max(remaining) > frame_threshold:
            mid, f = np.unravel_index(np.argmax(remaining), remaining.shape)
            remaining[mid, f] = 0
            i, k = mid + 1, 0
            while i < n_frames - 1 and k < energy_tol:
                k = k + 1 if remaining[i, f] < frame_threshold else 0
                clear(i, f)
                i += 1
            end = i - 1 - k
            i, k = mid - 1, 0
            while i > 0 and k < energy_tol:
                k = k + 1 if remaining[i, f] < frame_threshold else 0
                clear(i, f)
                i -= 1
            start = i + 1 + k
            if end - start <= min_note_frames:
                continue
            events.append(
                (int(start), int(end), int(f) + MIDI_OFFSET, float(frames[start:end, f].mean()))
            )
    return events


def transcribe_notes(
    lm: LoadedModel,
    audio: np.ndarray,
    sampling_rate: int = SAMPLE_RATE,
    onset_threshold: float = 0.5,
    frame_threshold: float = 0.3,
    min_note_ms: float = 127.70,
    melodia_trick: bool = True,
) -> list[tuple[float, float, int]]:
    """One clip → notes ``(onset_s, offset_s, midi_pitch)`` sorted by onset, then pitch.

    Defaults are basic-pitch's ``predict`` defaults (onset 0.5, frame 0.3, 127.7 ms minimum,
    inferred onsets, melodia trick); no pitch bends.
    """
    out = model_output(lm, audio, sampling_rate)
    min_frames = int(np.round(min_note_ms / 1000 * (SAMPLE_RATE / FFT_HOP)))
    events = notes_from_posteriorgrams(
        out["note"],
        out["onset"],
        onset_threshold=onset_threshold,
        frame_threshold=frame_threshold,
        min_note_frames=min_frames,
        melodia_trick=melodia_trick,
    )
    times = frame_times(out["note"].shape[0] + 1)
    notes = [(float(times[s]), float(times[e]), int(p)) for s, e, p, _ in events]
    return sorted(notes, key=lambda n: (n[0], n[2]))


__all__ = [
    "BASIC_PITCH_SPEC",
    "EXTRA_SITES",
    "OUTPUT_NAMES",
    "SITE_ROLES",
    "TIME_MAJOR_4D_SITES",
    "clip_slices",
    "convert_basic_pitch",
    "frame_clip",
    "load_basic_pitch",
    "model_output",
    "note_activations",
    "notes_from_posteriorgrams",
    "onnx_path",
    "prepare",
    "run_onnxruntime",
    "run_windows",
    "transcribe_notes",
    "unwrap",
    "valid_fraction",
    "window_counts",
]

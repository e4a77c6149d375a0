"""basic-pitch converted from ONNX to torch: framing, equivalence, transcription, hooks."""

from __future__ import annotations

import importlib.metadata
import importlib.util
from pathlib import Path

import numpy as np
import pytest

from soundlens.models.embedded import basic_pitch as bp

SR = bp.SAMPLE_RATE
ALSA_SPEECH = Path("/usr/share/sounds/alsa/Front_Center.wav")
SOUNDFONT = Path("/usr/share/sounds/sf2/FluidR3_GM.sf2")


def _installed(dist: str) -> bool:
    try:
        importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


needs_model = pytest.mark.skipif(
    not (_installed("basic-pitch") and _installed("onnx2torch") and _installed("onnxruntime")),
    reason="needs basic-pitch, onnx2torch and onnxruntime (pip install --no-deps basic-pitch)",
)


@pytest.fixture(scope="module")
def lm():
    return bp.load_basic_pitch()


def harmonic_tone(midi: int, dur: float, start: float = 0.0, total: float = 1.4) -> np.ndarray:
    """A decaying tone with 7 harmonics (amplitudes 0.6**k), starting at ``start`` seconds."""
    f0 = 440.0 * 2 ** ((midi - 69) / 12)
    t = np.arange(int(dur * SR)) / SR
    y = sum(
        0.6**k * np.sin(2 * np.pi * f0 * (k + 1) * t) for k in range(7) if f0 * (k + 1) < SR / 2
    )
    y = y * np.minimum(1.0, t / 0.01) * np.exp(-1.5 * t)
    out = np.zeros(int(total * SR))
    i = int(start * SR)
    out[i : i + y.shape[0]] = y
    return out


def chord(pitches: tuple[int, ...], start: float = 0.3) -> np.ndarray:
    y = sum(harmonic_tone(p, 1.0, start=start) for p in pitches)
    return (0.3 * y / np.abs(y).max()).astype(np.float32)


def fluidsynth_chord(pitches: tuple[int, ...]) -> np.ndarray | None:
    """A 1.35 s piano chord (GM program 0) from FluidR3_GM, or None when unavailable."""
    if importlib.util.find_spec("fluidsynth") is None or not SOUNDFONT.is_file():
        return None
    try:
        import fluidsynth

        synth = fluidsynth.Synth(samplerate=float(SR))
    except Exception:  # noqa: BLE001 - missing libfluidsynth
        return None
    try:
        sfid = synth.sfload(str(SOUNDFONT))
        synth.program_select(0, sfid, 0, 0)
        for p in pitches:
            synth.noteon(0, p, 100)
        on = synth.get_samples(int(1.1 * SR))
        for p in pitches:
            synth.noteoff(0, p)
        off = synth.get_samples(int(0.25 * SR))
    finally:
        synth.delete()
    stereo = np.concatenate([on, off]).astype(np.float32).reshape(-1, 2)
    return stereo.mean(axis=1) / 32768.0


def real_clips() -> list[tuple[str, np.ndarray]]:
    """Recorded speech (alsa-utils' Front_Center.wav) and a rendered piano chord, if present."""
    clips = []
    if ALSA_SPEECH.is_file():
        import soundfile as sf
        from scipy.signal import resample_poly

        y, sr = sf.read(str(ALSA_SPEECH), dtype="float32", always_2d=True)
        y = y.mean(axis=1)
        if sr == 48000:
            y = resample_poly(y, 147, 320).astype(np.float32)
        if sr in (48000, SR):
            clips.append(("alsa Front_Center.wav (speech)", y))
    piano = fluidsynth_chord((60, 64, 67))
    if piano is not None:
        clips.append(("FluidR3 piano C major", piano))
    return clips


# --------------------------------------------------------------------------------------
# Framing (no model)
# --------------------------------------------------------------------------------------
def test_window_constants_match_basic_pitch():
    assert bp.AUDIO_N_SAMPLES == 43844
    assert bp.HOP_SAMPLES == 43844 - 30 * 256
    assert bp.ANNOTATIONS_FPS == 86


def test_short_clip_is_one_padded_window():
    clip = np.linspace(-0.5, 0.5, 1000, dtype=np.float32)
    w = bp.frame_clip(clip)
    assert w.shape == (1, 43844, 1)
    assert np.all(w[0, :3840, 0] == 0)
    np.testing.assert_array_equal(w[0, 3840:4840, 0], clip)
    assert np.all(w[0, 4840:, 0] == 0)


def test_long_clip_windows_overlap_like_basic_pitch():
    assert bp.n_windows(36164 - 3840) == 1
    assert bp.n_windows(36164 - 3840 + 1) == 2
    clip = np.arange(100_000, dtype=np.float32)
    w = bp.frame_clip(clip)
    assert w.shape[0] == bp.n_windows(100_000) == 3
    # window k starts at sample k*hop of the clip padded with 3840 zeros in front
    np.testing.assert_array_equal(w[1, :10, 0], clip[36164 - 3840 : 36164 - 3840 + 10])
    # consecutive windows share 30 frames (7680 samples)
    np.testing.assert_array_equal(w[0, 36164:, 0], w[1, : 43844 - 36164, 0])


def test_prepare_stacks_clips_and_unwrap_trims():
    clips = [np.zeros(500, np.float32), np.zeros(3 * SR, np.float32)]
    x = bp.prepare(None, clips)["x"]
    assert tuple(x.shape) == (sum(bp.window_counts(clips)), 43844, 1) == (3, 43844, 1)
    assert bp.clip_slices(clips) == [slice(0, 1), slice(1, 3)]
    out = np.zeros((2, 172, 88), np.float32)
    assert bp.unwrap(out, 3 * SR).shape == (int(3 * SR * 86 / SR), 88)


def test_valid_fraction_per_window():
    clips = [np.zeros(22050, np.float32), np.zeros(3 * SR, np.float32)]
    x = bp.prepare(None, clips)
    frac = bp.valid_fraction(None, x, [22050, 3 * SR])
    assert len(frac) == 3
    assert frac[0] == pytest.approx((3840 + 22050) / 43844)
    assert frac[1] == 1.0
    assert frac[2] == pytest.approx((3840 + 3 * SR - 36164) / 43844)
    assert bp.valid_fraction(None, x, [22050]) is None  # does not describe the batch


# --------------------------------------------------------------------------------------
# The converted model
# --------------------------------------------------------------------------------------
@pytest.mark.slow
@needs_model
def test_torch_matches_onnxruntime_on_real_audio(lm):
    clips = real_clips()
    if not clips:  # no recordings on this machine: fall back to a synthetic chord plus noise
        rng = np.random.default_rng(0)
        clips = [("synthetic", chord((60, 64, 67)) + 0.01 * rng.standard_normal(int(1.4 * SR)))]
    # the clips joined into one clip of several windows (speech + piano: 2.8 s, 2 windows)
    audio = np.concatenate([c for _, c in clips] * (1 if len(clips) > 1 else 2)).astype(np.float32)
    x = lm.inputs(audio, sampling_rate=SR)["x"]
    assert x.shape[0] >= 2
    got = bp.run_windows(lm, x)
    ref = bp.run_onnxruntime(x.numpy())
    for name in bp.OUTPUT_NAMES:
        assert got[name].shape == ref[name].shape
        rel = float(np.abs(got[name] - ref[name]).max() / np.abs(ref[name]).max())
        print(f"{name}: relative max error {rel:.2e} ({[n for n, _ in clips]})")
        assert rel < 1e-4, name


@pytest.mark.slow
@needs_model
@pytest.mark.parametrize(
    ("pitches", "wrong"),
    [((60, 64, 67), 62), ((62, 66, 69), 60)],  # C major must not give D4; D major not C4
    ids=["C-major", "D-major-control"],
)
def test_transcribes_triad(lm, pitches, wrong):
    audio = chord(pitches, start=0.3)
    notes = bp.transcribe_notes(lm, audio)
    found = {p for _, _, p in notes}
    assert found == set(pitches), notes
    assert wrong not in found
    for onset, offset, _ in notes:
        assert abs(onset - 0.3) < 0.06, notes
        assert offset - onset > 0.7, notes
    act = bp.note_activations(lm, audio)
    assert act.shape == (int(audio.shape[0] * 86 / SR), 88)
    sounding = act[int(0.4 * 86) : int(1.1 * 86)].mean(axis=0)
    assert all(sounding[p - 21] > 0.5 for p in pitches), sounding[pitches[0] - 21 :][:10]
    assert sounding[wrong - 21] < 0.2


@pytest.mark.slow
@needs_model
def test_transcribes_rendered_piano_triad(lm):
    audio = fluidsynth_chord((60, 64, 67))
    if audio is None:
        pytest.skip("pyfluidsynth or FluidR3_GM.sf2 not available")
    found = {p for _, _, p in bp.transcribe_notes(lm, audio)}
    assert {60, 64, 67} <= found
    assert 62 not in found
    # a piano chord may add octave errors, never another pitch class
    assert {p % 12 for p in found} <= {0, 4, 7}, found


@pytest.mark.slow
@needs_model
def test_all_sites_resolve_and_hooks_fire(lm):
    import torch

    sites = lm.sites()
    assert list(sites) == [f"layers.{i}" for i in range(len(bp.EXTRA_SITES))]
    assert set(sites) == set(bp.SITE_ROLES)
    seen: dict[str, tuple[int, ...]] = {}
    handles = [
        lm.module(name).register_forward_hook(
            lambda mod, args, out, name=name: seen.__setitem__(name, tuple(out.shape))
        )
        for name in sites
    ]
    x = lm.inputs(chord((60, 64, 67)), sampling_rate=SR)
    assert tuple(x["x"].shape) == (1, 43844, 1)
    try:
        with torch.no_grad():
            lm.model(**x)
    finally:
        for h in handles:
            h.remove()
    assert set(seen) == set(sites)
    assert seen["layers.0"] == (1, 172, 309)
    assert seen["layers.2"] == (1, 8, 172, 264)
    assert seen["layers.6"] == (1, 1, 172, 264)
    assert seen["layers.10"] == (1, 1, 172, 88)
    assert seen["layers.14"] == (1, 1, 172, 88)


@pytest.mark.slow
@needs_model
def test_hook_on_note_site_edits_output(lm):
    import torch

    x = lm.inputs(chord((60, 64, 67)), sampling_rate=SR)
    handle = lm.module("layers.10").register_forward_hook(lambda m, a, out: torch.zeros_like(out))
    try:
        with torch.no_grad():
            onset, note, contour = lm.model(**x)
    finally:
        handle.remove()
    assert float(note.abs().max()) == 0.0
    with torch.no_grad():
        _, note_clean, contour_clean = lm.model(**x)
    assert float(note_clean.max()) > 0.5
    torch.testing.assert_close(contour, contour_clean)  # upstream of the edit: unchanged

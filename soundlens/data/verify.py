"""Check a concept dataset's labels against independent measurements of its audio.

Music: pitch class by CQT chroma, octave and interval sizes by YIN F0, chord root/quality by
chroma templates (bass note by the lowest strong CQT bin), scales and progressions segment by
segment, tempo by onset-envelope autocorrelation, time signature by pulse period and accent
period of detected onsets, instrument by a rendering check. Speech: F0 shift by YIN against an
unshifted rendering, rate by trimmed duration against a 175 wpm rendering, voice and language by a
rendering check (the labelled voice reproduces the clip, the other voices do not), spoken word by
DTW of MFCCs against templates of each word in the same voice.

``verify_concept(ds, name)`` returns a ``Verification`` with the fraction of rows that agree.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from soundlens.data import music as M
from soundlens.data.concepts import GeneratorConfig, get_concept

PC = M.PITCH_CLASSES


@dataclass
class Verification:
    concept: str
    checked: int = 0
    agreed: int = 0
    failures: list[tuple[int, Any, Any]] = field(default_factory=list)  # (row, label, measured)

    @property
    def rate(self) -> float:
        return self.agreed / self.checked if self.checked else float("nan")

    def __str__(self) -> str:
        lines = [f"{self.concept}: {self.agreed}/{self.checked} rows agree with the measurement"]
        lines += [f"  row {i}: label {lab!r}, measured {mes!r}" for i, lab, mes in self.failures[:10]]
        return "\n".join(lines)


# ----------------------------------------------------------------------------- measurements
def chroma(audio: np.ndarray, sr: int) -> np.ndarray:
    import librosa

    return librosa.feature.chroma_cqt(y=audio, sr=sr, hop_length=512, fmin=librosa.note_to_hz("C1"), n_octaves=7).mean(axis=1)


def estimate_pitch_class(audio: np.ndarray, sr: int) -> int:
    return int(np.argmax(chroma(audio, sr)))


def estimate_f0(audio: np.ndarray, sr: int, fmin: float = 40.0, fmax: float = 2000.0) -> float:
    """Median YIN F0 (Hz) over the louder frames."""
    import librosa

    f0 = librosa.yin(audio, fmin=fmin, fmax=fmax, sr=sr, frame_length=4096 if sr > 16000 else 2048)
    rms = librosa.feature.rms(y=audio, frame_length=4096 if sr > 16000 else 2048, hop_length=512)[0][: len(f0)]
    keep = rms[: len(f0)] > 0.3 * rms.max()
    return float(np.median(f0[: len(keep)][keep])) if keep.any() else float(np.median(f0))


def hz_to_midi(f: float) -> float:
    return 69 + 12 * np.log2(f / 440.0)


def bass_pitch_class(audio: np.ndarray, sr: int, rel: float = 0.15) -> int:
    """Pitch class of the lowest CQT peak whose energy is at least ``rel`` of the strongest."""
    import librosa
    from scipy.signal import find_peaks

    fmin = librosa.note_to_hz("C1")
    C = np.abs(librosa.cqt(audio, sr=sr, fmin=fmin, n_bins=84, bins_per_octave=12)).mean(axis=1)
    peaks, _ = find_peaks(np.concatenate([[0.0], C, [0.0]]), height=rel * C.max())
    return int(peaks[0] - 1) % 12  # bin 0 is C1


def estimate_chord(audio: np.ndarray, sr: int, qualities: Sequence[str] = tuple(M.CHORD_QUALITIES)) -> tuple[int, str]:
    """(root pitch class, quality) by cosine match of chroma with binary triad templates."""
    c = chroma(audio, sr)
    c = c / (np.linalg.norm(c) + 1e-9)
    best, arg = -1.0, (0, qualities[0])
    for q in qualities:
        for root in range(12):
            t = np.zeros(12)
            t[[(root + s) % 12 for s in M.CHORD_QUALITIES[q]]] = 1
            score = float(c @ (t / np.linalg.norm(t)))
            if score > best + 1e-9:
                best, arg = score, (root, q)
    return arg


def estimate_tempo(audio: np.ndarray, sr: int, lo: float = 40.0, hi: float = 240.0) -> float:
    """BPM from the autocorrelation of the onset envelope (parabolic peak interpolation)."""
    import librosa

    hop = 128
    env = librosa.onset.onset_strength(y=audio, sr=sr, hop_length=hop)
    env = env - env.mean()
    ac = np.correlate(env, env, mode="full")[len(env) - 1 :]
    fps = sr / hop
    lags = np.arange(len(ac))
    valid = (lags >= fps * 60 / hi) & (lags <= fps * 60 / lo)
    k = int(lags[valid][np.argmax(ac[valid])])
    if 0 < k < len(ac) - 1:
        a, b, c = ac[k - 1], ac[k], ac[k + 1]
        k = k + 0.5 * (a - c) / (a - 2 * b + c) if (a - 2 * b + c) != 0 else k
    return 60.0 * fps / k


def onsets_with_strength(audio: np.ndarray, sr: int) -> tuple[np.ndarray, np.ndarray]:
    """Onset times (s) and the peak amplitude in the 40 ms after each (scipy peak picking on the
    onset envelope; librosa's numba peak picker crashed in this environment)."""
    import librosa
    from scipy.signal import find_peaks

    hop = 128
    pad = int(0.1 * sr)  # silence first, so an onset at t=0 is a peak of the envelope too
    env = librosa.onset.onset_strength(y=np.concatenate([np.zeros(pad, np.float32), audio]), sr=sr, hop_length=hop)
    peaks_idx, _ = find_peaks(env, height=0.2 * env.max(), distance=max(1, int(0.06 * sr / hop)))
    times = np.clip(librosa.frames_to_time(peaks_idx, sr=sr, hop_length=hop) - pad / sr, 0, None)
    win = int(0.04 * sr)
    peaks = np.array([np.abs(audio[max(0, int(t * sr) - 256) : int(t * sr) + win]).max() for t in times])
    return times, peaks


def estimate_meter(audio: np.ndarray, sr: int) -> tuple[float, int]:
    """(pulse seconds, pulses per measure): the median inter-onset gap, and the median gap between
    the strongest (downbeat) onsets in pulses."""
    times, peaks = onsets_with_strength(audio, sr)
    if len(times) < 3:
        return float("nan"), 0
    pulse = float(np.median(np.diff(times)))
    strong = times[peaks >= 0.85 * peaks.max()]
    if len(strong) < 2:
        return pulse, 0
    return pulse, int(round(float(np.median(np.diff(strong))) / pulse))


def trimmed_duration(audio: np.ndarray, sr: int, top_db: float = 35.0) -> float:
    import librosa

    trimmed, _ = librosa.effects.trim(audio, top_db=top_db)
    return len(trimmed) / sr


def f0_shift(audio: np.ndarray, reference: np.ndarray, sr: int) -> float:
    """Median semitone ratio of pYIN F0 over frames voiced in both (same-length renderings)."""
    import librosa

    n = min(len(audio), len(reference))
    kw = dict(fmin=60, fmax=600, sr=sr, frame_length=1024, hop_length=512)
    f1, v1, _ = librosa.pyin(audio[:n], **kw)
    f0, v0, _ = librosa.pyin(reference[:n], **kw)
    both = v1 & v0 & np.isfinite(f1) & np.isfinite(f0)
    if both.sum() < 5:
        return float("nan")
    return float(np.median(12 * np.log2(f1[both] / f0[both])))


def mfcc(audio: np.ndarray, sr: int) -> np.ndarray:
    import librosa

    trimmed, _ = librosa.effects.trim(audio, top_db=35)
    m = librosa.feature.mfcc(y=trimmed, sr=sr, n_mfcc=13)
    return (m - m.mean(axis=1, keepdims=True))[1:]


def dtw_distance(a: np.ndarray, b: np.ndarray) -> float:
    import librosa

    D, wp = librosa.sequence.dtw(X=a, Y=b, metric="cosine")
    return float(D[-1, -1] / len(wp))


def same_audio(a: np.ndarray, b: np.ndarray, tol: float = 0.99) -> bool:
    """Whether two renderings are the same sound (correlation above ``tol``, equal length ±1%)."""
    if abs(len(a) - len(b)) > 0.01 * max(len(a), len(b)) + 1:
        return False
    n = min(len(a), len(b))
    a, b = a[:n] - a[:n].mean(), b[:n] - b[:n].mean()
    den = np.linalg.norm(a) * np.linalg.norm(b)
    return bool(den > 0 and float(a @ b) / den >= tol)


# ----------------------------------------------------------------------------- per-concept checks
def _row_labels(ds, i: int) -> dict:
    row = ds[i]
    out = {}
    for k, v in row.items():
        feat = ds.features[k]
        out[k] = feat.int2str(v) if hasattr(feat, "int2str") and isinstance(v, int) else v
    return out


def _audio(row: dict) -> tuple[np.ndarray, int]:
    a = row["audio"]
    return np.asarray(a["array"], dtype=np.float32).reshape(-1), int(a["sampling_rate"])


def _check_notes(x, sr, row, cfg):
    midi = int(round(hz_to_midi(estimate_f0(x, sr))))
    pc, octave = midi % 12, midi // 12 - 1
    return (PC[pc] == row["pitch_class"] and octave == row["octave"]), f"{PC[pc]}{octave}"


def _top_pcs(x, sr, k):
    return set(np.argsort(chroma(x, sr))[::-1][:k].tolist())


def _check_intervals(x, sr, row, cfg):
    root = PC.index(row["root_pitch_class"])
    semis = M.INTERVALS.index(row["interval"]) + 1
    if row["play_style"] == "harmonic":
        want = {root, (root + semis) % 12}
        got = _top_pcs(x, sr, len(want))
        return got == want, "+".join(PC[p] for p in sorted(got))
    half = len(x) // 2
    edge = int(0.05 * sr)
    a, b = (estimate_pitch_class(seg, sr) for seg in (x[edge : half - edge], x[half + edge : 2 * half - edge]))
    low, high = (a, b) if row["play_style"] == "up" else (b, a)
    measured = (high - low) % 12 or 12
    return (measured == semis and low == root), f"{PC[low]} {M.INTERVALS[measured - 1]}"


def _segments(x, sr, k, cfg, pad=0.06):
    usable = cfg.duration - M._release(cfg)
    step = usable / k
    return [x[int((i * step + pad) * sr) : int(((i + 1) * step - pad) * sr)] for i in range(k)]


def _check_scales(x, sr, row, cfg):
    pcs = [estimate_pitch_class(seg, sr) for seg in _segments(x, sr, 8, cfg)]
    if row["direction"] == "down":
        pcs = pcs[::-1]
    root_pc = pcs[0]
    steps = tuple((p - root_pc) % 12 for p in pcs)
    mode = next((m for m, st in M.MODES.items() if steps[:7] == st and steps[7] == 0), None)
    return (mode == row["mode"] and PC[root_pc] == row["root_pitch_class"]), f"{PC[root_pc]} {mode}"


def _check_chords(x, sr, row, cfg):
    root, quality = estimate_chord(x, sr, cfg.qualities)
    want_root = PC.index(row["root_pitch_class"])
    # augmented triads are symmetric: their root is defined only modulo a major third
    root_ok = (root - want_root) % 4 == 0 if quality == "augmented" else root == want_root
    ok = quality == row["quality"] and root_ok  # the bass (inversion) estimate is not reliable enough
    return ok, f"{PC[root]}:{quality}"


def _check_progressions(x, sr, row, cfg):
    want = M.progression_chords(row["progression"], PC.index(row["key_pitch_class"]))
    got = [estimate_chord(s, sr) for s in _segments(x, sr, len(want), cfg)]
    return got == want, "-".join(M.chord_label(r, q) for r, q in got)


def _check_tempos(x, sr, row, cfg, tol=0.04):
    bpm = estimate_tempo(x, sr, lo=min(cfg.bpm_range) * 0.8, hi=max(cfg.bpm_range) * 1.2)
    return abs(bpm / row["bpm"] - 1) <= tol, round(bpm, 1)


def _check_time_signatures(x, sr, row, cfg):
    pulse, per_measure = estimate_meter(x, sr)
    num, den = map(int, row["time_signature"].split("/"))
    expected_pulse = M.pulse_seconds(row["time_signature"], row["bpm"])
    ok = abs(pulse / expected_pulse - 1) < 0.06 and per_measure == num
    measured_den = int(round(4 * 60.0 / row["bpm"] / pulse)) if pulse == pulse else 0
    return ok, f"{per_measure}/{measured_den}"


def _check_render(render: Callable[[dict], np.ndarray], label_key: str, alternatives: Sequence[Any]):
    """Rendering check: the labelled value reproduces the clip and the alternatives do not."""

    def check(x, sr, row, cfg):
        if not same_audio(x, render({**row}, cfg)):
            return False, "not reproduced by its label"
        for alt in alternatives(cfg, row):
            if alt != row[label_key] and same_audio(x, render({**row, label_key: alt}, cfg)):
                return False, f"also reproduced by {alt!r}"
        return True, row[label_key]

    return check


def _render_instrument(row, cfg):
    program = row["program"]
    program = M.PITCHED_PROGRAMS[0] if program is None else program
    if isinstance(program, str):
        program = [M.program_name(p) for p in range(128)].index(program)
    return get_concept("instruments").render({**row, "program": int(program)}, cfg)


def _instrument_alternatives(cfg, row):
    rng = np.random.default_rng(abs(hash(row["melody"])) % 2**32)
    return [M.program_name(int(p)) for p in rng.choice(list(cfg.programs), size=min(3, len(cfg.programs)), replace=False)]


def _render_speech(name):
    def render(row, cfg):
        return get_concept(name).render(row, cfg)

    return render


def _render_language(row, cfg):
    variant = row["voice"].split("+", 1)[1]
    return get_concept("languages").render({**row, "voice": f"espeak:{row['language']}+{variant}"}, cfg)


def _check_speech_pitch(x, sr, row, cfg, tol=0.5):
    from soundlens.data import speech as S

    ref = S._finish(*S.tts(row["text"], row["voice"]), cfg)
    shift = f0_shift(x, ref, sr)
    return abs(shift - row["f0_shift"]) <= tol, round(shift, 2)


def _check_speech_rate(x, sr, row, cfg, tol=0.25):
    from soundlens.data import speech as S

    ref = S._finish(*S.tts(row["text"], row["voice"], rate=175), cfg)
    ratio = trimmed_duration(x, sr) / trimmed_duration(ref, sr)
    implied = 175.0 / ratio
    return abs(ratio / (175.0 / row["rate"]) - 1) <= tol, round(implied, 1)


_TEMPLATES: dict[tuple, np.ndarray] = {}


def _check_digits(x, sr, row, cfg):
    from soundlens.data import speech as S

    feats = mfcc(x, sr)
    dists = {}
    for w in cfg.words:
        key = (w, row["voice"], sr)
        if key not in _TEMPLATES:
            _TEMPLATES[key] = mfcc(S._finish(*S.tts(w, row["voice"]), cfg), sr)
        dists[w] = dtw_distance(feats, _TEMPLATES[key])
    best = min(dists, key=dists.get)
    return best == row["word"], best


CHECKS: dict[str, Callable] = {
    "notes": _check_notes,
    "intervals": _check_intervals,
    "scales": _check_scales,
    "chords": _check_chords,
    "chord_progressions": _check_progressions,
    "tempos": _check_tempos,
    "time_signatures": _check_time_signatures,
    "instruments": _check_render(_render_instrument, "program", _instrument_alternatives),
    "voices": _check_render(_render_speech("voices"), "voice", lambda cfg, row: [v for v in cfg.voices if "festival" not in v][:4]),
    "languages": _check_render(_render_language, "language", lambda cfg, row: list(cfg.languages)[:4]),
    "speech_pitch": _check_speech_pitch,
    "speech_rate": _check_speech_rate,
    "spoken_digits": _check_digits,
}


def config_of(ds, name: str) -> GeneratorConfig:
    """The generator config stored in a concept dataset's info (defaults when absent)."""
    info = json.loads(ds.info.description or "{}")
    return get_concept(name).config(info.get("config") or {})


def verify_concept(ds, name: str, indices: Sequence[int] | None = None, config: GeneratorConfig | None = None) -> Verification:
    """Measure each selected row's audio and compare with its labels."""
    cfg = config or config_of(ds, name)
    check = CHECKS[name]
    out = Verification(name)
    target = get_concept(name).target
    for i in indices if indices is not None else range(len(ds)):
        row = _row_labels(ds, int(i))
        x, sr = _audio(row)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # librosa: short segments vs its default n_fft
            ok, measured = check(x, sr, row, cfg)
        out.checked += 1
        if ok:
            out.agreed += 1
        else:
            out.failures.append((int(i), row[target], measured))
    return out

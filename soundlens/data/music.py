"""Music concepts in the style of SynTheory: parameters → MIDI (pretty_midi) → audio (FluidSynth).

One persistent FluidSynth synthesizer per process and sample rate (``get_synth``): the soundfont
is loaded once, never per clip. Rendering is sample-exact and deterministic: events are placed on
FluidSynth's 64-sample block grid, reverb and chorus are off, the synth is reset before each clip
and warmed up once after loading, and samples are read as float (no dither).
"""

from __future__ import annotations

import ctypes
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from soundlens.data.concepts import Concept, GeneratorConfig, balanced, register
from soundlens.data.errors import DataError, MissingToolError

PITCH_CLASSES = ("C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B")
INTERVALS = ("m2", "M2", "m3", "M3", "P4", "TT", "P5", "m6", "M6", "m7", "M7", "P8")  # 1..12 semitones
MODES = {
    "ionian": (0, 2, 4, 5, 7, 9, 11),
    "dorian": (0, 2, 3, 5, 7, 9, 10),
    "phrygian": (0, 1, 3, 5, 7, 8, 10),
    "lydian": (0, 2, 4, 6, 7, 9, 11),
    "mixolydian": (0, 2, 4, 5, 7, 9, 10),
    "aeolian": (0, 2, 3, 5, 7, 8, 10),
    "locrian": (0, 1, 3, 5, 6, 8, 10),
}
CHORD_QUALITIES = {"major": (0, 4, 7), "minor": (0, 3, 7), "augmented": (0, 4, 8), "diminished": (0, 3, 6)}
INVERSIONS = ("root", "first", "second")
GM_FAMILIES = (
    "piano", "chromatic percussion", "organ", "guitar", "bass", "strings", "ensemble", "brass",
    "reed", "pipe", "synth lead", "synth pad", "synth effects", "ethnic", "percussive", "sound effects",
)  # fmt: skip

# GM programs whose FluidR3_GM rendering sounds at the written pitch: YIN median F0 within
# 0.3 semitone of the written note at MIDI 40, 52, 60, 69 and 81 (measured on this project's
# machine). Twenty programs from thirteen families, for timbre variety in the pitched concepts.
PITCHED_PROGRAMS = (0, 4, 11, 12, 20, 24, 26, 33, 40, 42, 48, 56, 60, 64, 68, 73, 80, 81, 89, 104)

# Percussion pairs (accent sound, beat sound) as GM drum-kit keys (channel 10, bank 128).
DRUM_SOUNDS = {
    "woodblock": (76, 77),
    "claves": (75, 75),
    "cowbell_stick": (56, 37),
    "kick_hat": (36, 42),
    "bongo": (60, 61),
    "rim_snare": (38, 37),
}

# Chord progressions in the style of SynTheory: 10 in major, 9 in minor (roman numerals over the
# diatonic triads of the major or natural-minor scale).
PROGRESSIONS = {
    "I-IV-V-I": "major", "I-IV-vi-V": "major", "I-V-vi-IV": "major", "I-vi-IV-V": "major",
    "ii-V-I-vi": "major", "IV-I-V-vi": "major", "IV-V-iii-vi": "major", "V-IV-I-V": "major",
    "V-vi-IV-I": "major", "vi-IV-I-V": "major",
    "i-iv-v-i": "minor", "i-VI-III-VII": "minor", "i-VI-VII-i": "minor", "i-VI-VII-III": "minor",
    "i-VII-VI-VII": "minor", "i-iv-VII-III": "minor", "i-III-iv-i": "minor", "iv-VII-i-i": "minor",
    "i-iiø-v-i": "minor",
}  # fmt: skip
_ROMAN = {"i": 0, "ii": 1, "iii": 2, "iv": 3, "v": 4, "vi": 5, "vii": 6}
TIME_SIGNATURES = ("2/2", "2/4", "3/4", "3/8", "4/4", "6/8", "9/8", "12/8")

SOUNDFONT_ENV = "SOUNDLENS_SOUNDFONT"
SOUNDFONT_CANDIDATES = (
    "/usr/share/sounds/sf2/FluidR3_GM.sf2",
    "/usr/share/soundfonts/FluidR3_GM.sf2",
    "/usr/share/sounds/sf2/default-GM.sf2",
    "/usr/share/soundfonts/default.sf2",
)
SOUND_SOURCES_MUSIC = (
    "FluidR3_GM.sf2 soundfont by Frank Wen (Debian package fluid-soundfont-gm), MIT licence",
    "rendered with FluidSynth (LGPL-2.1-or-later) through pyfluidsynth (LGPL-2.1)",
)


def program_name(program: int) -> str:
    import pretty_midi

    return pretty_midi.program_to_instrument_name(int(program))


def chord_label(root_pc: int, quality: str) -> str:
    return f"{PITCH_CLASSES[root_pc % 12]}:{quality}"


# ----------------------------------------------------------------------------- synthesizer
def find_soundfont(path: str | os.PathLike | None = None) -> Path:
    """The soundfont to use: ``path``, else $SOUNDLENS_SOUNDFONT, else a Debian GM soundfont."""
    if path:
        p = Path(path).expanduser()
        if not p.is_file():
            raise MissingToolError(f"soundfont not found: {p}. Pass the path of an existing .sf2 file.")
        return p
    env = os.environ.get(SOUNDFONT_ENV)
    if env:
        return find_soundfont(env)
    for cand in SOUNDFONT_CANDIDATES:
        if Path(cand).is_file():
            return Path(cand)
    raise MissingToolError(
        "no General MIDI soundfont found. Install one (`sudo apt-get install fluid-soundfont-gm`, "
        f"MIT licence) or pass soundfont=PATH / set ${SOUNDFONT_ENV}=PATH to an .sf2 file."
    )


def _import_fluidsynth():
    try:
        import fluidsynth  # type: ignore[import-untyped]
    except ImportError as err:  # the library itself is missing, or pyfluidsynth is
        raise MissingToolError(
            "FluidSynth is not available: `sudo apt-get install fluidsynth` (the library) and "
            f"`pip install pyfluidsynth` (the binding). Import error: {err}"
        ) from err
    return fluidsynth


def check_music_tools(config: MusicConfig) -> None:
    _import_fluidsynth()
    find_soundfont(config.soundfont)


class Synth:
    """A persistent FluidSynth synthesizer: one soundfont load, then many deterministic clips.

    The soundfont is loaded once per process. FluidSynth's voice slots keep filter state from
    note to note, which made a clip depend (by up to 4e-3) on what was rendered before it; so each
    clip gets a fresh voice pool (``new_fluid_synth``, about 2 ms) that shares the loaded
    soundfont, and a clip is a pure function of its MIDI whatever worker renders it.
    """

    BLOCK = 64  # FluidSynth's internal block: events take effect on block boundaries

    def __init__(self, sample_rate: int = 22050, soundfont: str | os.PathLike | None = None, gain: float = 0.4):
        fluidsynth = _import_fluidsynth()
        self.sample_rate = int(sample_rate)
        self.soundfont = find_soundfont(soundfont)
        fl = fluidsynth._fl
        self._fl = fl
        _quiet_fluidsynth(fl)
        settings = {
            "synth.gain": float(gain), "synth.sample-rate": float(self.sample_rate), "synth.midi-channels": 16,
            "synth.reverb.active": 0, "synth.chorus.active": 0, "synth.cpu-cores": 1,
        }  # fmt: skip
        self._loader = fluidsynth.Synth(**{"gain": float(gain), "samplerate": float(self.sample_rate), "channels": 16})
        for key, value in settings.items():
            self._loader.setting(key, value)
        sfid = self._loader.sfload(str(self.soundfont))
        if sfid < 0:
            raise MissingToolError(f"FluidSynth could not load the soundfont {self.soundfont}")
        _declare(fl)
        self._sfont = fl.fluid_synth_get_sfont_by_id(self._loader.synth, sfid)
        self._settings = self._loader.settings
        self.clips_rendered = 0

    def _render_events(self, events: list[tuple], programs: dict[int, tuple[int, int]], n_blocks: int) -> np.ndarray:
        fl = self._fl
        syn = fl.new_fluid_synth(self._settings)
        if not syn:
            raise DataError("FluidSynth could not create a synthesizer")
        try:
            sfid = fl.fluid_synth_add_sfont(syn, self._sfont)
            for chan, (bank, program) in programs.items():
                fl.fluid_synth_program_select(syn, chan, sfid, bank, program)
            out = np.zeros(n_blocks * self.BLOCK, np.float32)
            right = np.zeros(n_blocks * self.BLOCK, np.float32)
            pos = 0

            def advance(until: int) -> None:
                nonlocal pos
                if until > pos:
                    n = (until - pos) * self.BLOCK
                    off = pos * self.BLOCK
                    fl.fluid_synth_write_float(syn, n, out[off:].ctypes.data, 0, 1, right[off:].ctypes.data, 0, 1)
                    pos = until

            for when, kind, chan, key, vel in sorted(events, key=lambda e: (e[0], e[1])):
                advance(min(when, n_blocks))
                if kind == 1:
                    fl.fluid_synth_noteon(syn, chan, int(key), int(vel))
                else:
                    fl.fluid_synth_noteoff(syn, chan, int(key))
            advance(n_blocks)
        finally:
            fl.fluid_synth_remove_sfont(syn, self._sfont)  # the soundfont stays with the loader
            fl.delete_fluid_synth(syn)
        return 0.5 * (out + right)

    def render(self, midi, duration: float | None = None) -> np.ndarray:
        """Mono float32 audio of a ``pretty_midi.PrettyMIDI`` (cut or padded to ``duration`` s)."""
        if duration is None:
            duration = midi.get_end_time() + 0.5
        n = int(round(duration * self.sample_rate))
        n_blocks = math.ceil(n / self.BLOCK)
        to_block = self.sample_rate / self.BLOCK
        events, programs = [], {}
        melodic = [c for c in range(16) if c != 9]
        for i, inst in enumerate(midi.instruments):
            if inst.is_drum:
                chan, bank = 9, 128
            else:
                if i >= len(melodic):
                    raise DataError("at most 15 melodic instruments per clip")
                chan, bank = melodic[i], 0
            programs[chan] = (bank, int(inst.program))
            for note in inst.notes:
                events.append((int(round(note.start * to_block)), 1, chan, note.pitch, note.velocity))
                events.append((int(round(note.end * to_block)), 0, chan, note.pitch, 0))
        audio = self._render_events(events, programs, n_blocks)[:n]
        self.clips_rendered += 1
        return np.clip(audio, -1.0, 1.0).astype(np.float32)


def _declare(fl) -> None:
    v, i, p = ctypes.c_void_p, ctypes.c_int, ctypes.c_void_p
    for name, res, args in (
        ("new_fluid_synth", v, [p]),
        ("delete_fluid_synth", None, [p]),
        ("fluid_synth_get_sfont_by_id", v, [p, i]),
        ("fluid_synth_add_sfont", i, [p, p]),
        ("fluid_synth_remove_sfont", i, [p, p]),
        ("fluid_synth_program_select", i, [p, i, i, i, i]),
        ("fluid_synth_noteon", i, [p, i, i, i]),
        ("fluid_synth_noteoff", i, [p, i, i]),
        ("fluid_synth_write_float", i, [p, i, p, i, i, p, i, i]),
    ):
        fn = getattr(fl, name)
        fn.restype = res
        fn.argtypes = args


def _quiet_fluidsynth(fl) -> None:
    """Silence FluidSynth's warnings (a fresh synth warns about every channel before the
    soundfont is attached); errors still print."""
    fn = fl.fluid_set_log_function
    fn.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p]
    fn.restype = ctypes.c_void_p
    for level in (2, 3, 4):  # FLUID_WARN, FLUID_INFO, FLUID_DBG
        fn(level, None, None)


_SYNTHS: dict[tuple[int, str], Synth] = {}


def get_synth(sample_rate: int, soundfont: str | None = None) -> Synth:
    """This process's synthesizer for (sample rate, soundfont), created on first use."""
    key = (int(sample_rate), str(find_soundfont(soundfont)))
    if key not in _SYNTHS:
        _SYNTHS[key] = Synth(sample_rate, key[1])
    return _SYNTHS[key]


# ----------------------------------------------------------------------------- configs
@dataclass(frozen=True)
class MusicConfig(GeneratorConfig):
    sample_rate: int = 22050
    duration: float = 2.0
    programs: tuple[int, ...] = PITCHED_PROGRAMS
    velocity: tuple[int, ...] = (70, 110)  # inclusive range, drawn per clip
    peak: float = 0.5  # peak-normalise each clip to this level; 0 keeps the synth's level
    soundfont: str | None = None

    def validate(self) -> None:
        super().validate()
        if not 0.25 <= self.duration <= 30:
            raise DataError(f"duration must be within 0.25..30 s, got {self.duration}")
        if not self.programs or any(not 0 <= p <= 127 for p in self.programs):
            raise DataError(f"programs must be GM program numbers 0..127, got {self.programs}")
        if len(self.velocity) != 2 or not 1 <= self.velocity[0] <= self.velocity[1] <= 127:
            raise DataError(f"velocity must be a range (lo, hi) within 1..127, got {self.velocity}")


@dataclass(frozen=True)
class NotesConfig(MusicConfig):
    octaves: tuple[int, ...] = (3, 4, 5)  # scientific octave: C4 = MIDI 60


@dataclass(frozen=True)
class IntervalsConfig(MusicConfig):
    octaves: tuple[int, ...] = (3, 4)  # octave of the lower note's root
    play_styles: tuple[str, ...] = ("up", "down", "harmonic")


@dataclass(frozen=True)
class ScalesConfig(MusicConfig):
    duration: float = 3.0
    modes: tuple[str, ...] = tuple(MODES)
    directions: tuple[str, ...] = ("up", "down")
    octaves: tuple[int, ...] = (3, 4)


@dataclass(frozen=True)
class ChordsConfig(MusicConfig):
    qualities: tuple[str, ...] = tuple(CHORD_QUALITIES)
    inversions: tuple[str, ...] = INVERSIONS
    octaves: tuple[int, ...] = (3, 4)


@dataclass(frozen=True)
class ProgressionsConfig(MusicConfig):
    duration: float = 4.0
    progressions: tuple[str, ...] = tuple(PROGRESSIONS)
    octaves: tuple[int, ...] = (3, 4)


@dataclass(frozen=True)
class TemposConfig(MusicConfig):
    duration: float = 4.0
    bpm_range: tuple[int, ...] = (50, 210)  # integer BPMs, inclusive (SynTheory: 161 values)
    sounds: tuple[str, ...] = tuple(DRUM_SOUNDS)
    max_offset: float = 0.2  # random silence before the first beat, seconds


@dataclass(frozen=True)
class TimeSignaturesConfig(MusicConfig):
    duration: float = 4.0
    signatures: tuple[str, ...] = TIME_SIGNATURES
    bpm_range: tuple[int, ...] = (100, 160)  # quarter notes per minute
    sounds: tuple[str, ...] = tuple(DRUM_SOUNDS)


@dataclass(frozen=True)
class InstrumentsConfig(MusicConfig):
    programs: tuple[int, ...] = tuple(range(128))
    note_range: tuple[int, ...] = (55, 79)  # MIDI notes of the short random melody


def _check_subset(name: str, values, allowed) -> None:
    bad = [v for v in values if v not in allowed]
    if bad or not values:
        raise DataError(f"{name}: unknown value(s) {bad or '(empty)'}; choose from {list(allowed)}")


# ----------------------------------------------------------------------------- MIDI helpers
def _midi(parts: list[tuple[int, bool, list[tuple[int, float, float, int]]]]):
    """PrettyMIDI from [(program, is_drum, [(pitch, start, end, velocity), ...]), ...]."""
    import pretty_midi

    pm = pretty_midi.PrettyMIDI(initial_tempo=120.0)
    for program, is_drum, notes in parts:
        inst = pretty_midi.Instrument(program=int(program), is_drum=is_drum)
        for pitch, start, end, vel in notes:
            inst.notes.append(pretty_midi.Note(velocity=int(vel), pitch=int(pitch), start=float(start), end=float(end)))
        pm.instruments.append(inst)
    return pm


def _synth_for(config: MusicConfig) -> Synth:
    return get_synth(config.sample_rate, config.soundfont)


def _common(rng: np.random.Generator, config: MusicConfig) -> dict:
    program = int(config.programs[rng.integers(len(config.programs))])
    return {
        "program": program,
        "instrument": program_name(program),
        "velocity": int(rng.integers(config.velocity[0], config.velocity[1] + 1)),
    }


def _pc_feature():
    import datasets

    return datasets.ClassLabel(names=list(PITCH_CLASSES))


def _timbre_columns() -> dict:
    import datasets

    return {"program": datasets.Value("int32"), "instrument": datasets.Value("string"), "velocity": datasets.Value("int32")}


def _release(config: MusicConfig) -> float:
    return min(0.3, 0.15 * config.duration)


# ----------------------------------------------------------------------------- notes
def notes_midi(params: dict, config: NotesConfig):
    end = config.duration - _release(config)
    return _midi([(params["program"], False, [(params["midi_note"], 0.0, end, params["velocity"])])])


def _notes_sample(config: NotesConfig, n, rng):
    if any(not -1 <= o <= 9 for o in config.octaves):
        raise DataError(f"octaves must be within -1..9, got {config.octaves}")
    grid = [(pc, o) for o in config.octaves for pc in range(12) if 0 <= 12 * (o + 1) + pc <= 127]
    out = []
    for pc, octave in balanced(grid, n, rng):
        out.append({"pitch_class": PITCH_CLASSES[pc], "octave": octave, "midi_note": 12 * (octave + 1) + pc, **_common(rng, config)})
    return out


def _notes_columns(config):
    import datasets

    return {"pitch_class": _pc_feature(), "octave": datasets.Value("int32"), "midi_note": datasets.Value("int32"), **_timbre_columns()}


def _render(midi_fn):
    def render(params: dict, config: MusicConfig) -> np.ndarray:
        audio = _synth_for(config).render(midi_fn(params, config), config.duration)
        peak = float(np.max(np.abs(audio))) if audio.size else 0.0
        if config.peak > 0 and peak > 0:
            audio = (audio * (config.peak / peak)).astype(np.float32)
        return audio

    return render


# ----------------------------------------------------------------------------- intervals
def intervals_midi(params: dict, config: IntervalsConfig):
    low = params["root_midi"]
    high = low + params["semitones"]
    vel = params["velocity"]
    half = (config.duration - _release(config)) / 2
    style = params["play_style"]
    if style == "harmonic":
        notes = [(low, 0.0, 2 * half, vel), (high, 0.0, 2 * half, vel)]
    elif style == "up":
        notes = [(low, 0.0, half, vel), (high, half, 2 * half, vel)]
    else:
        notes = [(high, 0.0, half, vel), (low, half, 2 * half, vel)]
    return _midi([(params["program"], False, notes)])


def _intervals_sample(config: IntervalsConfig, n, rng):
    _check_subset("play_styles", config.play_styles, ("up", "down", "harmonic"))
    grid = [(i, pc, s) for i in range(1, 13) for pc in range(12) for s in config.play_styles]
    out = []
    for semis, pc, style in balanced(grid, n, rng):
        octave = int(config.octaves[rng.integers(len(config.octaves))])
        out.append({
            "interval": INTERVALS[semis - 1], "semitones": semis, "root_pitch_class": PITCH_CLASSES[pc],
            "root_midi": 12 * (octave + 1) + pc, "play_style": style, **_common(rng, config),
        })  # fmt: skip
    return out


def _intervals_columns(config):
    import datasets

    return {
        "interval": datasets.ClassLabel(names=list(INTERVALS)), "semitones": datasets.Value("int32"),
        "root_pitch_class": _pc_feature(), "root_midi": datasets.Value("int32"),
        "play_style": datasets.Value("string"), **_timbre_columns(),
    }  # fmt: skip


# ----------------------------------------------------------------------------- scales
def scale_notes(params: dict) -> list[int]:
    steps = MODES[params["mode"]]
    notes = [params["root_midi"] + s for s in steps] + [params["root_midi"] + 12]
    return notes if params["direction"] == "up" else notes[::-1]


def scales_midi(params: dict, config: ScalesConfig):
    notes = scale_notes(params)
    step = (config.duration - _release(config)) / len(notes)
    vel = params["velocity"]
    return _midi([(params["program"], False, [(p, i * step, (i + 1) * step, vel) for i, p in enumerate(notes)])])


def _scales_sample(config: ScalesConfig, n, rng):
    _check_subset("modes", config.modes, MODES)
    _check_subset("directions", config.directions, ("up", "down"))
    grid = [(m, pc, d) for m in config.modes for pc in range(12) for d in config.directions]
    out = []
    for mode, pc, direction in balanced(grid, n, rng):
        octave = int(config.octaves[rng.integers(len(config.octaves))])
        out.append({
            "mode": mode, "root_pitch_class": PITCH_CLASSES[pc], "root_midi": 12 * (octave + 1) + pc,
            "direction": direction, **_common(rng, config),
        })  # fmt: skip
    return out


def _scales_columns(config):
    import datasets

    return {
        "mode": datasets.ClassLabel(names=list(config.modes)), "root_pitch_class": _pc_feature(),
        "root_midi": datasets.Value("int32"), "direction": datasets.Value("string"), **_timbre_columns(),
    }  # fmt: skip


# ----------------------------------------------------------------------------- chords
def chord_notes(root_midi: int, quality: str, inversion: str) -> list[int]:
    notes = [root_midi + s for s in CHORD_QUALITIES[quality]]
    for _ in range(INVERSIONS.index(inversion)):
        notes = notes[1:] + [notes[0] + 12]
    return notes


def chords_midi(params: dict, config: ChordsConfig):
    end = config.duration - _release(config)
    notes = chord_notes(params["root_midi"], params["quality"], params["inversion"])
    return _midi([(params["program"], False, [(p, 0.0, end, params["velocity"]) for p in notes])])


def _chords_sample(config: ChordsConfig, n, rng):
    _check_subset("qualities", config.qualities, CHORD_QUALITIES)
    _check_subset("inversions", config.inversions, INVERSIONS)
    grid = [(q, inv, pc) for q in config.qualities for inv in config.inversions for pc in range(12)]
    out = []
    for quality, inversion, pc in balanced(grid, n, rng):
        octave = int(config.octaves[rng.integers(len(config.octaves))])
        root_midi = 12 * (octave + 1) + pc
        out.append({
            "quality": quality, "inversion": inversion, "root_pitch_class": PITCH_CLASSES[pc],
            "bass_pitch_class": PITCH_CLASSES[chord_notes(root_midi, quality, inversion)[0] % 12],
            "root_midi": root_midi, **_common(rng, config),
        })  # fmt: skip
    return out


def _chords_columns(config):
    import datasets

    return {
        "quality": datasets.ClassLabel(names=list(config.qualities)),
        "inversion": datasets.ClassLabel(names=list(config.inversions)),
        "root_pitch_class": _pc_feature(), "bass_pitch_class": _pc_feature(),
        "root_midi": datasets.Value("int32"), **_timbre_columns(),
    }  # fmt: skip


# ----------------------------------------------------------------------------- progressions
def progression_chords(name: str, key_pc: int) -> list[tuple[int, str]]:
    """(root pitch class, quality) of each chord of a progression in the key ``key_pc``."""
    mode = PROGRESSIONS[name]
    scale = MODES["ionian" if mode == "major" else "aeolian"]
    out = []
    for numeral in name.split("-"):
        base = numeral.rstrip("°ø")
        degree = _ROMAN[base.lower()]
        root = (key_pc + scale[degree]) % 12
        third = (scale[(degree + 2) % 7] - scale[degree]) % 12
        fifth = (scale[(degree + 4) % 7] - scale[degree]) % 12
        quality = {(4, 7): "major", (3, 7): "minor", (3, 6): "diminished", (4, 8): "augmented"}[(third, fifth)]
        out.append((root, quality))
    return out


def progressions_midi(params: dict, config: ProgressionsConfig):
    chords = progression_chords(params["progression"], PITCH_CLASSES.index(params["key_pitch_class"]))
    base = 12 * (params["octave"] + 1)
    step = (config.duration - _release(config)) / len(chords)
    notes = []
    for i, (root, quality) in enumerate(chords):
        for p in chord_notes(base + root, quality, "root"):
            notes.append((p, i * step, (i + 1) * step, params["velocity"]))
    return _midi([(params["program"], False, notes)])


def _progressions_sample(config: ProgressionsConfig, n, rng):
    _check_subset("progressions", config.progressions, PROGRESSIONS)
    grid = [(p, pc) for p in config.progressions for pc in range(12)]
    out = []
    for prog, pc in balanced(grid, n, rng):
        octave = int(config.octaves[rng.integers(len(config.octaves))])
        out.append({
            "progression": prog, "key_pitch_class": PITCH_CLASSES[pc], "key_mode": PROGRESSIONS[prog],
            "octave": octave, **_common(rng, config),
        })  # fmt: skip
    return out


def _progressions_columns(config):
    import datasets

    return {
        "progression": datasets.ClassLabel(names=list(config.progressions)),
        "key_pitch_class": _pc_feature(), "key_mode": datasets.ClassLabel(names=["major", "minor"]),
        "octave": datasets.Value("int32"), **_timbre_columns(),
    }  # fmt: skip


# ----------------------------------------------------------------------------- tempos
def tempos_midi(params: dict, config: TemposConfig):
    accent, beat = DRUM_SOUNDS[params["sound"]]
    period = 60.0 / params["bpm"]
    t, i, notes = params["offset"], 0, []
    while t < config.duration - 0.05:
        key, vel = (accent, 120) if i % 4 == 0 else (beat, 100)
        notes.append((key, t, t + min(0.1, period / 2), vel))
        t += period
        i += 1
    return _midi([(0, True, notes)])


def _tempos_sample(config: TemposConfig, n, rng):
    _check_subset("sounds", config.sounds, DRUM_SOUNDS)
    lo, hi = config.bpm_range
    if not 10 <= lo <= hi <= 400:
        raise DataError(f"bpm_range must be (lo, hi) within 10..400, got {config.bpm_range}")
    out = []
    for bpm in balanced(list(range(int(lo), int(hi) + 1)), n, rng):
        sound = config.sounds[rng.integers(len(config.sounds))]
        out.append({"bpm": float(bpm), "sound": sound, "offset": round(float(rng.uniform(0, config.max_offset)), 3)})
    return out


def _tempos_columns(config):
    import datasets

    return {"bpm": datasets.Value("float32"), "sound": datasets.Value("string"), "offset": datasets.Value("float32")}


# ----------------------------------------------------------------------------- time signatures
def signature_accents(signature: str) -> list[int]:
    """Velocity of each pulse in one measure: downbeat 127, compound group starts 95, others 60."""
    num, _den = map(int, signature.split("/"))
    compound = num in (6, 9, 12)
    return [127 if i == 0 else (95 if compound and i % 3 == 0 else 60) for i in range(num)]


def pulse_seconds(signature: str, bpm: float) -> float:
    """Duration of one pulse (the signature's denominator note) at ``bpm`` quarter notes a minute."""
    _num, den = map(int, signature.split("/"))
    return 60.0 / bpm * 4.0 / den


def time_signatures_midi(params: dict, config: TimeSignaturesConfig):
    accent_key, beat_key = DRUM_SOUNDS[params["sound"]]
    accents = signature_accents(params["time_signature"])
    pulse = pulse_seconds(params["time_signature"], params["bpm"])
    t, i, notes = 0.0, 0, []
    while t < config.duration - 0.05:
        vel = accents[i % len(accents)]
        notes.append((accent_key if vel == 127 else beat_key, t, t + min(0.1, pulse / 2), vel))
        t += pulse
        i += 1
    return _midi([(0, True, notes)])


def _time_signatures_sample(config: TimeSignaturesConfig, n, rng):
    _check_subset("signatures", config.signatures, TIME_SIGNATURES)
    _check_subset("sounds", config.sounds, DRUM_SOUNDS)
    out = []
    for sig in balanced(list(config.signatures), n, rng):
        num, den = map(int, sig.split("/"))
        out.append({
            "time_signature": sig, "numerator": num, "denominator": den,
            "bpm": float(rng.integers(config.bpm_range[0], config.bpm_range[1] + 1)),
            "sound": config.sounds[rng.integers(len(config.sounds))],
        })  # fmt: skip
    return out


def _time_signatures_columns(config):
    import datasets

    return {
        "time_signature": datasets.ClassLabel(names=list(config.signatures)),
        "numerator": datasets.Value("int32"), "denominator": datasets.Value("int32"),
        "bpm": datasets.Value("float32"), "sound": datasets.Value("string"),
    }  # fmt: skip


# ----------------------------------------------------------------------------- instruments
def instruments_midi(params: dict, config: InstrumentsConfig):
    melody = [int(p) for p in params["melody"].split()]
    step = (config.duration - _release(config)) / len(melody)
    notes = [(p, i * step, (i + 1) * step, params["velocity"]) for i, p in enumerate(melody)]
    return _midi([(params["program"], False, notes)])


def _instruments_sample(config: InstrumentsConfig, n, rng):
    lo, hi = config.note_range
    out = []
    for program in balanced(list(config.programs), n, rng):
        melody = " ".join(str(int(p)) for p in rng.integers(lo, hi + 1, size=4))
        out.append({
            "program": int(program), "family": GM_FAMILIES[int(program) // 8], "instrument": program_name(program),
            "melody": melody, "velocity": int(rng.integers(config.velocity[0], config.velocity[1] + 1)),
        })  # fmt: skip
    return out


def _instruments_columns(config):
    import datasets

    return {
        "program": datasets.ClassLabel(names=[program_name(p) for p in range(128)]),
        "family": datasets.ClassLabel(names=list(GM_FAMILIES)),
        "instrument": datasets.Value("string"), "melody": datasets.Value("string"),
        "velocity": datasets.Value("int32"),
    }  # fmt: skip


# ----------------------------------------------------------------------------- registry
MIDI_BUILDERS = {
    "notes": notes_midi, "intervals": intervals_midi, "scales": scales_midi, "chords": chords_midi,
    "chord_progressions": progressions_midi, "tempos": tempos_midi,
    "time_signatures": time_signatures_midi, "instruments": instruments_midi,
}  # fmt: skip


def concept_midi(name: str, params: dict, config: MusicConfig):
    """The MIDI (pretty_midi.PrettyMIDI) a music concept renders for ``params``."""
    return MIDI_BUILDERS[name](params, config)


def _music(name, task, target, description, config_cls, sample, columns, split="stratified") -> Concept:
    return register(Concept(
        name=name, domain="music", task=task, target=target, description=description, config_cls=config_cls,
        sample=sample, render=_render(MIDI_BUILDERS[name]), columns=columns, split=split,
        sources=SOUND_SOURCES_MUSIC, check_tools=check_music_tools,
    ))  # fmt: skip


_music("notes", "classification", "pitch_class",
       "Single sustained notes: 12 pitch classes x octaves, several instruments.",
       NotesConfig, _notes_sample, _notes_columns)  # fmt: skip
_music("intervals", "classification", "interval",
       "Two notes 1..12 semitones apart, played up, down or together, 12 roots.",
       IntervalsConfig, _intervals_sample, _intervals_columns)  # fmt: skip
_music("scales", "classification", "mode",
       "Eight-note scales in the 7 diatonic modes, 12 roots, ascending or descending.",
       ScalesConfig, _scales_sample, _scales_columns)  # fmt: skip
_music("chords", "classification", "quality",
       "Triads: 4 qualities x 3 inversions x 12 roots.",
       ChordsConfig, _chords_sample, _chords_columns)  # fmt: skip
_music("chord_progressions", "classification", "progression",
       "Four-chord progressions (10 major, 9 minor) in 12 keys, root-position triads.",
       ProgressionsConfig, _progressions_sample, _progressions_columns)  # fmt: skip
_music("tempos", "regression", "bpm",
       "Click tracks at integer BPMs (accent every 4 beats); extrapolation split on BPM.",
       TemposConfig, _tempos_sample, _tempos_columns, split="extrapolation")  # fmt: skip
_music("time_signatures", "classification", "time_signature",
       "Percussion pulses with measure accents (downbeat; compound groups of 3) in 8 signatures.",
       TimeSignaturesConfig, _time_signatures_sample, _time_signatures_columns)  # fmt: skip
_music("instruments", "classification", "program",
       "Short random four-note melodies on GM programs; labels: program and GM family.",
       InstrumentsConfig, _instruments_sample, _instruments_columns)  # fmt: skip


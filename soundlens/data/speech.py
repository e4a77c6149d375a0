"""Speech concepts rendered with offline TTS from Debian: espeak-ng, flite and festival.

Voices are named ``engine:voice`` (``espeak:en-us+f3``, ``flite:slt``, ``festival:kal_diphone``).
Every renderer is a subprocess that writes a WAV; the audio is resampled to the config's rate
(16 kHz by default). F0 shifts are applied with SoX's ``pitch`` effect, which keeps the duration
and scales F0 by exactly 2^(semitones/12) (formants move with it; the card says so).
"""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass

import numpy as np

from soundlens.data.concepts import Concept, GeneratorConfig, balanced, register
from soundlens.data.errors import DataError, MissingToolError

# IEEE "Harvard" sentences (IEEE Recommended Practice for Speech Quality Measurements, 1969),
# widely used and treated as public domain.
HARVARD = (
    "The birch canoe slid on the smooth planks.",
    "Glue the sheet to the dark blue background.",
    "It's easy to tell the depth of a well.",
    "These days a chicken leg is a rare dish.",
    "Rice is often served in round bowls.",
    "The juice of lemons makes fine punch.",
    "The box was thrown beside the parked truck.",
    "The hogs were fed chopped corn and garbage.",
    "Four hours of steady work faced us.",
    "A large size in stockings is hard to sell.",
    "The boy was there when the sun rose.",
    "A rod is used to catch pink salmon.",
    "The source of the huge river is the clear spring.",
    "Kick the ball straight and follow through.",
    "Help the woman get back to her feet.",
    "A pot of tea helps to pass the evening.",
    "Smoky fires lack flame and heat.",
    "The soft cushion broke the man's fall.",
    "The salt breeze came across from the sea.",
    "The girl at the booth sold fifty bonds.",
)
SHORT_PHRASES = (
    "open the window", "bring me the red cup", "the train is late", "turn left at the bridge",
    "close the door please", "the sky is grey", "we sat on the porch", "call me tomorrow",
    "the dog ran home", "read the first page", "a cold wind blew", "put the book away",
)  # fmt: skip
DIGITS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")

ESPEAK_VARIANTS = ("m1", "m3", "m7", "f1", "f3", "f4")
DEFAULT_VOICES = (
    *(f"espeak:en-us+{v}" for v in ESPEAK_VARIANTS),
    "espeak:en-us+klatt", "espeak:en-us+croak",
    "flite:kal", "flite:awb", "flite:rms", "flite:slt", "festival:kal_diphone",
)  # fmt: skip
DEFAULT_LANGUAGES = ("en", "de", "fr", "es", "it", "pt", "nl", "pl", "sv", "fi", "tr", "cs")

ENGINES = {
    "espeak": ("espeak-ng", "sudo apt-get install espeak-ng"),
    "flite": ("flite", "sudo apt-get install flite"),
    "festival": ("text2wave", "sudo apt-get install festival festvox-kallpc16k"),
}
SOUND_SOURCES_SPEECH = {
    "espeak": "espeak-ng (GPL-3.0-or-later) formant synthesis; its output audio carries no licence restriction",
    "flite": "CMU Flite voices kal, awb, rms, slt (BSD-style CMU licence)",
    "festival": "Festival (X11-style licence) with the festvox kal diphone voice (free, festvox licence)",
    "sox": "F0 shifts with SoX (GPL-2.0-or-later) `pitch` effect",
    "text": "texts: IEEE Harvard sentences (public domain), digit words and short phrases written for soundlens",
}


# ----------------------------------------------------------------------------- engines
def _binary(engine: str) -> str:
    if engine not in ENGINES:
        raise DataError(f"unknown TTS engine '{engine}'; use one of {', '.join(ENGINES)} (voice = 'engine:name')")
    exe, install = ENGINES[engine]
    path = shutil.which(exe)
    if path is None:
        raise MissingToolError(f"the {engine} TTS program '{exe}' is not installed: `{install}`")
    return path


def split_voice(voice: str) -> tuple[str, str]:
    if ":" not in voice:
        raise DataError(f"voice '{voice}' must be 'engine:name', e.g. 'espeak:en-us+f3', 'flite:slt'")
    engine, name = voice.split(":", 1)
    if engine not in ENGINES:
        raise DataError(f"unknown TTS engine '{engine}' in voice '{voice}'; engines: {', '.join(ENGINES)}")
    return engine, name


def check_voices(voices) -> None:
    for engine in sorted({split_voice(v)[0] for v in voices}):
        _binary(engine)


def _read_wav(data: bytes) -> tuple[np.ndarray, int]:
    import soundfile as sf

    audio, sr = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)
    return audio.mean(axis=1), int(sr)


def _run(cmd: list[str], stdin: bytes | None = None) -> bytes:
    res = subprocess.run(cmd, input=stdin, capture_output=True, timeout=120)
    if res.returncode != 0:
        raise DataError(f"{os.path.basename(cmd[0])} failed ({res.returncode}): {res.stderr.decode(errors='replace')[:300]}")
    return res.stdout


def tts(text: str, voice: str, rate: int | None = None, pitch: int | None = None) -> tuple[np.ndarray, int]:
    """Speak ``text`` with ``voice``; ``rate`` in words per minute and ``pitch`` (0..99) are
    espeak-ng's own controls (other engines accept only the defaults)."""
    engine, name = split_voice(voice)
    exe = _binary(engine)
    if engine != "espeak" and (rate is not None or pitch is not None):
        raise DataError(f"rate and pitch controls need an espeak voice, not {voice}")
    if engine == "espeak":
        cmd = [exe, "-v", name, "--stdout"]
        if rate is not None:
            cmd += ["-s", str(int(rate))]
        if pitch is not None:
            cmd += ["-p", str(int(pitch))]
        return _read_wav(_run([*cmd, "--", text]))
    with tempfile.TemporaryDirectory(prefix="soundlens-tts-") as tmp:
        out = os.path.join(tmp, "out.wav")
        if engine == "flite":
            _run([exe, "-voice", name, "-t", text, "-o", out])
        else:
            _run([exe, "-eval", f"(voice_{name})", "-o", out], stdin=text.encode())
        with open(out, "rb") as fh:
            return _read_wav(fh.read())


def shift_f0(audio: np.ndarray, sample_rate: int, semitones: float) -> np.ndarray:
    """Scale F0 by 2^(semitones/12) with SoX's ``pitch`` effect (duration kept)."""
    if semitones == 0:
        return audio
    sox = shutil.which("sox")
    if sox is None:
        raise MissingToolError("SoX is needed for F0 shifts: `sudo apt-get install sox`")
    import soundfile as sf

    buf = io.BytesIO()
    sf.write(buf, audio, sample_rate, format="WAV", subtype="FLOAT")
    out = _run([sox, "-q", "-t", "wav", "-", "-t", "wav", "-e", "floating-point", "-", "pitch", f"{100 * semitones:g}"], buf.getvalue())
    shifted, _ = _read_wav(out)
    return shifted


def _finish(audio: np.ndarray, sr: int, config: SpeechConfig) -> np.ndarray:
    if sr != config.sample_rate:
        import librosa

        audio = librosa.resample(audio, orig_sr=sr, target_sr=config.sample_rate, res_type="soxr_hq")
    peak = float(np.max(np.abs(audio))) if audio.size else 0.0
    if config.peak > 0 and peak > 0:
        audio = audio * (config.peak / peak)
    return np.clip(audio, -1, 1).astype(np.float32)


# ----------------------------------------------------------------------------- configs
@dataclass(frozen=True)
class SpeechConfig(GeneratorConfig):
    sample_rate: int = 16000
    voices: tuple[str, ...] = DEFAULT_VOICES
    peak: float = 0.5  # peak-normalise each clip to this level; 0 keeps the engine's level

    def validate(self) -> None:
        super().validate()
        if not self.voices:
            raise DataError("voices must not be empty")
        for v in self.voices:
            split_voice(v)


@dataclass(frozen=True)
class VoicesConfig(SpeechConfig):
    texts: tuple[str, ...] = HARVARD


@dataclass(frozen=True)
class LanguagesConfig(SpeechConfig):
    voices: tuple[str, ...] = ()  # unused: the voice is espeak's voice for the language
    languages: tuple[str, ...] = DEFAULT_LANGUAGES
    variants: tuple[str, ...] = ("m1", "m3", "f1", "f3")
    n_digits: int = 4

    def validate(self) -> None:
        GeneratorConfig.validate(self)
        if not self.languages:
            raise DataError("languages must not be empty")


@dataclass(frozen=True)
class PitchConfig(SpeechConfig):
    voices: tuple[str, ...] = (*(f"espeak:en-us+{v}" for v in ESPEAK_VARIANTS), "flite:slt", "flite:kal")
    semitones: tuple[float, ...] = (-6.0, -4.0, -2.0, 0.0, 2.0, 4.0, 6.0)
    texts: tuple[str, ...] = HARVARD


@dataclass(frozen=True)
class RateConfig(SpeechConfig):
    voices: tuple[str, ...] = tuple(f"espeak:en-us+{v}" for v in ESPEAK_VARIANTS)
    rates: tuple[int, ...] = (80, 110, 140, 175, 220, 280, 350)  # espeak-ng words per minute
    texts: tuple[str, ...] = SHORT_PHRASES

    def validate(self) -> None:
        super().validate()
        if any(split_voice(v)[0] != "espeak" for v in self.voices):
            raise DataError("speech_rate needs espeak voices (flite and festival have no rate control here)")
        if any(not 80 <= r <= 450 for r in self.rates):
            raise DataError(f"rates must be within espeak-ng's 80..450 words per minute, got {self.rates}")


@dataclass(frozen=True)
class DigitsConfig(SpeechConfig):
    words: tuple[str, ...] = DIGITS
    espeak_rates: tuple[int, ...] = (140, 200)  # inclusive range drawn for espeak voices
    espeak_pitches: tuple[int, ...] = (35, 65)


# ----------------------------------------------------------------------------- samplers + renderers
def _pick(rng: np.random.Generator, seq):
    return seq[int(rng.integers(len(seq)))]


def _voices_sample(config: VoicesConfig, n, rng):
    return [{"voice": v, "engine": v.split(":")[0], "text": _pick(rng, config.texts)} for v in balanced(config.voices, n, rng)]


def _voices_render(params, config):
    return _finish(*tts(params["text"], params["voice"]), config)


def _languages_sample(config: LanguagesConfig, n, rng):
    out = []
    for lang in balanced(config.languages, n, rng):
        digits = " ".join(str(int(d)) for d in rng.integers(0, 10, size=config.n_digits))
        out.append({"language": lang, "voice": f"espeak:{lang}+{_pick(rng, config.variants)}", "text": digits})
    return out


def _espeak_render(params, config):
    return _finish(*tts(params["text"], params["voice"], rate=params.get("rate"), pitch=params.get("espeak_pitch")), config)


def _pitch_sample(config: PitchConfig, n, rng):
    return [
        {"f0_shift": float(s), "voice": _pick(rng, config.voices), "text": _pick(rng, config.texts)}
        for s in balanced(config.semitones, n, rng)
    ]


def _pitch_render(params, config):
    audio, sr = tts(params["text"], params["voice"])
    return _finish(shift_f0(audio, sr, params["f0_shift"]), sr, config)


def _rate_sample(config: RateConfig, n, rng):
    return [
        {"rate": int(r), "voice": _pick(rng, config.voices), "text": _pick(rng, config.texts)}
        for r in balanced(config.rates, n, rng)
    ]


def _digits_sample(config: DigitsConfig, n, rng):
    out = []
    for word in balanced(config.words, n, rng):
        voice = _pick(rng, config.voices)
        p = {"word": word, "voice": voice, "text": word, "rate": None, "espeak_pitch": None}
        if voice.startswith("espeak:"):
            p["rate"] = int(rng.integers(config.espeak_rates[0], config.espeak_rates[1] + 1))
            p["espeak_pitch"] = int(rng.integers(config.espeak_pitches[0], config.espeak_pitches[1] + 1))
        out.append(p)
    return out


def _digits_render(params, config):
    if params["voice"].startswith("espeak:"):
        return _espeak_render(params, config)
    return _finish(*tts(params["text"], params["voice"]), config)


# ----------------------------------------------------------------------------- columns
def _voices_columns(config):
    import datasets

    return {"voice": datasets.ClassLabel(names=list(config.voices)), "engine": datasets.Value("string"), "text": datasets.Value("string")}


def _languages_columns(config):
    import datasets

    return {"language": datasets.ClassLabel(names=list(config.languages)), "voice": datasets.Value("string"), "text": datasets.Value("string")}


def _pitch_columns(config):
    import datasets

    return {"f0_shift": datasets.Value("float32"), "voice": datasets.Value("string"), "text": datasets.Value("string")}


def _rate_columns(config):
    import datasets

    return {"rate": datasets.Value("float32"), "voice": datasets.Value("string"), "text": datasets.Value("string")}


def _digits_columns(config):
    import datasets

    return {
        "word": datasets.ClassLabel(names=list(config.words)), "voice": datasets.Value("string"),
        "text": datasets.Value("string"), "rate": datasets.Value("int32"), "espeak_pitch": datasets.Value("int32"),
    }  # fmt: skip


def _sources(voices, extra=()) -> tuple[str, ...]:
    engines = sorted({v.split(":")[0] for v in voices}) if voices else ["espeak"]
    return tuple(SOUND_SOURCES_SPEECH[e] for e in engines) + tuple(SOUND_SOURCES_SPEECH[x] for x in extra) + (
        SOUND_SOURCES_SPEECH["text"],
    )


def _check(config: SpeechConfig) -> None:
    voices = config.voices or ("espeak:en",)
    check_voices(voices)
    if isinstance(config, PitchConfig) and shutil.which("sox") is None:
        raise MissingToolError("SoX is needed for F0 shifts: `sudo apt-get install sox`")


def _speech(name, task, target, description, config_cls, sample, render, columns, extra=()) -> Concept:
    default = config_cls()
    return register(Concept(
        name=name, domain="speech", task=task, target=target, description=description, config_cls=config_cls,
        sample=sample, render=render, columns=columns, sources=_sources(default.voices, extra), check_tools=_check,
    ))  # fmt: skip


_speech("voices", "classification", "voice",
        "Harvard sentences spoken by espeak-ng variants, flite and festival voices; label: the voice.",
        VoicesConfig, _voices_sample, _voices_render, _voices_columns)  # fmt: skip
_speech("languages", "classification", "language",
        "Random digit strings read by espeak-ng in 12 languages (each reads the digits in its own words).",
        LanguagesConfig, _languages_sample, _espeak_render, _languages_columns)  # fmt: skip
_speech("speech_pitch", "regression", "f0_shift",
        "Harvard sentences with F0 scaled by 2^(s/12), s in -6..6 semitones (SoX pitch; formants move too).",
        PitchConfig, _pitch_sample, _pitch_render, _pitch_columns, extra=("sox",))  # fmt: skip
_speech("speech_rate", "regression", "rate",
        "Short phrases spoken by espeak-ng at 80..350 words per minute.",
        RateConfig, _rate_sample, _espeak_render, _rate_columns)  # fmt: skip
_speech("spoken_digits", "classification", "word",
        "The words zero..nine spoken by many voices at varied espeak rates and pitches.",
        DigitsConfig, _digits_sample, _digits_render, _digits_columns)  # fmt: skip

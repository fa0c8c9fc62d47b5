"""espeak-ng voices for the demo corpus, their phoneme timing, and a synthetic laugh.

`speak` runs espeak-ng (formant synthesis, fast, offline) through its C library and returns trimmed float32
audio at the requested rate; `speak_aligned` also returns when each phoneme starts (espeak-ng's own phoneme
events, exact to the sample). `phonemes` is the demo's pronunciation front end: the phoneme names espeak-ng
says for a text. `render_laugh` synthesises a breathy "ha-ha-ha" from scratch: a jittered glottal pulse
train plus aspiration noise, shaped by an open-vowel formant cascade, in 3-7 decaying bursts at 4-6 Hz.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os
import pickle
import shutil
from dataclasses import dataclass
from math import gcd

import numpy as np
from scipy.signal import lfilter, resample_poly

from ttslens.sae.errors import EnvironmentProblem

ESPEAK_RATE = 22050
TRIM_KEEP_S = 0.03  # silence kept before the first and after the last audible sample
LAUGH_PEAK = 0.7


INSTALL = "install it with `sudo apt-get install espeak-ng` (Debian/Ubuntu) or `brew install espeak-ng`"


def require_espeak() -> str:
    """Path of the espeak-ng executable, or an EnvironmentProblem saying how to install it."""
    path = shutil.which("espeak-ng")
    if path is None:
        raise EnvironmentProblem(f"espeak-ng not found: {INSTALL}")
    return path


class _Event(ctypes.Structure):  # espeak_EVENT (speak_lib.h)
    _fields_ = [
        ("type", ctypes.c_int),
        ("unique_identifier", ctypes.c_uint),
        ("text_position", ctypes.c_int),
        ("length", ctypes.c_int),
        ("audio_position", ctypes.c_int),  # ms
        ("sample", ctypes.c_int),  # samples since the start of the utterance
        ("user_data", ctypes.c_void_p),
        ("id", ctypes.c_char * 8),  # the phoneme's name for a phoneme event
    ]


_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.POINTER(_Event))
_PHONEME_EVENT, _SYNCHRONOUS, _PHONEME_EVENTS, _DONT_EXIT = 7, 2, 0x0001, 0x8000
_RATE, _PITCH = 1, 3


@functools.cache
def _library() -> str:
    """The espeak-ng shared library's name (found once, in the parent: `find_library` runs ldconfig)."""
    return ctypes.util.find_library("espeak-ng") or "libespeak-ng.so.1"


def _synth_fresh(
    text: str, voice: str, rate_wpm: int, pitch: int, name: str
) -> tuple[bytes, list[tuple[str, int]], int]:
    """One synthesis by a freshly initialised engine (pure Python + ctypes: it runs in a forked child)."""
    try:
        lib = ctypes.CDLL(name)
    except OSError:
        raise EnvironmentProblem(f"the espeak-ng library ({name}) is not installed: {INSTALL}") from None
    audio: list[bytes] = []
    events: list[tuple[str, int]] = []

    def collect(wav, n, ev):
        if n > 0:
            audio.append(ctypes.string_at(wav, 2 * n))
        i = 0
        while ev[i].type != 0:
            if ev[i].type == _PHONEME_EVENT:
                events.append((ev[i].id.split(b"\0")[0].decode(), int(ev[i].sample)))
            i += 1
        return 0

    callback = _CALLBACK(collect)
    rate = lib.espeak_Initialize(_SYNCHRONOUS, 0, None, _PHONEME_EVENTS | _DONT_EXIT)
    if rate <= 0:
        raise EnvironmentProblem(f"espeak-ng could not start (are its data files missing?): {INSTALL}")
    lib.espeak_SetSynthCallback(callback)
    if lib.espeak_SetVoiceByName(voice.encode()) != 0:
        raise EnvironmentProblem(f"espeak-ng has no voice {voice!r}: reinstall espeak-ng ({INSTALL})")
    lib.espeak_SetParameter(_RATE, int(rate_wpm), 0)
    lib.espeak_SetParameter(_PITCH, int(pitch), 0)
    data = text.encode()
    lib.espeak_Synth(data, len(data) + 1, 0, 1, 0, 0, None, None)  # position 0 in characters, no end pause
    lib.espeak_Synchronize()
    return b"".join(audio), events, rate


def _synth(text: str, voice: str, rate_wpm: int, pitch: int) -> tuple[np.ndarray, list[tuple[str, int]], int]:
    """espeak-ng's 16-bit samples (as `espeak-ng -z` writes them), its phoneme events (name, sample), its rate.

    espeak-ng carries state from one utterance to the next inside a process (timing and noise drift), so each
    call runs in a forked child with a fresh engine: the same text always gives the same samples, those of
    the espeak-ng command line."""
    name = _library()
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: synthesise, send, exit without running the parent's clean-up
        code = 0
        try:
            os.close(read)
            try:
                payload = ("ok", *_synth_fresh(text, voice, rate_wpm, pitch, name))
            except EnvironmentProblem as e:
                payload = ("error", str(e))
            with os.fdopen(write, "wb") as f:
                pickle.dump(payload, f)
        except BaseException:
            code = 1
        finally:
            os._exit(code)
    os.close(write)
    with os.fdopen(read, "rb") as f:
        data = f.read()
    os.waitpid(pid, 0)
    if not data:
        raise EnvironmentProblem(f"espeak-ng crashed on {text!r}: check the espeak-ng install ({INSTALL})")
    payload = pickle.loads(data)
    if payload[0] == "error":
        raise EnvironmentProblem(payload[1])
    _, pcm, events, rate = payload
    return np.frombuffer(pcm, dtype=np.int16), events, rate


@functools.lru_cache(maxsize=4096)
def phonemes(text: str) -> tuple[str, ...]:
    """The phoneme names espeak-ng (American English) says for `text`, pauses ("_", "_:") included."""
    return tuple(name for name, _ in _synth(text, "en-us", 160, 50)[1])


@dataclass(frozen=True)
class Voice:
    """An espeak-ng English voice variant at a fixed pitch setting."""

    name: str
    espeak: str
    gender: str  # "female" | "male"
    pitch: int  # espeak -p, 0-99
    f0_hz: float = 0.0  # measured median F0 at this pitch (librosa.yin, -s 160)


def _voice(variant: str, gender: str, pitch: int, f0_hz: float) -> Voice:
    return Voice(variant, f"en-us+{variant}", gender, pitch, f0_hz)


# Pitches spread the voices over ~180-265 Hz (female) and ~85-120 Hz (male).
VOICES: tuple[Voice, ...] = (
    _voice("f4", "female", 50, 181.0),
    _voice("f1", "female", 55, 191.0),
    _voice("steph", "female", 55, 196.0),
    _voice("f2", "female", 55, 207.0),
    _voice("f5", "female", 55, 218.0),
    _voice("f3", "female", 60, 233.0),
    _voice("Alicia", "female", 50, 254.0),
    _voice("Annie", "female", 60, 262.0),
    _voice("david", "male", 65, 88.0),
    _voice("Mike", "male", 50, 91.0),
    _voice("m1", "male", 55, 99.0),
    _voice("robert", "male", 55, 103.0),
    _voice("m3", "male", 50, 105.0),
    _voice("m7", "male", 55, 112.0),
    _voice("Hugo", "male", 55, 115.0),
    _voice("m2", "male", 65, 120.0),
)
VOICE_BY_NAME = {v.name: v for v in VOICES}


def trim_silence(x: np.ndarray, sample_rate: int, keep_s: float = TRIM_KEEP_S, floor_db: float = -40.0) -> np.ndarray:
    """Cut leading/trailing samples quieter than `floor_db` below the peak, keeping `keep_s` of margin."""
    lo, hi = _loud_span(x, sample_rate, keep_s, floor_db)
    return x[lo:hi]


def _loud_span(x: np.ndarray, sample_rate: int, keep_s: float = TRIM_KEEP_S, floor_db: float = -40.0):
    """[lo, hi) of `trim_silence`."""
    if x.size == 0:
        return 0, 0
    loud = np.flatnonzero(np.abs(x) > np.abs(x).max() * 10 ** (floor_db / 20))
    if loud.size == 0:
        return 0, 0
    keep = int(keep_s * sample_rate)
    return max(int(loud[0]) - keep, 0), int(loud[-1]) + keep + 1


def resample(x: np.ndarray, orig_sr: int, sample_rate: int) -> np.ndarray:
    """Polyphase resampling between integer rates."""
    if orig_sr == sample_rate:
        return x.astype(np.float32)
    g = gcd(orig_sr, sample_rate)
    return resample_poly(x, sample_rate // g, orig_sr // g).astype(np.float32)


def speak(text: str, voice: Voice, rate_wpm: int, sample_rate: int = 16000) -> np.ndarray:
    """Synthesise `text` with espeak-ng; float32 mono at `sample_rate`, silence trimmed to <= 50 ms."""
    return speak_aligned(text, voice, rate_wpm, sample_rate)[0]


def speak_aligned(
    text: str, voice: Voice, rate_wpm: int, sample_rate: int = 16000
) -> tuple[np.ndarray, list[tuple[str, float]]]:
    """`speak`, and each phoneme's (name, start in seconds of the returned audio), in order; a phoneme lasts
    until the next one starts (the last until the end). Starts in the trimmed margins are clipped to the audio."""
    pcm, events, rate = _synth(text, voice.espeak, rate_wpm, voice.pitch)
    x = resample(pcm.astype(np.float32) / 32768.0, rate, sample_rate)
    lo, hi = _loud_span(x, sample_rate)
    end = (hi - lo) / sample_rate
    phones = [(name, min(max(at / rate - lo / sample_rate, 0.0), end)) for name, at in events]
    return x[lo:hi], phones


# ---------------------------------------------------------------------------------------------- laugh


def _resonator(freq: float, bw: float, sr: int) -> tuple[np.ndarray, np.ndarray]:
    """Two-pole resonator (Klatt form) with unit gain at DC."""
    r = np.exp(-np.pi * bw / sr)
    b1, b2 = 2 * r * np.cos(2 * np.pi * freq / sr), -r * r
    return np.array([1.0 - b1 - b2]), np.array([1.0, -b1, -b2])


def _vocal_tract(x: np.ndarray, formants: np.ndarray, bandwidths: np.ndarray, sr: int) -> np.ndarray:
    for f, bw in zip(formants, bandwidths, strict=True):
        if f < 0.45 * sr:
            b, a = _resonator(f, bw, sr)
            x = lfilter(b, a, x)
    return x


def _unit_rms(x: np.ndarray) -> np.ndarray:
    return x / (np.sqrt(np.mean(x**2)) + 1e-9)


def _pulse_train(
    n: int, f0: np.ndarray, rng: np.random.Generator, sr: int, jitter: float, shimmer: float
) -> np.ndarray:
    """Impulses one glottal period apart (period from the contour `f0`, perturbed by jitter/shimmer)."""
    out = np.zeros(n)
    t = float(rng.uniform(0, 0.3)) * sr / f0[0]
    while t < n:
        i = int(t)
        out[i] = max(1.0 + shimmer * rng.standard_normal(), 0.2)
        t += sr / f0[i] * (1.0 + jitter * rng.standard_normal())
    return out


def _burst(
    rng: np.random.Generator, f0: float, formants: np.ndarray, length_s: float, amp: float, breathiness: float, sr: int
) -> np.ndarray:
    """One "ha" of about `length_s`: aspirated /h/ onset, then a breathy open vowel with a rise-fall pitch hump."""
    n_h = int(length_s * rng.uniform(0.25, 0.4) * sr)
    n_v = int(length_s * sr) - n_h
    n_tail = int(0.025 * sr)
    n = n_h + n_v + n_tail
    u = np.linspace(0.0, 1.0, n)
    contour = f0 * (1.0 + rng.uniform(0.0, 0.1) * np.sin(np.pi * np.minimum(u * 1.4, 1.0)) - rng.uniform(0.05, 0.2) * u)
    pulses = _pulse_train(n, contour, rng, sr, jitter=0.015, shimmer=0.1)
    # glottal spectral tilt: two leaky integrators (-12 dB/oct); the lip radiation difference restores 6 dB
    tilt = rng.uniform(0.965, 0.985)
    voiced = lfilter([1.0], [1.0, -tilt], lfilter([1.0], [1.0, -tilt], pulses))
    bandwidths = np.array([110.0, 130.0, 200.0, 300.0]) * rng.uniform(0.9, 1.2)
    f = formants * rng.uniform(0.96, 1.04, size=4)
    voiced = np.diff(_vocal_tract(voiced, f, bandwidths, sr), prepend=0.0)
    white = rng.standard_normal(n)
    noise = _unit_rms(np.diff(_vocal_tract(white, f, bandwidths * 1.5, sr), prepend=0.0))
    noise += rng.uniform(0.08, 0.14) * _unit_rms(np.diff(white, prepend=0.0))  # friction above the formants
    voiced, noise = _unit_rms(voiced), _unit_rms(noise)

    # envelopes (applied after filtering): vowel = fast attack + exponential decay + smooth release;
    # aspiration = ramp up through /h/, then breath riding on the vowel
    v_env = np.zeros(n)
    t = np.arange(n - n_h) / sr
    v_env[n_h:] = np.exp(-t / rng.uniform(0.06, 0.12)) * np.minimum(t / 0.012, 1.0)
    v_env[n - n_tail :] *= np.cos(np.linspace(0, np.pi / 2, n_tail)) ** 2
    h_env = breathiness * v_env
    h_env[:n_h] = rng.uniform(0.35, 0.6) * np.sin(np.linspace(0, np.pi / 2, n_h)) ** 2
    h_env[n_h:] += h_env[n_h - 1] * np.exp(-t / 0.015)
    y = v_env * voiced + h_env * noise
    return amp * y / (np.abs(y).max() + 1e-9)


def _inhale(rng: np.random.Generator, formants: np.ndarray, sr: int) -> np.ndarray:
    """A short breathy in-breath that often closes a laugh."""
    n = int(rng.uniform(0.18, 0.32) * sr)
    shifted, wide = formants * np.array([1.3, 1.2, 1.0, 1.0]), np.array([400.0, 500.0, 600.0, 800.0])
    x = _vocal_tract(rng.standard_normal(n), shifted, wide, sr)
    x = np.diff(x, prepend=0.0) * np.hanning(n) ** 0.7
    return x / (np.abs(x).max() + 1e-9)


def render_laugh(rng: np.random.Generator, f0_hz: float, gender: str, sample_rate: int = 16000) -> np.ndarray:
    """A breathy laugh of 3-7 "ha" bursts at 4-6 per second, pitched ~1.2-1.6x the speaker's F0.

    Burst pitch and loudness fall over the laugh; jitter, shimmer, timing and formants vary with `rng`.
    Returns float32 mono at `sample_rate`, peak-normalised to 0.7.
    """
    sr = sample_rate
    n_bursts = int(rng.integers(3, 8))
    rate = rng.uniform(4.0, 6.0)
    scale = 1.15 if gender == "female" else 1.0
    formants = np.array([rng.uniform(750, 900), rng.uniform(1200, 1400), rng.uniform(2400, 2600), 3500.0]) * scale
    f_start = f0_hz * rng.uniform(1.2, 1.6)
    fall = rng.uniform(0.15, 0.35)
    decay = rng.uniform(0.75, 0.9)
    breathiness = rng.uniform(0.25, 0.45)

    bursts, onsets, t = [], [], 0.0
    for i in range(n_bursts):
        period = rng.uniform(0.9, 1.1) / rate
        f0 = f_start * (1.0 - fall * i / max(n_bursts - 1, 1)) * rng.uniform(0.96, 1.04)
        amp = decay**i * rng.uniform(0.85, 1.1) * (rng.uniform(0.7, 0.95) if i == 0 else 1.0)
        length = period * rng.uniform(0.6, 0.75)  # the rest of the period is a gap
        bursts.append(_burst(rng, f0, formants, length, amp, breathiness * (1 + 0.4 * i / n_bursts), sr))
        onsets.append(int(t * sr))
        t += period
    end = max(o + len(b) for o, b in zip(onsets, bursts, strict=True))
    if rng.random() < 0.35:
        inhale = _inhale(rng, formants, sr) * rng.uniform(0.08, 0.18)
        onsets.append(end + int(rng.uniform(0.05, 0.15) * sr))
        bursts.append(inhale)
    out = np.zeros(max(o + len(b) for o, b in zip(onsets, bursts, strict=True)))
    for o, b in zip(onsets, bursts, strict=True):
        out[o : o + len(b)] += b
    return (LAUGH_PEAK * out / (np.abs(out).max() + 1e-9)).astype(np.float32)

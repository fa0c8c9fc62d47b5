"""espeak-ng voices for the demo corpus, and a synthetic laugh.

`speak` runs espeak-ng (formant synthesis, fast, offline) and returns trimmed float32 audio at the
requested rate. `render_laugh` synthesises a breathy "ha-ha-ha" from scratch: a jittered glottal pulse
train plus aspiration noise, shaped by an open-vowel formant cascade, in 3-7 decaying bursts at 4-6 Hz.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from math import gcd

import numpy as np
from scipy.signal import lfilter, resample_poly

from ttslens.sae.errors import EnvironmentProblem

ESPEAK_RATE = 22050
TRIM_KEEP_S = 0.03  # silence kept before the first and after the last audible sample
LAUGH_PEAK = 0.7


def require_espeak() -> str:
    """Path of the espeak-ng executable, or a RuntimeError saying how to install it."""
    path = shutil.which("espeak-ng")
    if path is None:
        raise EnvironmentProblem(
            "espeak-ng not found: install it with `sudo apt-get install espeak-ng` (Debian/Ubuntu) "
            "or `brew install espeak-ng`"
        )
    return path


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


def _parse_wav(data: bytes) -> tuple[np.ndarray, int]:
    """Decode espeak's streamed 16-bit mono WAV (its size fields are placeholders)."""
    if data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise EnvironmentProblem("espeak-ng did not return WAV audio")
    rate = int.from_bytes(data[24:28], "little")
    start = data.find(b"data", 12) + 8
    pcm = np.frombuffer(data[start : start + (len(data) - start) // 2 * 2], dtype="<i2")
    return pcm.astype(np.float32) / 32768.0, rate


def trim_silence(x: np.ndarray, sample_rate: int, keep_s: float = TRIM_KEEP_S, floor_db: float = -40.0) -> np.ndarray:
    """Cut leading/trailing samples quieter than `floor_db` below the peak, keeping `keep_s` of margin."""
    if x.size == 0:
        return x
    loud = np.flatnonzero(np.abs(x) > np.abs(x).max() * 10 ** (floor_db / 20))
    if loud.size == 0:
        return x[:0]
    keep = int(keep_s * sample_rate)
    return x[max(loud[0] - keep, 0) : loud[-1] + keep + 1]


def resample(x: np.ndarray, orig_sr: int, sample_rate: int) -> np.ndarray:
    """Polyphase resampling between integer rates."""
    if orig_sr == sample_rate:
        return x.astype(np.float32)
    g = gcd(orig_sr, sample_rate)
    return resample_poly(x, sample_rate // g, orig_sr // g).astype(np.float32)


def speak(text: str, voice: Voice, rate_wpm: int, sample_rate: int = 16000) -> np.ndarray:
    """Synthesise `text` with espeak-ng; float32 mono at `sample_rate`, silence trimmed to <= 50 ms."""
    cmd = [require_espeak(), "--stdout", "--stdin", "-z", "-v", voice.espeak]
    cmd += ["-s", str(rate_wpm), "-p", str(voice.pitch)]
    proc = subprocess.run(cmd, input=text.encode(), capture_output=True, check=False)
    if proc.returncode != 0:
        raise EnvironmentProblem(f"espeak-ng failed on {text!r}: {proc.stderr.decode(errors='replace').strip()}")
    x, rate = _parse_wav(proc.stdout)
    return trim_silence(resample(x, rate, sample_rate), sample_rate)


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

"""Measures of generated speech: pitch, gender, voiced time, speech rate (and laughter, via a detector).

Every function takes a mono waveform (1-D float array; `[1, n]` and integer PCM are accepted) and its
sample rate, and raises a one-line ValueError on empty, multi-channel or non-finite input. All frame
tracks share one grid: 10 ms hop, frames centred on `times`.

Two pitch paths:
- fast: a vectorised YIN (FFT difference function, cumulative-mean normalisation, parabolic
  interpolation), voiced where the aperiodicity is under 0.35 and the frame is within 40 dB of the
  loudest (runs shorter than 30 ms dropped);
- accurate (default): `librosa.pyin` (probabilistic YIN + Viterbi: robust octave choice) on a
  quarter-semitone grid, its F0 refined to a continuous value by YIN where the two agree within a
  semitone. pyin's own voicing misses many short vowels of fast, low voices (espeak males at 240 wpm),
  so a frame is voiced where either pyin or the fast path says so (F0 from YIN where only it does).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, NamedTuple

import librosa
import numpy as np
import scipy.fft
from scipy.ndimage import binary_closing, binary_opening, uniform_filter1d
from scipy.signal import find_peaks

from ttslens.sae.errors import BadInput

if TYPE_CHECKING:
    from ttslens.audio.backbones.demo.laughter import LaughterDetector
    from ttslens.audio.measures.timbre import TimbreGender

HOP_S = 0.01  # frame hop of every track
GATE_DB = 40.0  # voiced frames lie within this many dB of the loudest frame
ABS_FLOOR = 1e-5  # frame RMS under this (-100 dBFS) is silence whatever the clip's level
YIN_APERIODICITY = 0.35  # YIN voiced when the normalised difference at the period is below this


class Pitch(NamedTuple):
    """A pitch track: F0 (nan where unvoiced), the voicing mask, and frame centre times (s)."""

    f0_hz: np.ndarray
    voiced: np.ndarray
    times: np.ndarray


class Measures(NamedTuple):
    """Everything `measure` reports about one clip."""

    duration_s: float
    voiced_s: float
    median_f0_hz: float  # nan when nothing is voiced
    p_male: float  # from pitch; nan when nothing is voiced
    syllables_per_s: float  # nan when there is no speech
    laughter: float | None  # detector probability, None without a detector
    p_male_timbre: float | None = None  # pitch-free (timbre) classifier, None without one


def as_mono(wave, sr: int) -> np.ndarray:
    """Validate `wave` and `sr`; return a 1-D float32 copy-free view where possible."""
    if not isinstance(sr, int | np.integer) or sr <= 0:
        raise BadInput(f"sample rate must be a positive integer, got {sr!r}")
    if hasattr(wave, "detach"):  # a torch tensor
        wave = wave.detach().cpu().numpy()
    x = np.asarray(wave)
    if x.ndim > 1:
        x = np.squeeze(x)
    if x.ndim != 1:
        raise BadInput(f"expected mono audio (1-D), got shape {np.shape(wave)}")
    if x.size == 0:
        raise BadInput("empty waveform")
    if np.issubdtype(x.dtype, np.integer):
        x = x.astype(np.float32) / np.iinfo(x.dtype).max
    elif not np.issubdtype(x.dtype, np.floating):
        raise BadInput(f"expected a numeric waveform, got dtype {x.dtype}")
    x = x.astype(np.float32, copy=False)
    if not np.isfinite(x).all():
        raise BadInput("waveform contains NaN or inf")
    return x


def hop_length(sr: int) -> int:
    return max(1, round(sr * HOP_S))


def frame_rms(x: np.ndarray, sr: int) -> np.ndarray:
    """RMS of 25 ms frames centred on the shared 10 ms grid (`1 + len(x) // hop` frames)."""
    hop = hop_length(sr)
    win = max(2, 2 * round(sr * 0.0125))
    return librosa.feature.rms(y=x, frame_length=win, hop_length=hop, center=True)[0]


def energy_gate(rms: np.ndarray) -> np.ndarray:
    """Frames loud enough to be speech: within GATE_DB of the loudest and above an absolute floor."""
    ref = float(rms.max()) if rms.size else 0.0
    return rms >= max(ref * 10 ** (-GATE_DB / 20), ABS_FLOOR)


def yin_track(x: np.ndarray, sr: int, fmin: float, fmax: float) -> tuple[np.ndarray, np.ndarray]:
    """Vectorised YIN on the shared grid: (f0 in Hz, aperiodicity in [0, 1]) per frame.

    Each frame compares `w` samples with their copies `tau` samples later (`w` = the longest period);
    the difference function comes from one FFT cross-correlation and running energy sums.
    """
    hop = hop_length(sr)
    tau_min = max(2, int(sr / fmax))
    tau_max = int(math.ceil(sr / fmin))
    w = tau_max
    frame_len = w + tau_max + 2
    frame_len += frame_len % 2
    peak = float(np.abs(x).max())
    xp = np.pad(x / peak if peak > 0 else x, (frame_len // 2, frame_len // 2)).astype(np.float32)
    frames = librosa.util.frame(xp, frame_length=frame_len, hop_length=hop, axis=0)  # [n, frame_len]
    n_fft = scipy.fft.next_fast_len(frame_len + 1, real=True)  # > frame_len and > w + tau_max: no wrap-around
    taus = np.arange(1, tau_max + 2, dtype=np.float32)
    f0 = np.empty(len(frames))
    aper = np.empty(len(frames))
    for s in range(0, len(frames), 4096):  # bounded memory on long clips
        fr = frames[s : s + 4096]
        spec = scipy.fft.rfft(fr, n_fft) * np.conj(scipy.fft.rfft(fr[:, :w], n_fft))
        cross = scipy.fft.irfft(spec, n_fft)[:, : tau_max + 2]
        cs = np.zeros((len(fr), frame_len + 1), np.float32)
        np.cumsum(fr**2, axis=1, out=cs[:, 1:])
        diff = cs[:, [w]] + cs[:, w : w + tau_max + 2] - cs[:, : tau_max + 2] - 2 * cross
        diff = np.maximum(diff[:, 1:], 0.0)  # tau = 1 .. tau_max + 1
        cum = np.cumsum(diff, axis=1)
        cmnd = np.ones((len(fr), tau_max + 2), np.float32)
        cmnd[:, 1:] = np.where(cum > 1e-9, diff * taus / np.maximum(cum, 1e-9), 1.0)
        # first trough under 0.1 in [tau_min, tau_max], else the global minimum there
        mid = cmnd[:, tau_min : tau_max + 1]
        trough = (mid <= cmnd[:, tau_min - 1 : tau_max]) & (mid < cmnd[:, tau_min + 1 : tau_max + 2])
        good = trough & (mid < 0.1)
        idx = np.where(good.any(axis=1), good.argmax(axis=1), mid.argmin(axis=1)) + tau_min
        rows = np.arange(len(fr))
        a, b, c = cmnd[rows, idx - 1], cmnd[rows, idx], cmnd[rows, idx + 1]
        denom = a - 2 * b + c
        shift = np.where(np.abs(denom) > 1e-12, 0.5 * (a - c) / np.where(denom == 0, 1, denom), 0.0)
        f0[s : s + len(fr)] = sr / (idx + np.clip(shift, -1, 1))
        aper[s : s + len(fr)] = np.clip(b, 0.0, 1.0)
    return f0, aper


def pitch(wave, sr: int = 16000, fmin: float = 60.0, fmax: float = 500.0, fast: bool = False) -> Pitch:
    """F0 track on a 10 ms grid: YIN + energy gate (fast), combined with `librosa.pyin` unless `fast`."""
    x = as_mono(wave, sr)
    if not 0 < fmin < fmax < sr / 4:
        raise BadInput(f"need 0 < fmin < fmax < sr/4, got fmin={fmin}, fmax={fmax}, sr={sr}")
    hop = hop_length(sr)
    n = 1 + len(x) // hop
    gate = energy_gate(frame_rms(x, sr))
    f0_yin, aper = yin_track(x, sr, fmin, fmax)
    voiced = gate & (aper < YIN_APERIODICITY) & (f0_yin >= fmin) & (f0_yin <= fmax)
    voiced = binary_opening(voiced, np.ones(3, bool)) if n >= 3 else np.zeros(n, bool)
    f0 = np.where(voiced, f0_yin, np.nan)
    if not fast:
        frame_len = 1 << int(math.ceil(math.log2(max(2 * sr / fmin + 2, 0.064 * sr))))
        xp = np.pad(x, (0, max(0, frame_len - len(x))))
        f0_p, flag, _ = librosa.pyin(
            xp, fmin=fmin, fmax=fmax, sr=sr, frame_length=frame_len, hop_length=hop, resolution=0.25
        )
        f0_p, flag = f0_p[:n], flag[:n] & gate
        agree = np.abs(np.log2(f0_yin / np.where(flag, f0_p, 1.0))) < 1 / 12
        f0 = np.where(flag, np.where(agree, f0_yin, f0_p), f0)
        voiced = voiced | flag
    return Pitch(f0.astype(np.float32), voiced.astype(bool), (np.arange(n) * hop / sr).astype(np.float32))


def _median_f0(p: Pitch) -> float:
    return float(np.median(p.f0_hz[p.voiced])) if p.voiced.any() else math.nan


def median_f0(wave, sr: int = 16000, fast: bool = False) -> float:
    """Median F0 (Hz) over voiced frames; nan when nothing is voiced."""
    return _median_f0(pitch(wave, sr, fast=fast))


def p_male(f0_hz: float, boundary_hz: float = 165.0, width_octaves: float = 0.15) -> float:
    """P(male voice) from median F0: a logistic in log2 F0, 0.5 at `boundary_hz`; nan for nan F0."""
    if f0_hz is None or math.isnan(f0_hz):
        return math.nan
    if f0_hz <= 0 or boundary_hz <= 0 or width_octaves <= 0:
        raise BadInput(f"need positive F0, boundary and width, got {f0_hz}, {boundary_hz}, {width_octaves}")
    z = math.log2(f0_hz / boundary_hz) / width_octaves
    return 1.0 / (1.0 + math.exp(min(z, 700.0)))


def _gender(pm: float) -> str:
    return "unknown" if math.isnan(pm) else ("male" if pm >= 0.5 else "female")


def gender(wave, sr: int = 16000) -> str:
    """'male' | 'female' from median F0 around 165 Hz; 'unknown' when nothing is voiced."""
    return _gender(p_male(median_f0(wave, sr)))


def _voiced_s(p: Pitch, sr: int) -> float:
    return float(p.voiced.sum()) * hop_length(sr) / sr


def voiced_duration(wave, sr: int = 16000) -> float:
    """Seconds of voiced speech."""
    return _voiced_s(pitch(wave, sr), sr)


def _speech_rate(x: np.ndarray, sr: int, p: Pitch) -> float:
    """Syllable nuclei per second of speech time (voicing with gaps under 0.3 s closed)."""
    fps = 1.0 / HOP_S
    speech = binary_closing(np.pad(p.voiced, 30), np.ones(31, bool))[30:-30]
    speech_s = float(speech.sum()) / fps
    if speech_s == 0:
        return math.nan
    # band-limited (300-3000 Hz) energy envelope on the same grid, smoothed over ~50 ms
    n_fft = 1 << int(math.ceil(math.log2(0.032 * sr)))
    power = np.abs(librosa.stft(x, n_fft=n_fft, hop_length=hop_length(sr), center=True)) ** 2
    freqs = librosa.fft_frequencies(sr=sr, n_fft=n_fft)
    band = power[(freqs >= 300) & (freqs <= 3000)].sum(axis=0)
    env = 10 * np.log10(uniform_filter1d(band, 5) + 1e-10)
    n = min(len(env), len(p.voiced))
    env, voiced = env[:n], p.voiced[:n]
    peaks, _ = find_peaks(env, distance=round(0.08 * fps), prominence=2.0)
    peaks = peaks[voiced[peaks] & (env[peaks] > env.max() - 30.0)]
    return len(peaks) / speech_s


def speech_rate(wave, sr: int = 16000) -> float:
    """Syllables per second of speech time, counted as peaks of a smoothed 300-3000 Hz energy envelope
    (at least 80 ms apart, 2 dB prominent, within 30 dB of the loudest) at voiced frames; nan if silent."""
    x = as_mono(wave, sr)
    return _speech_rate(x, sr, pitch(x, sr))


def measure(
    wave,
    sr: int = 16000,
    laughter_detector: LaughterDetector | None = None,
    fast: bool = False,
    gender_model: TimbreGender | None = None,
) -> Measures:
    """All measures of one clip, computing the pitch track once (`fast`: the YIN-only path, ~4x quicker);
    `gender_model` adds P(male) from timbre beside the pitch one."""
    x = as_mono(wave, sr)
    p = pitch(x, sr, fast=fast)
    f0 = _median_f0(p)
    laugh = None if laughter_detector is None else float(laughter_detector.probability(x, sr))
    return Measures(
        duration_s=len(x) / sr,
        voiced_s=_voiced_s(p, sr),
        median_f0_hz=f0,
        p_male=p_male(f0),
        syllables_per_s=_speech_rate(x, sr, p),
        laughter=laugh,
        p_male_timbre=None if gender_model is None else gender_model.p_male(x, sr),
    )

"""Measures of short clips cut from utterances: the audio evidence of auto-interp.

A clip is `length_s` seconds of an utterance centred on one speech token; at the utterance's edges it
is zero-padded (and says so). Most measures come from frame tracks computed once per utterance
(`analyse`) and read over the clip's span (`clip_measures`): pitch, voicing, loudness, syllable
nuclei and the laughter detector's 1-s windows. Reading a track over the span equals measuring the cut,
padded clip up to one frame at its edges, and costs one analysis per utterance instead of one per clip.
Model-based measures (ASR, AST laughter, wav2vec2 gender) run on the cut clips themselves, batched.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import librosa
import numpy as np
from scipy.ndimage import binary_closing, uniform_filter1d
from scipy.signal import find_peaks

from ttslens.audio.measures.signal import HOP_S, as_mono, frame_rms, hop_length, p_male, pitch

PEAK_S = 0.06  # half-width of the "at the token" window for pitch and loudness
MEASURES = (
    "laughter",  # P(laughter) of the 1-s window centred nearest the token
    "p_male",  # P(male voice) from the clip's median F0 (or a gender classifier)
    "f0_hz",  # median F0 over the clip's voiced frames
    "f0_peak_hz",  # median F0 within ±60 ms of the token
    "voiced_frac",  # fraction of the clip that is voiced
    "loudness_db",  # clip RMS level, dBFS
    "peak_db",  # RMS level within ±60 ms of the token, dBFS
    "syllable_rate",  # syllable nuclei per second of speech in the clip
    "voiced_peak",  # fraction voiced within ±60 ms of the token
    "centroid_peak_hz",  # spectral centroid within ±60 ms of the token (high: hiss, s / sh / f)
)


class Tracks(NamedTuple):
    """Frame tracks of one utterance on the 10 ms grid of `ttslens.audio.measures`."""

    duration_s: float
    f0_hz: np.ndarray  # [T], nan where unvoiced
    voiced: np.ndarray  # [T] bool
    speech: np.ndarray  # [T] bool: voicing with gaps under 0.3 s closed
    rms: np.ndarray  # [T]
    centroid: np.ndarray  # [T] spectral centroid (Hz)
    nuclei: np.ndarray  # frame indices of syllable nuclei
    laugh_t: np.ndarray  # [W] centres (s) of the laughter detector's 1-s windows
    laugh_p: np.ndarray  # [W] P(laughter) of those windows


def analyse(wave, sr: int, laughter=None) -> Tracks:
    """Frame tracks of an utterance (`laughter`: a detector with `window_probs`, or None)."""
    x = as_mono(wave, sr)
    p = pitch(x, sr, fast=True)
    n = len(p.voiced)
    fps = 1.0 / HOP_S
    speech = binary_closing(np.pad(p.voiced, 30), np.ones(31, bool))[30:-30]
    n_fft = 1 << int(math.ceil(math.log2(0.032 * sr)))
    power = np.abs(librosa.stft(x, n_fft=n_fft, hop_length=hop_length(sr), center=True)) ** 2
    freqs = librosa.fft_frequencies(sr=sr, n_fft=n_fft)
    env = 10 * np.log10(uniform_filter1d(power[(freqs >= 300) & (freqs <= 3000)].sum(axis=0), 5) + 1e-10)[:n]
    centroid = (freqs[:, None] * power).sum(axis=0)[:n] / np.maximum(power.sum(axis=0)[:n], 1e-12)
    peaks, _ = find_peaks(env, distance=round(0.08 * fps), prominence=2.0)
    nuclei = peaks[p.voiced[peaks] & (env[peaks] > env.max() - 30.0)] if len(peaks) else peaks
    if laughter is not None:
        lp = np.asarray(laughter.window_probs(x, sr), dtype=np.float32)
        lt = np.arange(len(lp)) * laughter.hop_s + laughter.window_s / 2
    else:
        lp, lt = np.zeros(0, np.float32), np.zeros(0)
    rms = frame_rms(x, sr)[:n]
    return Tracks(len(x) / sr, p.f0_hz, p.voiced, speech[:n], rms, centroid.astype(np.float32), nuclei, lt, lp)


def _db(rms: np.ndarray) -> float:
    """Level (dBFS) of frames by their mean power; -100 for silence or no frames."""
    power = float(np.mean(rms.astype(np.float64) ** 2)) if rms.size else 0.0
    return 10 * math.log10(power) if power > 1e-10 else -100.0


def clip_measures(tr: Tracks, center_s: float, length_s: float = 1.0) -> dict[str, float]:
    """The MEASURES of the clip [center - length/2, center + length/2] (frames outside the utterance
    count as silence, as in the zero-padded clip) plus `padded` (1.0 when the clip crosses an edge)."""
    fps = 1.0 / HOP_S
    lo, hi = round((center_s - length_s / 2) * fps), round((center_s + length_s / 2) * fps)
    n_frames = max(hi - lo, 1)
    a, b = max(lo, 0), min(hi, len(tr.voiced))
    voiced = tr.voiced[a:b]
    f0 = tr.f0_hz[a:b][voiced]
    c = round(center_s * fps)
    pk = slice(max(c - round(PEAK_S * fps), 0), max(min(c + round(PEAK_S * fps) + 1, len(tr.voiced)), 0))
    f0_pk = tr.f0_hz[pk][tr.voiced[pk]]
    median = float(np.median(f0)) if f0.size else math.nan
    speech_s = float(tr.speech[a:b].sum()) / fps
    n_nuclei = int(((tr.nuclei >= a) & (tr.nuclei < b)).sum())
    # a window of the laughter detector whose centre is nearest the clip's: that window is the clip
    laugh = float(tr.laugh_p[np.abs(tr.laugh_t - center_s).argmin()]) if tr.laugh_p.size else math.nan
    rms_clip = np.concatenate([tr.rms[a:b], np.zeros(n_frames - max(b - a, 0))])
    return {
        "laughter": laugh,
        "p_male": p_male(median),
        "f0_hz": median,
        "f0_peak_hz": float(np.median(f0_pk)) if f0_pk.size else math.nan,
        "voiced_frac": float(voiced.sum()) / n_frames,
        "loudness_db": _db(rms_clip),
        "peak_db": _db(tr.rms[pk]),
        "syllable_rate": n_nuclei / speech_s if speech_s > 0.1 else math.nan,
        "voiced_peak": float(tr.voiced[pk].mean()) if tr.voiced[pk].size else 0.0,
        "centroid_peak_hz": float(np.median(tr.centroid[pk])) if tr.centroid[pk].size else math.nan,
        "padded": float(lo < 0 or hi > len(tr.voiced)),
    }


def cut_clip(wave: np.ndarray, sr: int, center_s: float, length_s: float = 1.0) -> tuple[np.ndarray, bool]:
    """`length_s` seconds of `wave` centred on `center_s`, zero-padded at the edges: (clip, padded)."""
    n = round(length_s * sr)
    start = round(center_s * sr) - n // 2
    lo, hi = max(start, 0), min(start + n, len(wave))
    clip = np.zeros(n, dtype=np.float32)
    if hi > lo:
        clip[lo - start : hi - start] = wave[lo:hi]
    return clip, bool(start < 0 or start + n > len(wave))

"""The demo backbone's speech codec: 16 kHz audio <-> one discrete token per 40 ms frame (25 Hz).

A token is a product code `f0_bin * n_env + env_cluster`:

- `f0_bin` 0 means unvoiced or silent; 1..n_f0_bins are log-spaced pitch bins over [f0_min, f0_max]. Pitch
  comes from our own YIN (10 ms sub-frames, median over the 4 sub-frames of a frame), gated by energy and
  aperiodicity, so the token carries the speaker's pitch (and with it the voice's gender).
- `env_cluster` is the nearest of `n_env` k-means centroids of the frame's spectral envelope: a log-mel
  power spectrum (dB), level included, averaged over the frame's sub-frames. Each pitch range has its own
  codebook of centroids (unvoiced; voiced below / above `codebook_split_hz`), so male, female and unvoiced
  frames do not compete for the same clusters: more envelope detail at the same vocabulary size.

The decoder is a source-filter vocoder. The F0 of each token's bin (interpolated in log-frequency between
frame centres, integrated to a continuous phase) drives a band-limited harmonic comb with the same power
density as unit white noise; noise is mixed in for unvoiced frames and, in voiced frames, in proportion to
the aperiodicity learned per envelope cluster (breathy clusters such as laughter get more). The mix is
shaped in the STFT domain by the envelope centroid (interpolated between frames in dB), then overlap-added.
Clusters at the analysis floor decode to silence (-120 dB). Output is float32 with exactly T * hop samples.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import librosa
import numpy as np
import torch
from safetensors.numpy import load_file, save_file
from tqdm import tqdm

from ttslens.sae.errors import BadInput
from ttslens.sae.files import atomic_path, atomic_write_json

CONFIG_FILE, TENSORS_FILE = "codec.json", "codec.safetensors"
FORMAT_VERSION = 1
SUBFRAMES = 4  # analysis sub-frames (10 ms at the defaults) per token frame


@dataclass
class CodecConfig:
    """Shape of the codec: frame rate, pitch bins, envelope bands and clusters, analysis thresholds."""

    sample_rate: int = 16000
    """Audio sample rate in Hz (input to encode, output of decode)."""
    frame_rate: int = 25
    """Tokens per second; hop = sample_rate / frame_rate samples per token (640 at the defaults)."""
    n_mels: int = 32
    """Mel bands of the spectral envelope (0 Hz .. Nyquist)."""
    n_f0_bins: int = 24
    """Voiced pitch bins, log-spaced over [f0_min, f0_max]; token f0 index 0 means unvoiced."""
    f0_min: float = 60.0
    """Lowest pitch in Hz (lower bin edge; the pitch tracker's floor)."""
    f0_max: float = 500.0
    """Highest pitch in Hz (upper bin edge; the pitch tracker's ceiling)."""
    n_env: int = 64
    """Envelope clusters (k-means centroids); vocab_size = (n_f0_bins + 1) * n_env."""
    codebook_split_hz: tuple[float, ...] = (150.0,)
    """Pitch boundaries between envelope codebooks: codebook 0 is unvoiced frames, codebook i + 1 voiced frames
    whose pitch bin centre has i boundaries below it (default: unvoiced, voiced < 150 Hz, voiced >= 150 Hz)."""
    n_fft: int = 512
    """FFT size of the envelope analysis and of the vocoder's STFT (window length too)."""
    voicing_threshold: float = 0.3
    """YIN aperiodicity (cumulative-mean-normalised difference at the period) below which a sub-frame is voiced."""
    weak_voicing_threshold: float = 0.5
    """Hysteresis: sub-frames below this aperiodicity are voiced too when next to a voiced run."""
    silence_db: float = -60.0
    """Sub-frames quieter than this (dB re full scale RMS) are never voiced."""
    relative_silence_db: float = -40.0
    """Sub-frames this far below the utterance's loudest sub-frame are never voiced."""
    floor_db: float = -90.0
    """Power floor of the envelope in dB: frames at the floor decode to silence."""
    kmeans_iters: int = 60
    """Maximum Lloyd iterations of the envelope k-means."""
    seed: int = 0
    """Seed of the k-means (frame sampling, k-means++ init) and of the decoder's noise."""

    def __post_init__(self) -> None:
        self.codebook_split_hz = tuple(sorted(float(f) for f in self.codebook_split_hz))
        if self.sample_rate % self.frame_rate or (self.sample_rate // self.frame_rate) % SUBFRAMES:
            raise BadInput(
                f"sample_rate / frame_rate must be a whole number of samples divisible by {SUBFRAMES} "
                f"(got {self.sample_rate} / {self.frame_rate})"
            )
        if not 0 < self.f0_min < self.f0_max < self.sample_rate / 4:
            raise BadInput(f"need 0 < f0_min < f0_max < sample_rate / 4 (got {self.f0_min}, {self.f0_max})")
        if self.n_f0_bins < 1 or self.n_env < 1 or self.n_mels < 2:
            raise BadInput("n_f0_bins, n_env must be >= 1 and n_mels >= 2")

    @property
    def hop(self) -> int:
        return self.sample_rate // self.frame_rate

    @property
    def n_codebooks(self) -> int:
        return len(self.codebook_split_hz) + 2

    @property
    def f0_centres(self) -> np.ndarray:
        """Geometric centre (Hz) of each voiced pitch bin."""
        edges = np.geomspace(self.f0_min, self.f0_max, self.n_f0_bins + 1)
        return np.sqrt(edges[:-1] * edges[1:])


# ----------------------------------------------------------------------------------------------- analysis


def _subframes(wave: np.ndarray, hop: int, length: int, n_frames: int) -> np.ndarray:
    """[n_frames * SUBFRAMES, length] windows centred on the sub-frame centres (i + 0.5) * hop / SUBFRAMES."""
    sub = hop // SUBFRAMES
    n = n_frames * SUBFRAMES
    start = sub // 2 - length // 2  # first window's start in wave coordinates (negative: zero-padded)
    left = max(0, -start)
    right = max(0, start + (n - 1) * sub + length - len(wave))
    padded = np.pad(wave, (left, right))
    windows = np.lib.stride_tricks.sliding_window_view(padded, length)
    return windows[start + left :: sub][:n]


def _yin(frames: np.ndarray, window: int, tau_min: int, tau_max: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-window period (samples, parabolically refined) and aperiodicity, YIN-style (de Cheveigné & Kawahara)."""
    nfft = 1 << (frames.shape[1] - 1).bit_length()
    spec = np.fft.rfft(frames, nfft)
    corr = np.fft.irfft(np.conj(np.fft.rfft(frames[:, :window], nfft)) * spec, nfft)[:, : tau_max + 2]
    energy = np.cumsum(np.pad(frames.astype(np.float64) ** 2, ((0, 0), (1, 0))), axis=1)
    lagged = energy[:, window : window + tau_max + 2] - energy[:, : tau_max + 2]  # sum x[j+tau]^2 over the window
    diff = np.maximum(lagged[:, :1] + lagged - 2 * corr, 0.0)
    taus = np.arange(1, tau_max + 2)
    cmnd = np.ones_like(diff)
    cmnd[:, 1:] = diff[:, 1:] * taus / np.maximum(np.cumsum(diff[:, 1:], axis=1), 1e-12)
    search = cmnd[:, tau_min : tau_max + 1]
    is_min = np.ones_like(search, dtype=bool)
    is_min[:, 1:] &= search[:, 1:] <= search[:, :-1]
    is_min[:, :-1] &= search[:, :-1] <= search[:, 1:]
    # the first dip nearly as deep as the deepest: avoids octave drops (2T) and formant-locked dips (T * 2/3)
    accept = search.min(1, keepdims=True) + 0.05
    pick = (is_min & (search < accept)).argmax(1) + tau_min
    rows = np.arange(len(frames))
    left, mid, right = cmnd[rows, pick - 1], cmnd[rows, pick], cmnd[rows, np.minimum(pick + 1, tau_max + 1)]
    curve = left - 2 * mid + right
    shift = np.where(curve > 1e-9, 0.5 * (left - right) / np.where(curve > 1e-9, curve, 1.0), 0.0)
    return pick + np.clip(shift, -1, 1), mid


class _Analyser:
    """Frame analysis shared by encoding and fitting: pitch, aperiodicity and log-mel envelope per frame."""

    def __init__(self, config: CodecConfig):
        c = self.config = config
        self.tau_min = int(math.floor(c.sample_rate / c.f0_max))
        self.tau_max = int(math.ceil(c.sample_rate / c.f0_min))
        self.yin_window = max(self.tau_max, c.hop // 2)  # YIN integration window, >= one longest period
        self.window = np.hanning(c.n_fft + 2)[1:-1].astype(np.float32)
        fb = librosa.filters.mel(sr=c.sample_rate, n_fft=c.n_fft, n_mels=c.n_mels, fmin=0.0, norm=None)
        self.melbank = (fb / np.maximum(fb.sum(1, keepdims=True), 1e-9)).astype(np.float32)  # band-mean PSD
        self.floor = 10.0 ** (c.floor_db / 10)

    def __call__(self, wave: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(f0 Hz [T] nan if unvoiced, aperiodicity [T] nan if unvoiced, env dB [T, n_mels])."""
        c = self.config
        wave = np.asarray(wave, dtype=np.float32)
        if wave.ndim != 1:
            raise BadInput(f"expected a mono waveform [samples], got shape {wave.shape}")
        n_frames = -(-len(wave) // c.hop)
        if n_frames == 0:
            return np.zeros(0), np.zeros(0), np.zeros((0, c.n_mels), np.float32)
        # envelope: band-mean power spectral density of Hann windows, averaged over each frame's sub-frames
        spec = np.fft.rfft(_subframes(wave, c.hop, c.n_fft, n_frames) * self.window, axis=1)
        psd = (spec.real**2 + spec.imag**2) / float((self.window**2).sum())
        mel = (psd.astype(np.float32) @ self.melbank.T).reshape(n_frames, SUBFRAMES, c.n_mels).mean(1)
        env = 10 * np.log10(mel + self.floor)
        # pitch: YIN per sub-frame, gated by level, then a median over each frame's voiced sub-frames
        frames = _subframes(wave, c.hop, self.yin_window + self.tau_max + 1, n_frames)
        period, aper = _yin(frames, self.yin_window, self.tau_min, self.tau_max)
        centre = frames[:, self.tau_max // 2 : self.tau_max // 2 + self.yin_window]
        level = 10 * np.log10(np.mean(centre.astype(np.float64) ** 2, axis=1) + 1e-20)
        gate = max(c.silence_db, level.max() + c.relative_silence_db)
        loud = level > gate
        voiced = _hysteresis(loud & (aper < c.voicing_threshold), loud & (aper < c.weak_voicing_threshold))
        f0 = np.where(voiced, c.sample_rate / period, np.nan).reshape(n_frames, SUBFRAMES)
        aper = np.where(voiced, aper, np.nan).reshape(n_frames, SUBFRAMES)
        enough = (~np.isnan(f0)).sum(1) >= SUBFRAMES // 2  # a frame is voiced if half its sub-frames are
        return _fix_octaves(_row_median(f0, enough)), _row_median(aper, enough), env


def _row_median(values: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """nan-median of each selected row of `values` [T, S]; nan for the other rows."""
    out = np.full(len(values), np.nan)
    out[rows] = np.nanmedian(values[rows], axis=1)
    return out


def _hysteresis(strong: np.ndarray, weak: np.ndarray) -> np.ndarray:
    """Runs of `weak` that contain at least one `strong` element."""
    run = np.cumsum(np.r_[weak[:1], weak[1:] & ~weak[:-1]]) * weak  # 1-based run id, 0 outside runs
    keep = np.bincount(run, weights=strong & weak, minlength=run.max() + 1) > 0
    keep[0] = False
    return keep[run]


def _fix_octaves(f0: np.ndarray, context: int = 3) -> np.ndarray:
    """Fold isolated octave jumps back towards the median pitch of the neighbouring voiced frames."""
    idx = np.flatnonzero(~np.isnan(f0))
    if len(idx) < 3:
        return f0
    log2 = np.log2(f0[idx])
    padded = np.pad(log2, context, mode="edge")
    ref = np.median(np.lib.stride_tricks.sliding_window_view(padded, 2 * context + 1), axis=1)
    out = f0.copy()
    out[idx] = 2.0 ** (log2 + np.round(ref - log2))
    return out


def frame_features(wave: np.ndarray, config: CodecConfig) -> tuple[np.ndarray, np.ndarray]:
    """Per-frame pitch and envelope of a 16 kHz waveform: (f0_hz [T], nan when unvoiced; env dB [T, n_mels])."""
    f0, _, env = _Analyser(config)(wave)
    return f0, env


# ------------------------------------------------------------------------------------------------ k-means


def _kmeans(x: np.ndarray, k: int, iters: int, rng: np.random.Generator) -> np.ndarray:
    """Lloyd's k-means with k-means++ initialisation; empty clusters are re-seeded at the worst-fit points."""
    x = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    n = len(x)
    sq = (x * x).sum(1)

    def dist2(centres: torch.Tensor) -> torch.Tensor:
        return (sq[:, None] - 2 * x @ centres.T + (centres * centres).sum(1)[None]).clamp_min(0)

    centres = torch.empty(k, x.shape[1])
    centres[0] = x[rng.integers(n)]
    closest = dist2(centres[:1])[:, 0]
    for j in range(1, k):  # k-means++: the next centre with probability proportional to squared distance
        weights = closest.double().numpy()
        total = weights.sum()
        centres[j] = x[rng.choice(n, p=weights / total) if total > 0 else rng.integers(n)]
        closest = torch.minimum(closest, dist2(centres[j : j + 1])[:, 0])
    assign = None
    for _ in range(iters):
        d = dist2(centres)
        new = d.argmin(1)
        if assign is not None and torch.equal(new, assign):
            break
        assign = new
        counts = torch.bincount(assign, minlength=k)
        sums = torch.zeros_like(centres).index_add_(0, assign, x)
        filled = counts > 0
        centres[filled] = sums[filled] / counts[filled, None].float()
        if not filled.all():
            worst = d.gather(1, assign[:, None])[:, 0].argsort(descending=True)
            for j, i in zip(torch.nonzero(~filled)[:, 0].tolist(), worst.tolist(), strict=False):
                centres[j] = x[i]
    return centres.numpy()


# -------------------------------------------------------------------------------------------------- codec


def _f0_bins(f0_hz: np.ndarray, config: CodecConfig) -> np.ndarray:
    """Pitch bin per frame: 0 for nan (unvoiced), else 1..n_f0_bins, log-spaced (clipped to the range)."""
    c = config
    f0 = np.asarray(f0_hz, dtype=np.float64)
    pos = np.log(np.where(np.isnan(f0), c.f0_min, f0) / c.f0_min) / math.log(c.f0_max / c.f0_min)
    idx = np.clip(np.floor(pos * c.n_f0_bins), 0, c.n_f0_bins - 1).astype(np.int64) + 1
    return np.where(np.isnan(f0), 0, idx)


def _codebooks(config: CodecConfig) -> np.ndarray:
    """Envelope codebook of each pitch bin [n_f0_bins + 1]: 0 for unvoiced, then by `codebook_split_hz`."""
    return np.r_[0, 1 + np.searchsorted(config.codebook_split_hz, config.f0_centres)]


class Codec:
    """Tokenizer (encode) and source-filter vocoder (decode) around fitted envelope centroids."""

    def __init__(self, config: CodecConfig, centroids: np.ndarray, breathiness: np.ndarray):
        self.config = config
        self.hop = config.hop
        self.centroids = np.asarray(centroids, dtype=np.float32)
        """[n_codebooks, n_env, n_mels] envelope centroids in dB."""
        self.breathiness = np.asarray(breathiness, dtype=np.float32)
        """[n_codebooks, n_env] noise share of voiced frames in each cluster (mean YIN aperiodicity)."""
        shape = (config.n_codebooks, config.n_env)
        if self.centroids.shape != (*shape, config.n_mels) or self.breathiness.shape != shape:
            raise BadInput(
                f"codec tensors have shapes {list(self.centroids.shape)}, {list(self.breathiness.shape)}; "
                f"the config says {[*shape, config.n_mels]}, {list(shape)}"
            )
        self._analyser = _Analyser(config)
        self._f0_centres = config.f0_centres
        self._codebook = _codebooks(config)
        self._spectra_db = self._cluster_spectra()

    @property
    def vocab_size(self) -> int:
        return (self.config.n_f0_bins + 1) * self.config.n_env

    # ---- tokens <-> parts

    def f0_bin(self, f0_hz: np.ndarray) -> np.ndarray:
        """Pitch bin per frame: 0 for nan (unvoiced), else 1..n_f0_bins (clipped to the range)."""
        return _f0_bins(f0_hz, self.config)

    def _check(self, tokens) -> np.ndarray:
        if isinstance(tokens, torch.Tensor):
            tokens = tokens.detach().cpu().numpy()
        arr = np.asarray(tokens)
        if arr.ndim != 1:
            raise BadInput(f"expected a 1-D token sequence, got shape {arr.shape}")
        if arr.size and not np.issubdtype(arr.dtype, np.integer):
            raise BadInput(f"tokens must be integers, got dtype {arr.dtype}")
        arr = arr.astype(np.int64)
        bad = (arr < 0) | (arr >= self.vocab_size)
        if bad.any():
            raise BadInput(f"token {int(arr[bad][0])} is out of range [0, {self.vocab_size}) for this codec")
        return arr

    def token_f0(self, tokens) -> np.ndarray:
        """Pitch (Hz, the bin centre) of each token; nan for unvoiced tokens."""
        idx = self._check(tokens) // self.config.n_env
        return np.where(idx > 0, self._f0_centres[np.maximum(idx - 1, 0)], np.nan)

    # ---- encode / decode

    def encode(self, wave: np.ndarray) -> np.ndarray:
        """int64 tokens [ceil(len(wave) / hop)] of a 16 kHz mono waveform."""
        f0, _, env = self._analyser(wave)
        bins = self.f0_bin(f0)
        return bins * self.config.n_env + self._nearest(env, self._codebook[bins])

    def _nearest(self, env: np.ndarray, codebook: np.ndarray) -> np.ndarray:
        """Index of the nearest centroid in each frame's codebook."""
        out = np.zeros(len(env), np.int64)
        for b in np.unique(codebook):
            rows, c = codebook == b, self.centroids[b]
            x = env[rows]
            out[rows] = ((x * x).sum(1, keepdims=True) - 2 * x @ c.T + (c * c).sum(1)).argmin(1)
        return out

    def decode(self, tokens) -> np.ndarray:
        """float32 waveform [T * hop] at 16 kHz; ValueError on out-of-range tokens."""
        c = self.config
        tokens = self._check(tokens)
        n_frames, n = len(tokens), len(tokens) * self.hop
        if n_frames == 0:
            return np.zeros(0, np.float32)
        f0 = self.token_f0(tokens)
        codebook, cluster = self._codebook[tokens // c.n_env], tokens % c.n_env
        voiced = ~np.isnan(f0)
        # pitch track: log-F0 interpolated between frame centres; unvoiced frames borrow the nearest voiced pitch
        centres = (np.arange(n_frames) + 0.5) * self.hop
        log_f0 = np.log(f0[voiced]) if voiced.any() else np.full(1, math.log(100.0))
        f0_samples = np.exp(np.interp(np.arange(n), centres[voiced] if voiced.any() else centres[:1], log_f0))
        # excitation: band-limited harmonic comb (Dirichlet kernel) with unit power, and unit white noise
        phase = 2 * np.pi * np.mod(np.cumsum(f0_samples / c.sample_rate), 1.0)
        harmonics = np.maximum(np.floor(0.48 * c.sample_rate / f0_samples), 1)
        comb = _harmonic_sum(phase, harmonics) * np.sqrt(2.0 / harmonics)
        noise = np.random.default_rng(c.seed).standard_normal(n)
        sub = self.hop // SUBFRAMES
        stft = dict(n_fft=c.n_fft, hop_length=sub, window="hann", center=True)
        comb_spec = librosa.stft(comb.astype(np.float32), **stft).T
        noise_spec = librosa.stft(noise.astype(np.float32), **stft).T
        # per STFT frame (centred on multiples of `sub`): controls interpolated between token frame centres
        pos = np.clip(np.arange(len(comb_spec)) / SUBFRAMES - 0.5, 0, n_frames - 1)
        periodic = _lerp(np.where(voiced, 1 - self.breathiness[codebook, cluster], 0.0), pos)[:, None]
        gain = np.sqrt(10.0 ** (_lerp(self._spectra_db[codebook, cluster], pos) / 10))
        mix = np.sqrt(periodic) * comb_spec + np.sqrt(1 - periodic) * noise_spec
        return librosa.istft((gain * mix).T, hop_length=sub, window="hann", center=True, length=n).astype(np.float32)

    def _cluster_spectra(self) -> np.ndarray:
        """[n_codebooks, n_env, n_fft // 2 + 1] dB power spectral density per cluster; analysed, it gives the centroid.

        The spectrum is piecewise linear in dB between the mel band centres (deep valleys stay deep); the values
        at the centres are solved by fixed-point iteration against what the analysis measures: band means of
        the spectrum smeared by the window once by the vocoder's STFT filter and once by the analysis itself
        (the centroids already include one analysis smear). Clusters at the floor come out ~-120 dB: silence.
        """
        c = self.config
        centres = librosa.hz_to_mel(librosa.mel_frequencies(c.n_mels + 2, fmin=0.0, fmax=c.sample_rate / 2)[1:-1])
        bins = librosa.hz_to_mel(librosa.fft_frequencies(sr=c.sample_rate, n_fft=c.n_fft))
        interp = np.stack([np.interp(bins, centres, e) for e in np.eye(c.n_mels)], 1)  # [bins, mels]
        fine = np.abs(np.fft.fft(self._analyser.window, 16 * c.n_fft)) ** 2  # window power response, 1/16 bin
        offsets = np.arange(-4, 5)
        kernel = np.array([fine[(np.arange(16) - 8 + 16 * k) % len(fine)].sum() for k in offsets])
        smear = sum(w * np.eye(len(bins), k=k) for k, w in zip(offsets, kernel, strict=True))
        smear /= smear.sum(1, keepdims=True)
        measure = self._analyser.melbank.astype(np.float64) @ smear

        target = 10 * np.log10(np.maximum(10.0 ** (self.centroids / 10) - self._analyser.floor, 1e-12))
        values = target.copy()
        for _ in range(30):
            measured = 10 * np.log10(10.0 ** (values @ interp.T / 10) @ measure.T + 1e-30)
            values += np.clip(target - measured, -20, 20)
        return (values @ interp.T).astype(np.float32)

    # ---- files

    def save(self, directory: str | Path) -> None:
        """Write codec.safetensors + codec.json into `directory`, each atomically."""
        directory = Path(directory)
        tensors = {"centroids": self.centroids, "breathiness": self.breathiness}
        with atomic_path(directory / TENSORS_FILE) as tmp:
            save_file({k: np.ascontiguousarray(v) for k, v in tensors.items()}, str(tmp))
        atomic_write_json(directory / CONFIG_FILE, {"format_version": FORMAT_VERSION, "config": asdict(self.config)})

    @classmethod
    def load(cls, directory: str | Path) -> Codec:
        """Read a codec directory; ValueError (one line) when it is missing or corrupt."""
        directory = Path(directory)
        try:
            meta = json.loads((directory / CONFIG_FILE).read_text())
            if meta.get("format_version") != FORMAT_VERSION:
                raise BadInput(f"format_version {meta.get('format_version')!r}, expected {FORMAT_VERSION}")
            known = {f.name for f in fields(CodecConfig)}
            config = CodecConfig(**{k: v for k, v in meta["config"].items() if k in known})
            tensors = load_file(str(directory / TENSORS_FILE))
            return cls(config, tensors["centroids"], tensors["breathiness"])
        except Exception as e:
            reason = " ".join(str(e).split()) or type(e).__name__
            raise BadInput(
                f"codec at {directory} is missing or corrupt ({reason}); re-run `ttslens demo build`"
            ) from None


def _lerp(values: np.ndarray, pos: np.ndarray) -> np.ndarray:
    """Linear interpolation of per-frame `values` [T, ...] at fractional frame positions `pos` in [0, T - 1]."""
    left = np.floor(pos).astype(np.int64)
    right = np.minimum(left + 1, len(values) - 1)
    w = (pos - left).reshape(-1, *([1] * (values.ndim - 1)))
    return (1 - w) * values[left] + w * values[right]


def _harmonic_sum(phase: np.ndarray, k: np.ndarray) -> np.ndarray:
    """sum_{h=1..k} cos(h * phase), by the closed form of the Dirichlet kernel (exact limit k near phase 0)."""
    half = np.sin(0.5 * phase)
    safe = np.abs(half) > 1e-6
    ratio = np.sin((k + 0.5) * phase) / np.where(safe, 2 * half, 1.0)
    return np.where(safe, ratio - 0.5, k)


# ---------------------------------------------------------------------------------------------------- fit


def fit_codec(
    waves: Iterable[np.ndarray],
    config: CodecConfig = CodecConfig(),  # noqa: B008 (never mutated)
    max_frames: int = 200_000,
    progress: bool = True,
) -> Codec:
    """Fit the envelope codebooks (and their breathiness) on frames of `waves` (16 kHz mono float arrays).

    Every frame is analysed; if there are more than `max_frames`, a uniform random subset fits the k-means.
    A codebook without frames of its own (e.g. no high voices in the corpus) is fitted on all frames.
    """
    analyser = _Analyser(config)
    parts = [analyser(wave) for wave in tqdm(waves, desc="codec: analysing", unit="utt", disable=not progress)]
    if sum(len(f0) for f0, _, _ in parts) == 0:
        raise BadInput("fit_codec needs at least one non-empty waveform")
    f0, aper, env = (np.concatenate(x) for x in zip(*parts, strict=True))
    book = _codebooks(config)[_f0_bins(f0, config)]
    rng = np.random.default_rng(config.seed)
    sample = np.sort(rng.choice(len(env), max_frames, replace=False)) if len(env) > max_frames else np.arange(len(env))
    centroids = []
    for b in tqdm(range(config.n_codebooks), desc="codec: k-means", unit="codebook", disable=not progress):
        own = sample[book[sample] == b]
        centroids.append(_kmeans(env[own if len(own) else sample], config.n_env, config.kmeans_iters, rng))
    codec = Codec(config, np.stack(centroids), np.zeros((config.n_codebooks, config.n_env), np.float32))
    # breathiness: mean aperiodicity of the voiced frames of each cluster (the corpus median where it has none)
    index = book * config.n_env + codec._nearest(env, book)
    voiced = ~np.isnan(aper)
    size = config.n_codebooks * config.n_env
    total = np.bincount(index[voiced], weights=aper[voiced], minlength=size)
    count = np.bincount(index[voiced], minlength=size)
    default = float(np.median(aper[voiced])) if voiced.any() else 0.1
    breath = np.where(count > 0, total / np.maximum(count, 1), default).clip(0.0, 0.9)
    codec.breathiness = breath.reshape(config.n_codebooks, config.n_env).astype(np.float32)
    return codec

"""A small laughter detector: 1 s windows (0.25 s hop) → hand-made acoustic features → a tiny MLP.

Laughter is a train of breathy "ha" bursts, 4-6 per second, usually higher in pitch than the speaker's
speech. The window features (`FEATURE_NAMES`) describe exactly that, on a 10 ms frame grid at 16 kHz
(other rates are resampled):

- spectrum: log-mel mean and std (16 bands) and the mean spectral flux;
- level: mean/std of the 100-4000 Hz energy (dB, the clip normalised to its loudest frame), active fraction;
- rhythm: the modulation spectrum of that energy envelope (share of 1-20 Hz modulation power in the
  1-2, 2-4, 4-6, 6-8, 8-12 Hz bands, total modulation depth) and the envelope's autocorrelation peak
  at 3-12 Hz (how regular the bursts are);
- breathiness: spectral flatness (mean/std of log10 over active frames) and YIN periodicity;
- voicing fraction, F0 mean/std (log2, fast YIN path) and F0 relative to the clip's median F0;
- zero-crossing rate mean/std.

The model is standardisation → Linear(n, 32) → ReLU → Linear(32, 1), trained full-batch and
class-balanced in torch, then run in numpy. Windows that are digitally silent score 0. An utterance's
probability is the maximum over its windows; `threshold` is chosen on training utterances for balanced
accuracy. `save`/`load` use `laughter.safetensors` + `laughter.json` (a few KB).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import librosa
import numpy as np
import torch
from safetensors.numpy import load_file, save_file
from scipy.signal import resample_poly
from tqdm import tqdm

from ttslens.audio.measures.signal import ABS_FLOOR, YIN_APERIODICITY, as_mono, energy_gate, frame_rms, yin_track
from ttslens.sae.errors import BadInput
from ttslens.sae.files import atomic_path, atomic_write_json

SR = 16000
HOP = 160  # 10 ms frames
N_FFT = 512
N_MELS = 16
FMIN, FMAX = 60.0, 800.0  # laughter can go well above speech F0
AM_BANDS = ((1, 2), (2, 4), (4, 6), (6, 8), (8, 12))
FEATURE_NAMES = (
    [f"logmel_mean_{i}" for i in range(N_MELS)]
    + [f"logmel_std_{i}" for i in range(N_MELS)]
    + ["flux", "energy_mean", "energy_std", "active_frac"]
    + [f"am_{lo}_{hi}hz" for lo, hi in AM_BANDS]
    + ["am_depth", "env_regularity", "flatness_mean", "flatness_std", "periodicity", "voiced_frac"]
    + ["f0_mean", "f0_std", "f0_rel", "zcr_mean", "zcr_std"]
)
WEIGHTS, CONFIG = "laughter.safetensors", "laughter.json"
PARAMS = ("mean", "std", "w1", "b1", "w2", "b2")
_MEL = librosa.filters.mel(sr=SR, n_fft=N_FFT, n_mels=N_MELS, fmin=60.0, fmax=8000.0)
_FREQS = librosa.fft_frequencies(sr=SR, n_fft=N_FFT)


class FitReport(NamedTuple):
    """Window accuracies are at p >= 0.5 (the class-balanced decision point); utterance accuracy uses
    `detect` (the max over windows against the fitted threshold). Held-out fields are nan without a split."""

    train_accuracy: float
    heldout_accuracy: float
    heldout_balanced_accuracy: float
    heldout_utterance_accuracy: float
    n_windows: int
    n_positive: int


def _to_16k(wave, sr: int) -> np.ndarray:
    x = as_mono(wave, sr)
    if sr != SR:
        g = math.gcd(SR, int(sr))
        x = resample_poly(x, SR // g, int(sr) // g).astype(np.float32)
    return x


def _window_starts(n_samples: int, window_s: float, hop_s: float) -> np.ndarray:
    """Start times (s) of the windows covering a clip; the last one may run past its end (zero padded)."""
    extra = max(0.0, n_samples / SR - window_s)
    return np.arange(1 + math.ceil(extra / hop_s - 1e-9)) * hop_s


def _sums(a: np.ndarray, starts: np.ndarray, n: int) -> np.ndarray:
    """Sums of `a[start:start + n]` along axis 0 for every start, via one cumulative sum."""
    cs = np.concatenate([np.zeros((1, *a.shape[1:])), np.cumsum(a, axis=0, dtype=np.float64)])
    return cs[starts + n] - cs[starts]


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(z, -60, 60)))


class LaughterDetector:
    """Window-level laughter classifier; see the module docstring."""

    window_s = 1.0
    hop_s = 0.25

    def __init__(self, params: dict[str, np.ndarray] | None = None, threshold: float = 0.5):
        self.params = params
        self.threshold = float(threshold)

    def _features(self, wave, sr: int) -> tuple[np.ndarray, np.ndarray]:
        """(features [n_windows, n_feat], loud [n_windows]: the window is not digitally silent)."""
        x = _to_16k(wave, sr)
        starts_s = _window_starts(len(x), self.window_s, self.hop_s)
        n, step = round(self.window_s * SR / HOP), round(self.hop_s * SR / HOP)  # window and hop in frames
        starts = np.arange(len(starts_s)) * step
        x = np.pad(x, (0, max(0, round((starts_s[-1] + self.window_s) * SR) - len(x))))

        rms = frame_rms(x, SR)
        ref = float(rms.max())
        loud = _sums((rms >= ABS_FLOOR * 100).astype(np.float64), starts, n) > 0  # anything above -60 dBFS
        scale = 0.1 / ref if ref > ABS_FLOOR else 1.0
        x = x * np.float32(scale)
        power = np.abs(librosa.stft(x, n_fft=N_FFT, hop_length=HOP, center=True)) ** 2  # [F, T]
        logmel = 10 * np.log10(_MEL @ power + 1e-8).T  # [T, n_mels]
        env = 10 * np.log10(power[(_FREQS >= 100) & (_FREQS <= 4000)].sum(axis=0) + 1e-8)
        env = np.maximum(env, env.max() - 50.0)
        p = power[(_FREQS >= 100) & (_FREQS <= 6000)] + 1e-10
        flat = np.log10(np.exp(np.log(p).mean(axis=0)) / p.mean(axis=0))
        zcr = librosa.feature.zero_crossing_rate(x, frame_length=400, hop_length=HOP, center=True)[0]
        f0, aper = yin_track(x, SR, FMIN, FMAX)
        voiced = energy_gate(rms) & (aper < YIN_APERIODICITY) & (f0 >= FMIN) & (f0 <= FMAX)
        lf0 = np.log2(np.where(voiced, f0, 200.0) / 200.0)
        t = min(len(env), len(f0), len(zcr), len(rms))
        active = env[:t] > env.max() - 25.0

        def mean(a: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
            """Per-window mean of a frame track [T] or [T, k], over the frames in `mask` if given."""
            a = a[:t].reshape(t, -1)
            m = np.ones(t) if mask is None else mask[:t].astype(np.float64)
            out = _sums(a * m[:, None], starts, n) / np.maximum(_sums(m, starts, n), 1.0)[:, None]
            return out[:, 0] if out.shape[1] == 1 else out

        def std(a: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
            return np.sqrt(np.maximum(mean(a**2, mask) - mean(a, mask) ** 2, 0.0))

        flux = np.abs(np.diff(logmel, axis=0, prepend=logmel[:1])).mean(axis=1)

        # modulation spectrum of the energy envelope, per window
        segs = np.lib.stride_tricks.sliding_window_view(env[:t], n)[starts]
        segs = segs - segs.mean(axis=1, keepdims=True)
        mod = np.abs(np.fft.rfft(segs * np.hanning(n), 4 * n)) ** 2
        mod_f = np.fft.rfftfreq(4 * n, HOP / SR)
        total = mod[:, (mod_f >= 1) & (mod_f <= 20)].sum(axis=1) + 1e-8
        am = [mod[:, (mod_f >= lo) & (mod_f < hi)].sum(axis=1) / total for lo, hi in AM_BANDS]
        acf = np.fft.irfft(np.abs(np.fft.rfft(segs, 2 * n)) ** 2, 2 * n)
        lags = slice(int(SR / HOP / 12), int(SR / HOP / 3) + 1)
        regularity = acf[:, lags].max(axis=1) / np.maximum(acf[:, 0], 1e-8)

        v = voiced[:t]
        utt_lf0 = float(np.median(lf0[:t][v])) if v.any() else 0.0
        voiced_frac = mean(v)
        f0_mean = mean(lf0, v)
        feats = np.column_stack(
            [
                mean(logmel),
                std(logmel),
                mean(flux),
                mean(env),
                std(env),
                mean(active),
                *am,
                np.log10(segs.std(axis=1) + 1e-3),
                regularity,
                mean(flat, active),
                std(flat, active),
                mean(1.0 - aper, active),
                voiced_frac,
                f0_mean,
                std(lf0, v),
                np.where(voiced_frac > 0, f0_mean - utt_lf0, 0.0),
                mean(zcr),
                std(zcr),
            ]
        )
        return feats.astype(np.float32), loud

    def features(self, wave, sr: int = 16000) -> np.ndarray:
        """Window features [n_windows, len(FEATURE_NAMES)] for windows every `hop_s` seconds."""
        return self._features(wave, sr)[0]

    def _logits(self, feats: np.ndarray) -> np.ndarray:
        if self.params is None:
            raise BadInput("this LaughterDetector is not fitted: use fit_laughter_detector or load")
        p = self.params
        h = np.maximum(((feats - p["mean"]) / p["std"]) @ p["w1"] + p["b1"], 0.0)
        return (h @ p["w2"] + p["b2"])[:, 0]

    def window_probs(self, wave, sr: int = 16000) -> np.ndarray:
        """P(laughter) per window; digitally silent windows get 0."""
        feats, loud = self._features(wave, sr)
        return np.where(loud, _sigmoid(self._logits(feats)), 0.0)

    def probability(self, wave, sr: int = 16000) -> float:
        """Utterance-level P(laughter): the maximum over windows."""
        return float(self.window_probs(wave, sr).max())

    def detect(self, wave, sr: int = 16000) -> bool:
        return self.probability(wave, sr) >= self.threshold

    def save(self, directory: str | Path) -> Path:
        """Write laughter.safetensors + laughter.json into `directory`, each atomically."""
        if self.params is None:
            raise BadInput("cannot save an unfitted LaughterDetector")
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        cfg = {
            "format": "ttslens.laughter",
            "version": 1,
            "threshold": self.threshold,
            "window_s": self.window_s,
            "hop_s": self.hop_s,
            "sample_rate": SR,
            "features": FEATURE_NAMES,
        }
        tensors = {k: np.ascontiguousarray(self.params[k], dtype=np.float32) for k in PARAMS}
        with atomic_path(directory / WEIGHTS) as tmp:
            save_file(tensors, str(tmp))
        atomic_write_json(directory / CONFIG, cfg)
        return directory

    @classmethod
    def load(cls, directory: str | Path) -> LaughterDetector:
        directory = Path(directory)
        try:
            cfg = json.loads((directory / CONFIG).read_text())
            if cfg.get("format") != "ttslens.laughter" or cfg.get("features") != FEATURE_NAMES:
                raise BadInput("written by a different version of the features")
            params = load_file(str(directory / WEIGHTS))
            n_feat, hidden = len(FEATURE_NAMES), params["w1"].shape[1]
            shapes = {"mean": (n_feat,), "std": (n_feat,), "w1": (n_feat, hidden), "b1": (hidden,)}
            shapes |= {"w2": (hidden, 1), "b2": (1,)}
            for k, shape in shapes.items():
                if params[k].shape != shape or not np.isfinite(params[k]).all():
                    raise BadInput(f"bad tensor {k!r}")
            det = cls({k: params[k] for k in PARAMS}, threshold=float(cfg["threshold"]))
            det.window_s, det.hop_s = float(cfg["window_s"]), float(cfg["hop_s"])
        except Exception as e:  # missing, truncated or foreign files
            msg = f"{type(e).__name__}: {e}".replace("\n", " ")
            raise BadInput(f"cannot load a laughter detector from {directory}: {msg}") from None
        return det


def window_labels(
    n_windows: int, spans: Sequence[tuple[float, float]], window_s: float = 1.0, hop_s: float = 0.25
) -> np.ndarray:
    """1 where >= 50% of the window lies inside laughter, 0 where none does, -1 (skip) in between."""
    starts = np.arange(n_windows) * hop_s
    inside = np.zeros(n_windows)
    for a, b in _merge(spans):
        inside += np.clip(np.minimum(starts + window_s, b) - np.maximum(starts, a), 0.0, None)
    return np.where(inside >= 0.5 * window_s, 1, np.where(inside <= 0, 0, -1))


def _merge(spans: Sequence[tuple[float, float]]) -> list[tuple[float, float]]:
    merged: list[list[float]] = []
    for a, b in sorted((float(a), float(b)) for a, b in spans if b > a):
        if merged and a <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], b)
        else:
            merged.append([a, b])
    return [(a, b) for a, b in merged]


def _balanced_accuracy(pred: np.ndarray, y: np.ndarray) -> float:
    recalls = [float((pred[y == c] == c).mean()) for c in (0, 1) if (y == c).any()]
    return float(np.mean(recalls)) if recalls else math.nan


def _best_threshold(scores: np.ndarray, y: np.ndarray) -> float:
    """The threshold with the best balanced accuracy on (scores, y); ties go to the one nearest 0.5."""
    if len(np.unique(y)) < 2:
        return 0.5
    s = np.unique(scores)
    candidates = np.concatenate([[0.5], (s[1:] + s[:-1]) / 2, [s[0] - 1e-6, s[-1] + 1e-6]])
    ba = np.array([_balanced_accuracy((scores >= c).astype(int), y) for c in candidates])
    best = candidates[ba >= ba.max() - 1e-12]
    return float(best[np.argmin(np.abs(best - 0.5))])


def _train_mlp(x: np.ndarray, y: np.ndarray, hidden: int, steps: int, seed: int) -> dict[str, np.ndarray]:
    """Standardise, then a class-balanced full-batch MLP with Adam; returns numpy parameters."""
    mean, std = x.mean(axis=0), x.std(axis=0)
    std = np.where(std > 1e-6, std, 1.0)
    xt = torch.from_numpy((x - mean) / std).float()
    yt = torch.from_numpy(y).float()
    g = torch.Generator().manual_seed(seed)
    w1 = (torch.randn(x.shape[1], hidden, generator=g) / math.sqrt(x.shape[1])).requires_grad_()
    b1 = torch.zeros(hidden, requires_grad=True)
    w2 = (torch.randn(hidden, 1, generator=g) / math.sqrt(hidden)).requires_grad_()
    b2 = torch.zeros(1, requires_grad=True)
    n_pos = float(yt.sum())
    pos_weight = torch.tensor((len(yt) - n_pos) / max(n_pos, 1.0))
    opt = torch.optim.Adam([w1, b1, w2, b2], lr=0.01, weight_decay=1e-4)
    for _ in range(steps):
        logits = (torch.relu(xt @ w1 + b1) @ w2 + b2)[:, 0]
        loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, yt, pos_weight=pos_weight)
        opt.zero_grad()
        loss.backward()
        opt.step()
    out = {"mean": mean, "std": std, "w1": w1, "b1": b1, "w2": w2, "b2": b2}
    return {k: np.asarray(v.detach().numpy() if torch.is_tensor(v) else v, dtype=np.float32) for k, v in out.items()}


def fit_laughter_detector(
    waves: Sequence[np.ndarray],
    spans: Sequence[list[tuple[float, float]]],
    sr: int = 16000,
    heldout_fraction: float = 0.2,
    seed: int = 0,
    progress: bool = True,
    hidden: int = 32,
    steps: int = 400,
) -> tuple[LaughterDetector, FitReport]:
    """Fit a detector on utterances with known laughter spans (seconds); hold out whole utterances."""
    if len(waves) != len(spans):
        raise BadInput(f"{len(waves)} waves but {len(spans)} span lists")
    if not 0 <= heldout_fraction < 1:
        raise BadInput(f"heldout_fraction must be in [0, 1), got {heldout_fraction}")
    det = LaughterDetector()
    torch_threads = torch.get_num_threads()
    feats, labels, loud = [], [], []
    for wave, sp in tqdm(zip(waves, spans, strict=True), total=len(waves), disable=not progress, desc="laughter"):
        f, l = det._features(wave, sr)
        feats.append(f)
        loud.append(l)
        labels.append(window_labels(len(f), sp, det.window_s, det.hop_s))
    has_laugh = np.array([bool(_merge(sp)) for sp in spans], dtype=int)

    order = np.random.default_rng(seed).permutation(len(waves))
    n_held = min(len(waves) - 1, round(heldout_fraction * len(waves))) if heldout_fraction > 0 else 0
    held, train = order[:n_held], order[n_held:]
    x_tr = np.concatenate([feats[i][labels[i] >= 0] for i in train])
    y_tr = np.concatenate([labels[i][labels[i] >= 0] for i in train])
    if len(np.unique(y_tr)) < 2:
        raise BadInput("training windows need both laughter and non-laughter examples")
    try:
        torch.set_num_threads(1)
        det.params = _train_mlp(x_tr, y_tr, hidden, steps, seed)
    finally:
        torch.set_num_threads(torch_threads)

    def utterance_probs(idx: np.ndarray) -> np.ndarray:
        return np.array([np.where(loud[i], _sigmoid(det._logits(feats[i])), 0.0).max() for i in idx])

    det.threshold = _best_threshold(utterance_probs(train), has_laugh[train])
    train_acc = float(((_sigmoid(det._logits(x_tr)) >= 0.5) == y_tr).mean())
    if n_held:
        x_h = np.concatenate([feats[i][labels[i] >= 0] for i in held])
        y_h = np.concatenate([labels[i][labels[i] >= 0] for i in held])
        pred = (_sigmoid(det._logits(x_h)) >= 0.5).astype(int)
        held_acc, held_ba = float((pred == y_h).mean()), _balanced_accuracy(pred, y_h)
        utt_acc = float(((utterance_probs(held) >= det.threshold) == has_laugh[held]).mean())
    else:
        held_acc = held_ba = utt_acc = math.nan
    all_y = np.concatenate(labels)
    report = FitReport(train_acc, held_acc, held_ba, utt_acc, int((all_y >= 0).sum()), int((all_y == 1).sum()))
    return det, report

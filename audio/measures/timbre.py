"""P(male) without pitch: a logistic regression on the spectral envelope with F0 left out.

Pitch-based P(male) (`signal.p_male`) reads the one thing a pitch-steering edit changes, so it cannot tell
a voice that became male from a female voice singing low. This measure reads timbre instead: MFCCs of a
coarse mel filterbank that starts above the F0 range (`FMIN_HZ`) and has bands too wide to resolve
harmonics, averaged (mean and spread) over the loud frames. It is fitted on labelled voices and checked
on voices it never saw (`fit_timbre_gender` holds whole voices out).

Files: `gender.json` (feature settings, standardisation, coefficients, the fit report).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import NamedTuple

import librosa
import numpy as np

from ttslens.audio.measures.signal import as_mono
from ttslens.sae.errors import BadInput, MissingFile
from ttslens.sae.files import atomic_write_json

FILE = "gender.json"
SR = 16000
FMIN_HZ = 300.0  # above the F0 of every voice the demo corpus has (88-262 Hz), so F0 itself is not a band
N_MELS, N_MFCC = 20, 13  # 20 bands over 300-8000 Hz: each wider than a harmonic spacing
LOUD_DB = 30.0  # frames within this of the loudest count


def timbre_features(wave, sr: int) -> np.ndarray:
    """[2 * (N_MFCC - 1)] mean and standard deviation of MFCC 1..12 over the loud frames; nan if silent."""
    x = as_mono(wave, sr)
    if sr != SR:
        x = librosa.resample(x, orig_sr=sr, target_sr=SR)
    if len(x) < 512 or not np.abs(x).max() > 0:
        return np.full(2 * (N_MFCC - 1), np.nan)
    mel = librosa.feature.melspectrogram(y=x, sr=SR, n_fft=512, hop_length=160, n_mels=N_MELS, fmin=FMIN_HZ)
    db = librosa.power_to_db(mel + 1e-10)
    mfcc = librosa.feature.mfcc(S=db, n_mfcc=N_MFCC)[1:]  # c0 (level) left out
    energy = db.max(0)
    loud = energy >= energy.max() - LOUD_DB
    if loud.sum() < 3:
        return np.full(2 * (N_MFCC - 1), np.nan)
    f = mfcc[:, loud]
    return np.concatenate([f.mean(1), f.std(1)])


class FitReport(NamedTuple):
    train_accuracy: float
    heldout_voice_accuracy: float  # on utterances of voices the fit never saw
    heldout_voices: list[str]
    n_utterances: int


class TimbreGender:
    """Standardise the timbre features, then a logistic regression; `p_male` per clip."""

    def __init__(self, mean: np.ndarray, scale: np.ndarray, coef: np.ndarray, intercept: float, report: dict):
        self.mean, self.scale, self.coef, self.intercept, self.report = mean, scale, coef, float(intercept), report

    def p_male(self, wave, sr: int) -> float:
        """P(male voice) of one clip from its timbre; nan when it is silent."""
        f = timbre_features(wave, sr)
        if not np.isfinite(f).all():
            return float("nan")
        z = float(((f - self.mean) / self.scale) @ self.coef + self.intercept)
        return float(1.0 / (1.0 + np.exp(-np.clip(z, -50, 50))))

    def save(self, directory: str | Path) -> None:
        atomic_write_json(
            Path(directory) / FILE,
            {
                "features": {"fmin_hz": FMIN_HZ, "n_mels": N_MELS, "n_mfcc": N_MFCC, "loud_db": LOUD_DB},
                "mean": self.mean.tolist(),
                "scale": self.scale.tolist(),
                "coef": self.coef.tolist(),
                "intercept": self.intercept,
                "report": self.report,
            },
        )

    @classmethod
    def load(cls, directory: str | Path) -> TimbreGender:
        path = Path(directory) / FILE
        if not path.is_file():
            raise MissingFile(f"no timbre gender classifier in {directory} ({FILE}): rebuild with `ttslens demo build`")
        try:
            d = json.loads(path.read_text())
            arrays = [np.asarray(d[k], dtype=np.float64) for k in ("mean", "scale", "coef")]
            if len({len(a) for a in arrays}) != 1 or len(arrays[0]) != 2 * (N_MFCC - 1):
                raise ValueError("array sizes disagree")
            return cls(*arrays, float(d["intercept"]), d.get("report", {}))
        except (ValueError, KeyError, TypeError) as e:
            raise BadInput(f"{path} is corrupt ({e}): rebuild with `ttslens demo build`") from None


def fit_timbre_gender(
    waves: list[np.ndarray], genders: list[str], voices: list[str], sr: int = SR, heldout_voices: int = 4, seed: int = 0
) -> tuple[TimbreGender, FitReport]:
    """Fit on the utterances of all but `heldout_voices` voices (half of each gender), report accuracy on the
    held-out voices, then refit on every voice for the saved model."""
    from sklearn.linear_model import LogisticRegression

    if not (len(waves) == len(genders) == len(voices)):
        raise BadInput("waves, genders and voices must have one entry per utterance")
    X = np.stack([timbre_features(w, sr) for w in waves])
    y = np.array([g == "male" for g in genders], dtype=int)
    ok = np.isfinite(X).all(1)
    X, y, v = X[ok], y[ok], np.asarray(voices)[ok]
    if len(np.unique(y)) < 2:
        raise BadInput("the timbre gender classifier needs utterances of both genders")
    rng = np.random.default_rng(seed)
    held: list[str] = []
    for g in (0, 1):
        names = sorted(set(v[y == g]))
        k = min(heldout_voices // 2, len(names) - 1)
        held += [str(n) for n in rng.permutation(names)[:k]]
    test = np.isin(v, held)

    def fit(rows):
        mean, scale = X[rows].mean(0), X[rows].std(0) + 1e-6
        clf = LogisticRegression(C=1.0, max_iter=2000).fit((X[rows] - mean) / scale, y[rows])
        return mean, scale, clf

    mean, scale, clf = fit(~test)
    acc = lambda rows: float((clf.predict((X[rows] - mean) / scale) == y[rows]).mean()) if rows.any() else float("nan")  # noqa: E731
    report = FitReport(acc(~test), acc(test), held, int(len(y)))
    mean, scale, clf = fit(np.ones(len(y), dtype=bool))
    model = TimbreGender(mean, scale, clf.coef_[0], float(clf.intercept_[0]), report._asdict())
    return model, report

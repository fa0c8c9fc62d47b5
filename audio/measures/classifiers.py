"""Pretrained audio classifiers from the Hugging Face hub, as evidence about generated clips.

- `LaughterClassifier`: P(laughter) from an AudioSet Audio Spectrogram Transformer (AST), the max sigmoid over
  the laughter-family labels, optionally Platt-calibrated for short clips (`fit_calibration`);
- `GenderClassifier`: P(male speaker) from a wav2vec2 gender classifier;
- `AudioClassifier`: the shared part, any `AutoModelForAudioClassification` with its feature extractor.

Weights are never fetched behind the caller's back: without `download=True` a hub id is loaded only from the
local Hugging Face cache. When it is absent, `load` warns once and returns None so callers can skip that
evidence instead of failing.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable
from pathlib import Path

import librosa
import numpy as np
import torch
from scipy.special import expit, log_softmax

from ttslens.audio.measures.signal import as_mono
from ttslens.sae.errors import BadInput

DEFAULT_AST = "MIT/ast-finetuned-audioset-10-10-0.4593"
DEFAULT_GENDER = "alefiury/wav2vec2-large-xlsr-53-gender-recognition-librispeech"
LAUGHTER_LABELS = ("Laughter", "Baby laughter", "Giggle", "Snicker", "Belly laugh", "Chuckle, chortle")

_WARNED: set[str] = set()


def _skip(model: str, what: str, download: bool, error: Exception) -> None:
    """Warn, once per process and model, that `what` evidence is skipped because the weights are missing."""
    if model in _WARNED:
        return
    _WARNED.add(model)
    problem = (
        f"could not download {model!r} ({str(error).splitlines()[0][:200]})"
        if download
        else f"{model!r} is not in the local Hugging Face cache"
    )
    warnings.warn(
        f"{problem}; {what} evidence is skipped. To get it, run `hf download {model}` on a machine with internet "
        "(then copy ~/.cache/huggingface/ here), pass a directory written by save_pretrained, or use download=True",
        stacklevel=4,
    )


def _multi_label(config, labels: list[str]) -> bool:
    """Sigmoid outputs for multi-label models. AudioSet AST checkpoints leave problem_type unset, so an
    AudioSet-style label set (both "Speech" and "Laughter") also counts as multi-label."""
    if config.problem_type:
        return config.problem_type == "multi_label_classification"
    return {"speech", "laughter"} <= {label.lower() for label in labels}


class AudioClassifier:
    """A Hugging Face audio classifier and its feature extractor; `probs` scores batches of clips."""

    def __init__(self, model: torch.nn.Module, extractor, name: str, multi_label: bool | None = None):
        self.model = model.eval()
        self.extractor = extractor
        self.name = name
        id2label = model.config.id2label
        self.labels: list[str] = [id2label[i] for i in range(len(id2label))]
        self.multi_label: bool = _multi_label(model.config, self.labels) if multi_label is None else multi_label
        self.sampling_rate: int = int(extractor.sampling_rate)
        self.device = next(model.parameters()).device
        # Clips of different lengths can share a batch when the extractor gives every clip the same shape (AST
        # pads to its window) or returns an attention mask; otherwise zero padding would change the scores.
        probe = [extractor(np.zeros(n, np.float32), sampling_rate=self.sampling_rate) for n in (1600, 3200)]
        same_shape = np.shape(probe[0]["input_values"]) == np.shape(probe[1]["input_values"])
        self._any_lengths = same_shape or bool(getattr(extractor, "return_attention_mask", False))

    @classmethod
    def load(
        cls,
        model: str,
        download: bool = False,
        device: str = "cpu",
        multi_label: bool | None = None,
        what: str = "audio classifier",
    ) -> AudioClassifier | None:
        """Hub id or local directory; without `download`, hub ids come from the local cache only. Absent weights
        give None and one warning per process and model (`what` names the evidence that is skipped)."""
        from transformers import AutoFeatureExtractor, AutoModelForAudioClassification

        model = str(model)
        local = Path(model).is_dir()
        try:
            extractor = AutoFeatureExtractor.from_pretrained(model, local_files_only=not download)
            # float32 whatever the checkpoint's dtype: the extractors give float32 inputs
            net = AutoModelForAudioClassification.from_pretrained(
                model, local_files_only=not download, dtype=torch.float32
            )
        except OSError as e:  # not in the cache, no network, not a repo id
            if local:
                raise
            _skip(model, what, download, e)
            return None
        return cls(net.to(device), extractor, model, multi_label)

    def _batches(self, xs: list[np.ndarray], batch_size: int) -> list[list[int]]:
        """Clip indices in batches, by length (less padding); equal lengths only if padding would matter."""
        batches: list[list[int]] = []
        for i in sorted(range(len(xs)), key=lambda i: len(xs[i])):
            last = batches[-1] if batches else None
            if last and len(last) < batch_size and (self._any_lengths or len(xs[last[0]]) == len(xs[i])):
                last.append(i)
            else:
                batches.append([i])
        return batches

    def logits(self, waves: list[np.ndarray], sr: int, batch_size: int = 16) -> np.ndarray:
        """[n, n_labels] raw scores, after resampling each clip to the extractor's rate."""
        xs = [as_mono(w, sr) for w in waves]
        if sr != self.sampling_rate:
            xs = [librosa.resample(x, orig_sr=sr, target_sr=self.sampling_rate) for x in xs]
        out = np.zeros((len(xs), len(self.labels)), np.float32)
        with torch.no_grad():
            for batch in self._batches(xs, batch_size):
                inputs = self.extractor(
                    [xs[i] for i in batch], sampling_rate=self.sampling_rate, padding=True, return_tensors="pt"
                )
                inputs = {k: v.to(self.device) for k, v in inputs.items()}
                out[batch] = self.model(**inputs).logits.float().cpu().numpy()
        return out

    def probs(self, waves: list[np.ndarray], sr: int, batch_size: int = 16) -> np.ndarray:
        """[n, n_labels] probabilities: sigmoid per label if `multi_label`, else softmax over labels."""
        z = self.logits(waves, sr, batch_size)
        return expit(z) if self.multi_label else np.exp(log_softmax(z, axis=1))

    def label_index(self, names: str | Iterable[str]) -> list[int]:
        """Indices of the given label names (case-insensitive) that the model has, in the order given."""
        names = [names] if isinstance(names, str) else list(names)
        index = {label.lower(): i for i, label in enumerate(self.labels)}
        found = [index[n.lower()] for n in names if n.lower() in index]
        if not found:
            shown = ", ".join(self.labels[:8]) + (", ..." if len(self.labels) > 8 else "")
            raise BadInput(f"{self.name} has none of the labels {names} (it has {shown}): use a model that does")
        return found


class LaughterClassifier:
    """P(laughter) of short clips = max sigmoid over the laughter-family labels present in the model.

    Short clips are zero-padded by the feature extractor to the model's window; because AST was trained on
    10-s clips, raw probabilities of 1-s clips are low, so an optional Platt calibration (a, b):
    p = sigmoid(a * logit(p_raw) + b) is applied when given.
    """

    def __init__(self, clf: AudioClassifier, calibration: tuple[float, float] | None = None):
        self.clf = clf
        self.calibration = calibration
        self.indices = clf.label_index(LAUGHTER_LABELS)

    @classmethod
    def load(
        cls,
        model: str = DEFAULT_AST,
        download: bool = False,
        device: str = "cpu",
        calibration: tuple[float, float] | None = None,
    ) -> LaughterClassifier | None:
        """An AudioSet classifier (hub id or directory), or None with one warning if its weights are absent."""
        clf = AudioClassifier.load(model, download, device, multi_label=True, what="laughter")
        return None if clf is None else cls(clf, calibration)

    def prob(self, waves: list[np.ndarray], sr: int, calibrated: bool = True) -> np.ndarray:
        """[n] P(laughter); `calibrated=False` gives the raw probability (to fit a calibration on)."""
        z = self.clf.logits(waves, sr)[:, self.indices].max(axis=1)  # logit of the max sigmoid
        if calibrated and self.calibration is not None:
            a, b = self.calibration
            z = a * z + b
        return expit(z)


def fit_calibration(p_raw: np.ndarray, labels: np.ndarray, steps: int = 200) -> tuple[float, float]:
    """Platt scaling: (a, b) of the logistic regression of 0/1 `labels` on logit(p_raw), by damped Newton
    steps (a tiny ridge keeps separable data finite)."""
    p = np.asarray(p_raw, np.float64).ravel()
    y = np.asarray(labels, np.float64).ravel()
    if p.shape != y.shape:
        raise BadInput(f"p_raw and labels differ in length ({p.size} vs {y.size}): pass one label per clip")
    if not np.isin(y, (0, 1)).all() or y.min() == y.max():
        raise BadInput("labels must be 0/1 with both classes present: calibration needs positives and negatives")
    eps = 1e-7
    x = np.log(np.clip(p, eps, 1 - eps)) - np.log1p(-np.clip(p, eps, 1 - eps))
    design = np.stack([x, np.ones_like(x)], axis=1)
    ridge = 1e-6 * len(y)

    def loss(w: np.ndarray) -> float:
        z = design @ w
        return float(np.sum(np.logaddexp(0, z) - y * z) + 0.5 * ridge * w @ w)

    w = np.array([1.0, 0.0])
    for _ in range(steps):
        q = expit(design @ w)
        grad = design.T @ (q - y) + ridge * w
        hess = (design * (q * (1 - q))[:, None]).T @ design + ridge * np.eye(2)
        step = np.linalg.solve(hess, grad)
        t = 1.0
        while t > 1e-4 and loss(w - t * step) > loss(w):  # damped Newton: never increase the loss
            t /= 2
        w = w - t * step
        if np.abs(t * step).max() < 1e-10:
            break
    return float(w[0]), float(w[1])


class GenderClassifier:
    """P(male speaker) from a speech gender classifier with a label named "male"."""

    def __init__(self, clf: AudioClassifier):
        self.clf = clf
        males = [i for i, label in enumerate(clf.labels) if label.lower() == "male"]
        if not males:
            raise BadInput(f"{clf.name} has no label named 'male' (it has {clf.labels}): use a gender classifier")
        self.male = males[0]

    @classmethod
    def load(cls, model: str = DEFAULT_GENDER, download: bool = False, device: str = "cpu") -> GenderClassifier | None:
        """A gender classifier (hub id or directory), or None with one warning if its weights are absent."""
        clf = AudioClassifier.load(model, download, device, multi_label=False, what="speaker gender")
        return None if clf is None else cls(clf)

    def p_male(self, waves: list[np.ndarray], sr: int) -> np.ndarray:
        """[n] softmax probability of the "male" label."""
        return np.exp(log_softmax(self.clf.logits(waves, sr), axis=1)[:, self.male])

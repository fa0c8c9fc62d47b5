"""Speech recognition with word timestamps (openai-whisper), as evidence of what a clip says and when.

Weights are never fetched behind the caller's back: a size name ("tiny", "base", ...) is looked up in
whisper's download root and downloaded only with `download=True`; a path to a whisper checkpoint is
loaded as is. When weights (or whisper itself) are missing, `ASR.load` warns once and returns None, so
callers can skip ASR evidence instead of failing.
"""

from __future__ import annotations

import math
import os
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import librosa
import numpy as np
import torch

from ttslens.audio.measures.signal import as_mono
from ttslens.sae.errors import BadInput

if TYPE_CHECKING:
    from whisper.model import Whisper

SR = 16000  # whisper's sample rate
HOW_TO_GET = (
    "run `python -c \"import whisper; whisper.load_model('tiny')\"` on a machine with internet "
    "(then copy ~/.cache/whisper/ here), or pass a path to a whisper .pt checkpoint"
)

_MODELS: dict[tuple[str, str], ASR] = {}  # in-process cache, keyed by (model, device)
_WARNED: set[str] = set()


class Word(NamedTuple):
    """One recognised word; times in seconds from the clip start."""

    word: str
    start: float
    end: float
    prob: float


def download_root() -> Path:
    """Where whisper keeps (and looks for) named checkpoints: $XDG_CACHE_HOME/whisper or ~/.cache/whisper."""
    return Path(os.getenv("XDG_CACHE_HOME", os.path.join(os.path.expanduser("~"), ".cache"))) / "whisper"


def _skip(key: str, problem: str) -> None:
    """Warn, once per process for `key`, that ASR evidence is skipped and why."""
    if key not in _WARNED:
        _WARNED.add(key)
        warnings.warn(f"{problem}; ASR evidence is skipped. To get whisper weights, {HOW_TO_GET}", stacklevel=4)


def _start_numba_threads() -> None:
    """Start numba's thread pool now, keeping torch's thread count.

    whisper's word alignment (DTW) is numba code compiled with parallel=True. Starting numba's OpenMP pool
    resets the OpenMP thread count that torch shares (1 -> all cores), which made decoding 20x slower on a
    busy machine when it happened mid-transcription.
    """
    try:
        import numba
    except ImportError:
        return
    threads = torch.get_num_threads()
    numba.get_num_threads()  # launches the pool if it is not running yet
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)


def _load_whisper(model: str, download: bool, device: str) -> Whisper | None:
    """The whisper model, or None (with one warning) when whisper or the weights are missing."""
    try:
        import whisper
    except ImportError:
        _skip("<whisper>", "openai-whisper is not installed (pip install openai-whisper)")
        return None
    _start_numba_threads()
    if model in whisper._MODELS:
        root = download_root()
        target = root / os.path.basename(whisper._MODELS[model])
        if target.is_file():  # by path: no checksum pass, so no re-download attempt
            net = whisper.load_model(str(target), device=device)
            net.set_alignment_heads(whisper._ALIGNMENT_HEADS[model])
            return net
        if download:
            try:
                return whisper.load_model(model, device=device, download_root=str(root))
            except OSError as e:  # no network, disk full, ...
                _skip(model, f"could not download whisper weights {model!r} ({e})")
                return None
        _skip(model, f"whisper weights {model!r} are not in {root}")
        return None
    if Path(model).is_file():
        return whisper.load_model(model, device=device)
    if Path(model).suffix == ".pt" or os.sep in model:
        _skip(model, f"whisper checkpoint {model} does not exist")
        return None
    raise BadInput(f"unknown whisper model {model!r}: use one of {', '.join(whisper._MODELS)} or a .pt path")


class ASR:
    """A loaded whisper model; `transcribe` gives words with start/end times and probabilities."""

    def __init__(self, model: Whisper, name: str):
        self.model = model
        self.name = name

    @classmethod
    def load(cls, model: str = "tiny", download: bool = False, device: str = "cpu") -> ASR | None:
        """Whisper by size name or .pt path (see the module docstring); None, with one warning, if absent."""
        model = str(model)
        is_file = Path(model).is_file()
        key = (str(Path(model).resolve()) if is_file else model, str(device))
        if key not in _MODELS:
            net = _load_whisper(model, download, device)
            if net is None:
                return None
            _MODELS[key] = cls(net.eval(), Path(model).stem if is_file else model)
        return _MODELS[key]

    def transcribe(self, wave: np.ndarray, sr: int, max_tokens: int | None = None) -> list[Word]:
        """Words of one clip (greedy decoding in English, deterministic; `max_tokens` caps each decoded
        30-s window, e.g. a few dozen for 1-s clips)."""
        import whisper

        x = as_mono(wave, sr)
        if sr != SR:
            x = librosa.resample(x, orig_sr=sr, target_sr=SR)
        x = np.ascontiguousarray(x, dtype=np.float32)
        result: dict[str, Any] = whisper.transcribe(
            self.model,
            x,
            word_timestamps=True,
            temperature=0.0,
            condition_on_previous_text=False,
            fp16=False,
            language="en",
            verbose=None,
            **({"sample_len": max_tokens} if max_tokens else {}),
        )
        duration = len(x) / SR
        words = []
        for segment in result["segments"]:
            for w in segment.get("words", []):
                text, start, end = w["word"].strip(), float(w["start"]), float(w["end"])
                if text and math.isfinite(start) and math.isfinite(end):
                    start = min(max(start, 0.0), duration)  # whisper can overshoot the clip by a frame or so
                    words.append(Word(text, start, min(max(end, start), duration), float(w["probability"])))
        return words

    def transcribe_batch(self, waves: list[np.ndarray], sr: int, max_tokens: int | None = None) -> list[list[Word]]:
        """`transcribe` of each clip (whisper's own decoding is one clip at a time)."""
        return [self.transcribe(w, sr, max_tokens) for w in waves]


def words_at(words: list[Word], t: float, tol: float = 0.25) -> list[Word]:
    """Words whose span covers time t; else the nearest word within tol seconds; else []."""
    covering = [w for w in words if w.start <= t <= w.end]
    if covering or not words:
        return covering
    gap = [max(w.start - t, t - w.end) for w in words]
    i = int(np.argmin(gap))
    return [words[i]] if gap[i] <= tol else []

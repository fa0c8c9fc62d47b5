"""The demo backbone's speech codec: 16 kHz audio <-> `C` discrete codes per 40 ms token frame (25 Hz).

Each token frame holds `mel_per_frame` log-mel frames (20 ms apart at the defaults, as CosyVoice3 decodes
each 25 Hz token into two mel frames). Each mel frame (`n_mels` bands, dB) is coded by a gain-shape
residual vector quantiser: stage 0 is the frame's mean level (evenly spaced levels), then k-means codebooks
of `codebook_size` centroids, each coding what the earlier stages left over.
A token frame is therefore `[T, C]` codes, C = stages × mel_per_frame, ordered stage-major (column
`k * mel_per_frame + m` is stage `stage_order[k]` of mel frame m; the first shape stage leads, then the
gain, then the finer stages): the coarse codes of the whole frame come first, in the order the demo LM
predicts them.

The decoder sums the centroids back into a log-mel spectrogram, smooths it over 3 mel frames (sampled codes
jitter from frame to frame), maps it to a linear magnitude spectrum with
the mel filterbank's pseudo-inverse and runs Griffin-Lim (a fixed phase seed, so decoding is deterministic).
No pitch tracker: pitch lives in the harmonic pattern of the mel bands, as in real mel-based codecs.
Output is float32 with exactly T * hop samples.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import librosa
import numpy as np
import torch
from safetensors.numpy import load_file, save_file
from scipy.ndimage import convolve1d
from tqdm import tqdm

from ttslens.sae.errors import BadInput
from ttslens.sae.files import atomic_path, atomic_write_json

CONFIG_FILE, TENSORS_FILE = "codec.json", "codec.safetensors"
FORMAT_VERSION = 2


@dataclass
class CodecConfig:
    """Shape of the codec: frame rates, mel analysis, residual VQ and the Griffin-Lim decoder."""

    sample_rate: int = 16000
    """Audio sample rate in Hz (input to encode, output of decode)."""
    frame_rate: int = 25
    """Token frames per second; hop = sample_rate / frame_rate samples per token (640 at the defaults)."""
    mel_per_frame: int = 2
    """Log-mel frames per token frame (20 ms apart at the defaults)."""
    n_mels: int = 80
    """Mel bands (0 Hz .. Nyquist)."""
    n_fft: int = 1024
    """FFT size (and window length) of the analysis and of Griffin-Lim."""
    stages: int = 5
    """Residual VQ stages per mel frame (the gain stage included); codes per token frame = stages * mel_per_frame."""
    gain: bool = True
    """Stage 0 codes the frame's mean level (gain-shape VQ): `codebook_size` levels, evenly spaced in dB over
    [floor_db, max_db]; the k-means stages then code the spectral shape."""
    max_db: float = 60.0
    """Top of the gain stage's range (dB of mel power)."""
    coarse_first: bool = True
    """Token columns put the first k-means (spectral shape) stage before the gain stage, so the code the LM
    head predicts (column 0) is the one that carries the phonetic content, not the frame's loudness."""
    codebook_size: int = 512
    """Centroids per stage (the id range of every codebook)."""
    floor_db: float = -90.0
    """Power floor of the log-mel analysis in dB: frames at the floor decode to silence."""
    griffin_lim_iters: int = 32
    """Griffin-Lim iterations of the decoder."""
    smooth_frames: int = 3
    """The decoder smooths the log-mel over this many mel frames (a triangular window; 1 = off) before
    Griffin-Lim: sampled codes jitter from frame to frame, which Whisper hears as babble (generated WER
    0.99 → 0.64 on the DEV sentences it was chosen on, 0.70 → 0.69 on the reported ones; round trip
    unchanged; benchmarks/RESULTS.md, issue 12 step 6)."""
    kmeans_iters: int = 25
    """Lloyd iterations of each stage's k-means."""
    seed: int = 0
    """Seed of the k-means (frame sampling, initial centroids) and of the decoder's initial phase."""

    def __post_init__(self) -> None:
        if self.sample_rate % (self.frame_rate * self.mel_per_frame):
            raise BadInput(
                "sample_rate / (frame_rate * mel_per_frame) must be a whole number of samples "
                f"(got {self.sample_rate} / ({self.frame_rate} * {self.mel_per_frame}))"
            )
        if min(self.stages, self.codebook_size, self.mel_per_frame) < 1 or self.n_mels < 2:
            raise BadInput("stages, codebook_size and mel_per_frame must be >= 1 and n_mels >= 2")
        if self.smooth_frames < 1 or self.smooth_frames % 2 == 0:
            raise BadInput(f"smooth_frames must be an odd number >= 1 (1 = off), got {self.smooth_frames}")

    @property
    def hop(self) -> int:
        """Samples per token frame."""
        return self.sample_rate // self.frame_rate

    @property
    def mel_hop(self) -> int:
        """Samples per mel frame."""
        return self.hop // self.mel_per_frame

    @property
    def n_codebooks(self) -> int:
        """Codes per token frame (C)."""
        return self.stages * self.mel_per_frame

    @property
    def stage_order(self) -> list[int]:
        """The stage behind each group of `mel_per_frame` token columns."""
        order = list(range(self.stages))
        if self.gain and self.coarse_first and self.stages > 1:
            order[0], order[1] = 1, 0
        return order


class Codec:
    """Residual-VQ log-mel codec; `encode` wave → tokens [T, C], `decode` tokens [T, C] → wave."""

    def __init__(self, config: CodecConfig, centroids: np.ndarray) -> None:
        c = config
        if centroids.shape != (c.stages, c.codebook_size, c.n_mels):
            raise BadInput(f"centroids of shape {centroids.shape} do not fit the codec config")
        self.config = config
        self.centroids = centroids.astype(np.float32)  # [stages, K, n_mels] dB
        melbank = librosa.filters.mel(sr=c.sample_rate, n_fft=c.n_fft, n_mels=c.n_mels)
        self._melbank = melbank.astype(np.float32)
        self._inverse = np.linalg.pinv(melbank).astype(np.float32)  # [bins, mels]

    @property
    def hop(self) -> int:
        return self.config.hop

    @property
    def n_codebooks(self) -> int:
        return self.config.n_codebooks

    @property
    def codebook_size(self) -> int:
        return self.config.codebook_size

    # ---- analysis

    def n_frames(self, n_samples: int) -> int:
        """Token frames of a wave of `n_samples` samples (the last one zero-padded)."""
        return -(-n_samples // self.hop)

    def log_mel(self, wave: np.ndarray) -> np.ndarray:
        """[T * mel_per_frame, n_mels] dB log-mel of a 16 kHz mono wave; mel frame i is centred on i * mel_hop."""
        c = self.config
        wave = np.asarray(wave, dtype=np.float32)
        if wave.ndim != 1:
            raise BadInput(f"the codec encodes mono audio: got an array of shape {wave.shape}")
        n = self.n_frames(len(wave)) * c.mel_per_frame
        if n == 0:
            return np.zeros((0, c.n_mels), np.float32)
        x = np.pad(wave, (0, max(n * c.mel_hop, c.n_fft) - len(wave)))  # at least one FFT window long
        spec = np.abs(librosa.stft(x, n_fft=c.n_fft, hop_length=c.mel_hop, center=True)) ** 2
        mel = self._melbank @ spec[:, :n]
        return (10 * np.log10(np.maximum(mel, 10 ** (c.floor_db / 10)))).T.astype(np.float32)

    def quantize(self, mel_ND: np.ndarray) -> np.ndarray:
        """Residual-VQ codes [N, stages] of log-mel frames [N, n_mels]."""
        r = torch.as_tensor(mel_ND, dtype=torch.float32).clone()
        codes = torch.zeros((len(r), self.config.stages), dtype=torch.long)
        for s, book in enumerate(torch.from_numpy(self.centroids)):
            if len(r):
                codes[:, s] = _nearest(r, book)
                r -= book[codes[:, s]]
        return codes.numpy()

    def encode(self, wave: np.ndarray) -> np.ndarray:
        """Tokens [T, C] (int64) of a 16 kHz mono float wave; T = ceil(len / hop)."""
        c = self.config
        codes = self.quantize(self.log_mel(wave))[:, c.stage_order]  # [T * M, stages], in column order
        T = len(codes) // c.mel_per_frame
        # [T, M, S] → [T, S, M] → [T, C] stage-major
        return codes.reshape(T, c.mel_per_frame, c.stages).transpose(0, 2, 1).reshape(T, c.n_codebooks)

    # ---- synthesis

    def check_tokens(self, tokens) -> np.ndarray:
        """Tokens as an int64 [T, C] array; ValueError (one line) for anything else."""
        t = np.asarray(tokens.detach().cpu() if hasattr(tokens, "detach") else tokens)
        C = self.n_codebooks
        if t.size == 0:
            return np.zeros((0, C), np.int64)
        if t.dtype.kind not in "iu":
            raise BadInput(f"codec tokens must be integers, got {t.dtype}")
        if t.ndim != 2 or t.shape[1] != C:
            raise BadInput(f"codec tokens must be [T, {C}] (got shape {t.shape})")
        if t.min() < 0 or t.max() >= self.codebook_size:
            raise BadInput(f"codec tokens must lie in 0..{self.codebook_size - 1} (got {t.min()}..{t.max()})")
        return t.astype(np.int64)

    def mel_of(self, tokens) -> np.ndarray:
        """[T * mel_per_frame, n_mels] dB log-mel that `tokens` stand for (the sum of their centroids)."""
        c = self.config
        t = self.check_tokens(tokens)
        codes = np.empty((len(t) * c.mel_per_frame, c.stages), np.int64)
        codes[:, c.stage_order] = t.reshape(len(t), c.stages, c.mel_per_frame).transpose(0, 2, 1).reshape(-1, c.stages)
        return (
            sum(self.centroids[s][codes[:, s]] for s in range(c.stages)).astype(np.float32)
            if len(t)
            else (np.zeros((0, c.n_mels), np.float32))
        )

    def decode(self, tokens) -> np.ndarray:
        """Waveform (float32, exactly T * hop samples) of tokens [T, C]."""
        c = self.config
        mel = self.mel_of(tokens)
        if len(mel) == 0:
            return np.zeros(0, np.float32)
        if c.smooth_frames > 1:
            half = c.smooth_frames // 2
            w = np.concatenate([np.arange(1, half + 2), np.arange(half, 0, -1)]).astype(np.float32)
            mel = convolve1d(mel, w / w.sum(), axis=0, mode="nearest")
        power = 10.0 ** (mel.T / 10) - 10 ** (c.floor_db / 10)  # the floor decodes to silence
        mag = np.sqrt(np.maximum(self._inverse @ np.maximum(power, 0), 0))
        # one extra frame so the centred STFT covers the last samples
        mag = np.concatenate([mag, mag[:, -1:]], axis=1)
        n = len(mel) * c.mel_hop
        y = librosa.griffinlim(
            mag, n_iter=c.griffin_lim_iters, hop_length=c.mel_hop, n_fft=c.n_fft, length=n, random_state=c.seed
        )
        return y.astype(np.float32)

    # ---- files

    def save(self, directory: str | Path) -> None:
        """Write codec.safetensors + codec.json into `directory`, each atomically."""
        directory = Path(directory)
        with atomic_path(directory / TENSORS_FILE) as tmp:
            save_file({"centroids": np.ascontiguousarray(self.centroids)}, str(tmp))
        atomic_write_json(directory / CONFIG_FILE, {"format_version": FORMAT_VERSION, "config": asdict(self.config)})

    @classmethod
    def load(cls, directory: str | Path) -> Codec:
        """Read a codec directory; ValueError (one line) when it is missing, corrupt or of another format."""
        directory = Path(directory)
        try:
            meta = json.loads((directory / CONFIG_FILE).read_text())
            if meta.get("format_version") != FORMAT_VERSION:
                raise BadInput(f"format_version {meta.get('format_version')!r}, expected {FORMAT_VERSION}")
            known = {f.name for f in fields(CodecConfig)}
            config = CodecConfig(**{k: v for k, v in meta["config"].items() if k in known})
            return cls(config, load_file(str(directory / TENSORS_FILE))["centroids"])
        except Exception as e:
            reason = " ".join(str(e).split()) or type(e).__name__
            raise BadInput(
                f"codec at {directory} is missing or corrupt ({reason}); re-run `ttslens demo build`"
            ) from None


def _nearest(x_ND: torch.Tensor, book_KD: torch.Tensor, chunk: int = 8192) -> torch.Tensor:
    """Index of the nearest centroid of each row (squared Euclidean), in chunks to bound memory."""
    sq = (book_KD**2).sum(1)
    out = [(sq - 2 * x @ book_KD.T).argmin(1) for x in x_ND.split(chunk)]
    return torch.cat(out) if out else torch.zeros(0, dtype=torch.long)


def _kmeans(x_ND: torch.Tensor, k: int, iters: int, gen: torch.Generator) -> torch.Tensor:
    """Lloyd's k-means from k distinct random rows; an emptied cluster is re-seeded at a random row."""
    if len(x_ND) < k:  # tiny corpora: repeat rows so every centroid has a starting point
        x_ND = x_ND[torch.arange(k) % max(len(x_ND), 1)]
    c = x_ND[torch.randperm(len(x_ND), generator=gen)[:k]].clone()
    for _ in range(iters):
        a = _nearest(x_ND, c)
        n = torch.bincount(a, minlength=k).float()
        s = torch.zeros_like(c).index_add_(0, a, x_ND)
        fresh = x_ND[torch.randint(len(x_ND), (k,), generator=gen)]
        c = torch.where((n == 0)[:, None], fresh, s / n.clamp_min(1)[:, None])
    return c


def fit_codec(
    waves: Iterable[np.ndarray],
    config: CodecConfig = CodecConfig(),  # noqa: B008 (never mutated)
    max_frames: int = 150_000,
    progress: bool = True,
) -> Codec:
    """Fit the residual-VQ codebooks on the log-mel frames of `waves` (16 kHz mono float arrays), stage by
    stage on what the earlier stages left; at most `max_frames` frames (a uniform random subset) fit them."""
    blank = Codec(config, np.zeros((config.stages, config.codebook_size, config.n_mels), np.float32))
    mels = [blank.log_mel(w) for w in tqdm(waves, desc="codec: analysing", unit="utt", disable=not progress)]
    frames = np.concatenate(mels) if mels else np.zeros((0, config.n_mels), np.float32)
    if len(frames) == 0:
        raise BadInput("fit_codec needs at least one non-empty waveform")
    gen = torch.Generator().manual_seed(config.seed)
    x = torch.from_numpy(frames)
    if len(x) > max_frames:
        x = x[torch.randperm(len(x), generator=gen)[:max_frames]]
    books = []
    for s in tqdm(range(config.stages), desc="codec: k-means", unit="stage", disable=not progress):
        if s == 0 and config.gain:  # constant vectors: the nearest one is the nearest level of the frame's mean
            levels = torch.linspace(config.floor_db, config.max_db, config.codebook_size)
            book = levels[:, None].expand(-1, config.n_mels).contiguous()
        else:
            book = _kmeans(x, config.codebook_size, config.kmeans_iters, gen)
        x = x - book[_nearest(x, book)]
        books.append(book)
    return Codec(config, torch.stack(books).numpy())

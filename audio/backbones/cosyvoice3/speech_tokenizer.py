"""CosyVoice3's speech tokenizer: 16 kHz audio → 25 Hz speech tokens through the official
`speech_tokenizer_v3.onnx` (onnxruntime), fed Whisper's 128-band log-mel spectrogram as the official frontend
does (≤ 30 s of audio)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ttslens.audio.backbones.base import mono_at
from ttslens.sae.errors import BadInput, EnvironmentProblem, MissingFile

ONNX_FILE = "speech_tokenizer_v3.onnx"
SAMPLE_RATE, N_FFT, HOP, N_MELS = 16000, 400, 160, 128
MAX_SECONDS = 30.0


def whisper_log_mel(wave_16k: np.ndarray, n_mels: int = N_MELS) -> np.ndarray:
    """[n_mels, frames] float32, as Whisper computes it: |STFT|^2 (Hann 400, hop 160, centred, last frame
    dropped) through librosa's Slaney mel filters, log10 floored at 1e-10 and at max - 8, then (x + 4) / 4."""
    import librosa

    x = torch.as_tensor(np.asarray(wave_16k, dtype=np.float32))
    spec = torch.stft(x, N_FFT, HOP, window=torch.hann_window(N_FFT), return_complex=True)
    power = spec[..., :-1].abs() ** 2
    filters = torch.from_numpy(librosa.filters.mel(sr=SAMPLE_RATE, n_fft=N_FFT, n_mels=n_mels)).float()
    log = (filters @ power).clamp_min(1e-10).log10()
    log = torch.maximum(log, log.max() - 8.0)
    return ((log + 4.0) / 4.0).numpy().astype(np.float32)


class SpeechTokenizer:
    def __init__(self, session) -> None:
        self.session = session
        self.inputs = [i.name for i in session.get_inputs()]

    @classmethod
    def load(cls, root: Path) -> SpeechTokenizer:
        path = Path(root) / ONNX_FILE
        if not path.exists():
            raise MissingFile(f"{path} not found: audio → CosyVoice3 tokens needs the model directory's {ONNX_FILE}")
        try:
            import onnxruntime as ort
        except ImportError:
            raise EnvironmentProblem(
                "encoding audio for CosyVoice3 needs onnxruntime: pip install 'ttslens[cosyvoice3]'"
            ) from None
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.intra_op_num_threads = 1
        return cls(ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"]))

    def encode(self, wave: np.ndarray, sr: int) -> torch.Tensor:
        """Speech tokens [T] (25 Hz) of a waveform."""
        x = mono_at(wave, sr, SAMPLE_RATE, "CosyVoice3's speech tokenizer")
        if len(x) / SAMPLE_RATE > MAX_SECONDS:
            raise BadInput(f"CosyVoice3's speech tokenizer reads at most {MAX_SECONDS:.0f} s of audio: cut the clip")
        if len(x) < N_FFT:
            raise BadInput("the audio is too short to tokenise (under 25 ms)")
        feats = whisper_log_mel(x)[None]
        out = self.session.run(None, {self.inputs[0]: feats, self.inputs[1]: np.array([feats.shape[2]], np.int32)})
        return torch.as_tensor(np.asarray(out[0]).reshape(-1), dtype=torch.long)

"""CosyVoice3 speech tokens → 24 kHz audio through the official flow (DiT flow matching) + HiFT vocoder.

These need the official CosyVoice source (not on PyPI): clone FunAudioLLM/CosyVoice with its submodules
and point COSYVOICE_SRC at it (or install it so `import cosyvoice` works), plus its requirements
(hyperpyyaml, omegaconf, x-transformers, diffusers, conformer, onnxruntime, torchaudio matching your torch).
The flow speaks in the voice of a prompt: the last audio given to `encode_audio` (a --prompt-wav), else the
source's own `asset/zero_shot_prompt.wav`.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

from ttslens.sae.errors import EnvironmentProblem, MissingFile

SOURCE_ENV = "COSYVOICE_SRC"
DEFAULT_VOICE = "asset/zero_shot_prompt.wav"
HOW = (
    f"decoding CosyVoice3 speech needs the official CosyVoice source: git clone --recursive "
    f"https://github.com/FunAudioLLM/CosyVoice, pip install its requirements, and set {SOURCE_ENV}=<that clone>"
)


def import_source() -> Path | None:
    """Make `cosyvoice` (and its Matcha-TTS submodule) importable; the source root, or None if installed."""
    src = os.environ.get(SOURCE_ENV)
    if src:
        root = Path(src).expanduser()
        if not (root / "cosyvoice").is_dir():
            raise MissingFile(f"{SOURCE_ENV}={src} holds no cosyvoice/ package: {HOW}")
        for p in (root, root / "third_party" / "Matcha-TTS"):
            if str(p) not in sys.path:
                sys.path.insert(0, str(p))
    try:
        import cosyvoice  # noqa: F401
        from hyperpyyaml import load_hyperpyyaml  # noqa: F401
    except ImportError as e:
        raise EnvironmentProblem(f"{HOW} (import failed: {e})") from None
    return Path(src).expanduser() if src else None


class OfficialDecoder:
    def __init__(self, flow, hift, frontend, root: Path, source: Path | None, device: torch.device) -> None:
        self.flow, self.hift, self.frontend, self.root, self.device = flow, hift, frontend, root, device
        self.voice = None  # (prompt tokens [1, T], prompt mel [1, F, 80], speaker embedding [1, 192])
        default = source / DEFAULT_VOICE if source else None
        if default is not None and default.exists():
            self.voice = self._voice_from_file(default)

    @classmethod
    def load(cls, root: Path, device: torch.device) -> OfficialDecoder:
        source = import_source()
        from cosyvoice.cli.frontend import CosyVoiceFrontEnd
        from hyperpyyaml import load_hyperpyyaml

        yaml = root / "cosyvoice3.yaml"
        need = [n for n in ("cosyvoice3.yaml", "flow.pt", "hift.pt", "campplus.onnx", "speech_tokenizer_v3.onnx")]
        missing = [n for n in need if not (root / n).exists()]
        if missing:
            raise MissingFile(f"CosyVoice3 model directory {root} lacks {', '.join(missing)} (needed to decode audio)")
        with open(yaml) as f:
            configs = load_hyperpyyaml(f, overrides={"qwen_pretrain_path": str(root / "CosyVoice-BlankEN")})
        flow, hift = configs["flow"], configs["hift"]
        flow.load_state_dict(torch.load(str(root / "flow.pt"), map_location="cpu", weights_only=True), strict=True)
        hift_state = torch.load(str(root / "hift.pt"), map_location="cpu", weights_only=True)
        hift.load_state_dict({k.replace("generator.", ""): v for k, v in hift_state.items()}, strict=True)
        frontend = CosyVoiceFrontEnd(
            configs["get_tokenizer"],
            configs["feat_extractor"],
            str(root / "campplus.onnx"),
            str(root / "speech_tokenizer_v3.onnx"),
            str(root / "spk2info.pt"),
            configs["allowed_special"],
        )
        del configs
        return cls(flow.to(device).eval(), hift.to(device).eval(), frontend, root, source, device)

    def _voice_from_file(self, path: Path):
        fe = self.frontend
        feat, _ = fe._extract_speech_feat(str(path))
        tokens, _ = fe._extract_speech_token(str(path))
        n = min(feat.shape[1] // 2, tokens.shape[1])  # the official frontend keeps mel = 2 x tokens
        return tokens[:, :n], feat[:, : 2 * n], fe._extract_spk_embedding(str(path))

    def set_voice(self, wave: np.ndarray, sr: int) -> None:
        """Speak in the voice of this audio from now on (the flow's prompt)."""
        import soundfile as sf

        with tempfile.NamedTemporaryFile(suffix=".wav") as f:
            sf.write(f.name, np.asarray(wave, dtype=np.float32), sr)
            self.voice = self._voice_from_file(Path(f.name))

    @torch.no_grad()
    def decode(self, tokens_T: torch.Tensor) -> np.ndarray:
        dev = self.device
        if self.voice is None:
            raise MissingFile(f"no voice for the CosyVoice3 flow: give --prompt-wav FILE (or set {SOURCE_ENV})")
        p_tok, p_feat, emb = (v.to(dev) for v in self.voice)
        token = tokens_T.to(dev, torch.int32)[None]
        mel, _ = self.flow.inference(
            token=token,
            token_len=torch.tensor([token.shape[1]], dtype=torch.int32, device=dev),
            prompt_token=p_tok,
            prompt_token_len=torch.tensor([p_tok.shape[1]], dtype=torch.int32, device=dev),
            prompt_feat=p_feat,
            prompt_feat_len=torch.tensor([p_feat.shape[1]], dtype=torch.int32, device=dev),
            embedding=emb,
            streaming=False,
            finalize=True,
        )
        speech, _ = self.hift.inference(speech_feat=mel, finalize=True)
        return speech.float().cpu().numpy().reshape(-1)

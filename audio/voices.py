"""Voice prompts, as CosyVoice3 takes them: the text and speech tokens of another utterance by the voice.

A backbone continues the prompt's speech after the prompt's text, so the new text comes out in the prompt's
voice. A prompt comes from a named voice (`backbone.voices()`: the demo ships one per corpus voice) or from a
WAV file (tokenised by `backbone.encode_audio`; its text given, or transcribed by the offline Whisper).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from ttslens.sae.errors import BadInput, EnvironmentProblem, MissingFile
from ttslens.sae.notes import note

MAX_PROMPT_S = 10.0  # longer prompts crowd the context (and CosyVoice3 keeps them short too)
MIN_PROMPT_S = 0.5
SILENT_PEAK = 1e-3  # -60 dBFS


class VoicePrompt(NamedTuple):
    """`backbone.generate(prompt=...)` takes (text, tokens [T, C]); `name` says where it came from."""

    text: str
    tokens: torch.Tensor
    name: str

    def as_prompt(self) -> tuple[str, torch.Tensor]:
        return self.text, self.tokens


def voice_names(bb) -> list[str]:
    return sorted(bb.voices())


def named_voice(bb, name: str) -> VoicePrompt:
    voices = bb.voices()
    if name not in voices:
        known = ", ".join(sorted(voices)) or "none (use --prompt-wav FILE)"
        raise BadInput(f"unknown voice {name!r} for backbone {bb.name}: use one of {known}")
    return voices[name]


def read_prompt_wav(path: str | Path, sample_rate: int) -> np.ndarray:
    """A prompt WAV as mono float32 at `sample_rate` (resampled, with a note); refuses silent, too short and
    too long audio with the fix."""
    import soundfile as sf

    path = Path(path)
    if not path.is_file():
        raise MissingFile(f"prompt WAV {path} not found")
    try:
        wave, sr = sf.read(str(path), dtype="float32", always_2d=True)
    except Exception as e:  # soundfile raises its own error types for unreadable files
        reason = " ".join(str(e).split())
        raise BadInput(f"cannot read the prompt WAV {path} ({reason}): give a WAV or FLAC file") from None
    wave = wave.mean(axis=1)
    seconds = len(wave) / sr
    if seconds > MAX_PROMPT_S:
        raise BadInput(f"the prompt WAV {path} is {seconds:.1f} s long: trim it to at most {MAX_PROMPT_S:g} s")
    if seconds < MIN_PROMPT_S:
        raise BadInput(f"the prompt WAV {path} is {seconds:.2f} s long: give at least {MIN_PROMPT_S:g} s of speech")
    if not np.isfinite(wave).all() or np.abs(wave).max() < SILENT_PEAK:
        raise BadInput(f"the prompt WAV {path} is silent: give a recording of the voice speaking")
    if sr != sample_rate:
        import librosa

        note(f"the prompt WAV was resampled from {sr} Hz to {sample_rate} Hz")
        wave = librosa.resample(wave, orig_sr=sr, target_sr=sample_rate)
    return wave.astype(np.float32)


def prompt_from_wav(bb, path: str | Path, text: str = "", asr: str = "tiny.en") -> VoicePrompt:
    """A voice prompt from a WAV file: its speech tokens, and its text (given, or heard by Whisper)."""
    wave = read_prompt_wav(path, bb.sample_rate)
    if not text.strip():
        from ttslens.audio.measures.asr import ASR

        if not asr:
            raise BadInput("a prompt WAV needs its text: pass --prompt-text 'what the recording says'")
        try:
            text = ASR.require(asr).text(wave, bb.sample_rate)
        except (BadInput, EnvironmentProblem, MissingFile) as e:
            raise BadInput(f"cannot transcribe the prompt WAV ({e}): pass --prompt-text instead") from None
        if not text.strip():
            raise BadInput("Whisper heard no words in the prompt WAV: pass --prompt-text")
        note(f"prompt text (heard by Whisper {asr}): {text!r}")
    return VoicePrompt(text, bb.encode_audio(wave, bb.sample_rate), str(path))


def resolve_prompt(bb, voice: str = "", prompt_wav: str = "", prompt_text: str = "", asr: str = "tiny.en"):
    """The prompt a request names: a named voice, a WAV file, or None."""
    if voice and prompt_wav:
        raise BadInput("give --voice NAME or --prompt-wav FILE, not both")
    if voice:
        return named_voice(bb, voice)
    if prompt_wav:
        return prompt_from_wav(bb, prompt_wav, prompt_text, asr)
    if prompt_text:
        raise BadInput("--prompt-text goes with --prompt-wav FILE (the recording it transcribes)")
    return None


@dataclass
class VoicesConfig:
    """List a backbone's named voices (for `synthesize --voice NAME`): name, prompt length, prompt text."""

    backbone: str = "demo"
    """Backbone name or directory."""
    model_dir: str = ""
    """The backbone's model directory or hub id (e.g. the Fun-CosyVoice3-0.5B-2512 files for cosyvoice3); the
    same as --backbone NAME:DIR."""


def run_voices(cfg: VoicesConfig) -> None:
    from ttslens.audio.backbones.registry import backbone_spec, load_backbone

    bb = load_backbone(backbone_spec(cfg.backbone, cfg.model_dir))
    rows = [
        {"voice": name, "seconds": round(len(v.tokens) / bb.token_rate, 2), "text": v.text}
        for name, v in bb.voices().items()
    ]
    if not rows:
        print(f"backbone {bb.name} has no named voices: give a recording with --prompt-wav FILE")
    for r in rows:
        print(f"{r['voice']:<10} {r['seconds']:5.2f} s  {r['text']}")

"""What the `ttslens synthesize` and `ttslens demo build` commands run (the CLI and app call these)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from sae.files import atomic_path


@dataclass
class SynthesizeConfig:
    """Speak a text with a TTS backbone: sample speech tokens, decode them, write a WAV file, and
    report what the audio measures hear (duration, median F0, P(male), laughter)."""

    text: str = field(default="", metadata={"positional": True})
    """The text to speak (the demo backbone reads letters, spaces, .,?!'- and [laughter] tags)."""
    backbone: str = "demo"
    """Backbone name (demo) or a directory written by `ttslens demo build --out DIR`."""
    instruct: str = ""
    """Optional instruct prefix, e.g. "a woman speaking quickly." (the demo knows gender and pace)."""
    seed: int = 0
    """Sampling seed (the same seed and text give the same audio)."""
    temperature: float = 1.0
    """Sampling temperature (0 = greedy)."""
    top_k: int = 50
    """Sample among the k most likely speech tokens (0 = all)."""
    top_p: float = 0.95
    """Nucleus sampling mass."""
    max_seconds: float = 0.0
    """Stop after this much speech (0 = the backbone's default limit for the text length)."""
    out: str = "speech.wav"
    """Output WAV file."""


def write_wav(path: str | Path, wave: np.ndarray, sample_rate: int) -> Path:
    """16-bit PCM WAV, written atomically."""
    import soundfile as sf

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        sf.write(str(tmp), np.clip(wave, -1, 1), sample_rate, subtype="PCM_16", format="WAV")
    return path


def run_synthesize(cfg: SynthesizeConfig) -> dict:
    from audio import load_backbone
    from audio.measures import measure

    if not cfg.text.strip():
        raise ValueError("empty text: give the words to speak, e.g. ttslens synthesize \"hello there.\"")
    bb = load_backbone(cfg.backbone)
    max_tokens = int(cfg.max_seconds * bb.token_rate) or None
    wave, g = bb.synthesize(
        cfg.text,
        instruct=cfg.instruct or None,
        seed=cfg.seed,
        temperature=cfg.temperature,
        top_k=cfg.top_k,
        top_p=cfg.top_p,
        max_tokens=max_tokens,
    )
    path = write_wav(cfg.out, wave, bb.sample_rate)
    m = measure(wave, bb.sample_rate, getattr(bb, "laughter_detector", None))
    measured = {k: None if v is None or v != v else round(float(v), 3) for k, v in m._asdict().items()}
    return {"out": str(path), "speech_tokens": len(g.tokens), "stopped": g.stopped} | measured


def run_demo_build(cfg) -> dict:
    from audio.demo.build import build

    return build(cfg)

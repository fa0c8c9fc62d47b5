"""TTS backbones behind one interface (`audio.backbone`), the demo backbone, codec and audio measures."""

from __future__ import annotations

from pathlib import Path

from audio.backbone import Generation, Intervention, TeacherForced, TTSBackbone, TTSSequence

BACKBONES = ("demo",)


def load_backbone(name: str = "demo", **kwargs) -> TTSBackbone:
    """A backbone by name ("demo"), or a directory written by `ttslens demo build --out DIR`."""
    from audio.demo.backbone import DemoBackbone

    if name == "demo":
        return DemoBackbone.load(**kwargs)
    if Path(name).is_dir() and (Path(name) / "lm.json").exists():
        return DemoBackbone.load(name)
    raise ValueError(f"unknown backbone {name!r}: use {', '.join(BACKBONES)} or a `ttslens demo build` directory")


__all__ = ["Generation", "Intervention", "TTSBackbone", "TTSSequence", "TeacherForced", "load_backbone"]

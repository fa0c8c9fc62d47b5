"""Audio measures, by name: signal measures (`signal`), 1-s clip measures (`clips`), ASR (`asr`),
audio classifiers (`classifiers`), the pitch-free gender classifier (`timbre`) and the laughter detector.

Measures never come from attributes of a backbone: `laughter_detector("demo")` is the detector shipped
with the demo backbone (fitted on its corpus), `laughter_detector(DIR)` one saved in DIR, and
`laughter_detector_for(backbone)` picks the one fitted on that demo build (the shipped one otherwise);
`timbre_gender` / `timbre_gender_for` do the same for the timbre (pitch-free) gender classifier.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from ttslens.audio.measures.signal import measure
from ttslens.sae.errors import MissingFile

__all__ = ["laughter_detector", "laughter_detector_for", "measure", "timbre_gender", "timbre_gender_for"]


@lru_cache(maxsize=8)
def _load_detector(path: str):
    from ttslens.audio.backbones.demo.laughter import LaughterDetector

    return LaughterDetector.load(Path(path))


def laughter_detector(source: str | Path = "demo"):
    """The demo laughter detector: "demo" (shipped) or a directory with laughter.json + laughter.safetensors."""
    if str(source) == "demo":
        from ttslens.audio.backbones.demo.backbone import ASSETS

        source = ASSETS
    if not (Path(source) / "laughter.json").exists():
        raise MissingFile(f"no laughter detector in {source}: give a `ttslens demo build` directory or 'demo'")
    return _load_detector(str(Path(source).resolve()))


def laughter_detector_for(backbone=None):
    """The detector fitted on this demo build's corpus; the shipped one for any other backbone."""
    from ttslens.audio.backbones.demo.backbone import DemoBackbone

    if isinstance(backbone, DemoBackbone) and backbone.assets and (backbone.assets / "laughter.json").exists():
        return laughter_detector(backbone.assets)
    return laughter_detector("demo")


@lru_cache(maxsize=8)
def _load_timbre(path: str):
    from ttslens.audio.measures.timbre import TimbreGender

    return TimbreGender.load(Path(path))


def timbre_gender(source: str | Path = "demo"):
    """The pitch-free gender classifier: "demo" (shipped, fitted on the demo corpus) or a directory with
    gender.json."""
    from ttslens.audio.measures.timbre import FILE

    if str(source) == "demo":
        from ttslens.audio.backbones.demo.backbone import ASSETS

        source = ASSETS
    if not (Path(source) / FILE).exists():
        raise MissingFile(f"no timbre gender classifier in {source}: give a `ttslens demo build` directory or 'demo'")
    return _load_timbre(str(Path(source).resolve()))


def timbre_gender_for(backbone=None):
    """The classifier fitted on this demo build's corpus; the shipped one for any other backbone (None, with a
    note, when there is none)."""
    from ttslens.audio.backbones.demo.backbone import DemoBackbone
    from ttslens.audio.measures.timbre import FILE

    if isinstance(backbone, DemoBackbone) and backbone.assets and (backbone.assets / FILE).exists():
        return timbre_gender(backbone.assets)
    try:
        return timbre_gender("demo")
    except MissingFile as e:  # an older demo build: say so, measure P(male) by pitch only
        from ttslens.sae.notes import note

        note(f"P(male) by timbre is skipped: {e}")
        return None

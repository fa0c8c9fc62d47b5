"""ttslens.audio — TTS backbones behind one interface, audio measures, controlled synthesis.

- `backbones/` — `base.TTSBackbone` (the seam), `registry` (`load_backbone`), `demo/` (the embedded backbone);
- `corpus.py` — the `Corpus` interface: items of text, optional audio / speech tokens, optional truth;
- `measures/` — signal measures, 1-s clip measures, ASR, audio classifiers (by name);
- `steering/` — the steering API (`SteerableTTS`), presets, dose-response evaluation;
- `harvest.py` — a backbone as an activation source for `ttslens.sae`.
"""

from __future__ import annotations

from ttslens.audio.backbones.base import Generation, Intervention, TeacherForced, TTSBackbone, TTSSequence
from ttslens.audio.backbones.registry import list_backbones, load_backbone

__all__ = [
    "Generation",
    "Intervention",
    "TTSBackbone",
    "TTSSequence",
    "TeacherForced",
    "list_backbones",
    "load_backbone",
]

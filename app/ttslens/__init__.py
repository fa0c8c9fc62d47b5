"""ttslens: interpretability and control for text-to-speech language models.

This file is the `ttslens` package root (pyproject.toml maps it here; the subpackages are the repo's
top-level folders: `ttslens.sae`, `ttslens.audio`, `ttslens.autointerp`, `ttslens.app`). The main entry
points are importable from here and load lazily:

    import ttslens
    bb = ttslens.load_backbone("demo")
    tts = ttslens.SteerableTTS.load("demo", sae="runs/demo_l3")
    sae = ttslens.load_sae("runs/demo_l3")
"""

from __future__ import annotations

import importlib

__version__ = "0.2.0"

_EXPORTS = {
    "load_backbone": "ttslens.audio.backbones.registry",
    "list_backbones": "ttslens.audio.backbones.registry",
    "TTSBackbone": "ttslens.audio.backbones.base",
    "Intervention": "ttslens.audio.backbones.base",
    "SteerableTTS": "ttslens.audio.steering.api",
    "synthesize": "ttslens.audio.steering.api",
    "measure": "ttslens.audio.measures.signal",
    "SAEConfig": "ttslens.sae.base",
    "load_sae": "ttslens.sae.files",
    "save_sae": "ttslens.sae.files",
    "TrainConfig": "ttslens.sae.training.config",
    "train": "ttslens.sae.training.trainer",
    "Hooks": "ttslens.sae.hooks",
    "TextSteerer": "ttslens.sae.lm.steer",
    "LabelConfig": "ttslens.autointerp.pipeline",
    "run_label": "ttslens.autointerp.pipeline",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'ttslens' has no attribute {name!r}")

"""Backbones by name: `load_backbone("demo")`, `--backbone NAME`, `ttslens backbones`.

A backbone registers a loader and a readiness check; the check says, without loading anything heavy,
whether the backbone can be used here (its packages installed, its weights found) or why not.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ttslens.audio.backbones.base import TTSBackbone
from ttslens.sae.errors import BadInput


@dataclass(frozen=True)
class BackboneEntry:
    name: str
    load: Callable[..., TTSBackbone]  # (path_or_id | None, **options) → backbone
    needs: str  # what it needs installed / downloaded, in words
    ready: Callable[[], str | None]  # None when usable now, else why not (one line)
    claims: Callable[[Path], bool] = lambda _p: False  # does this directory hold this backbone?


REGISTRY: dict[str, BackboneEntry] = {}


def register_backbone(entry: BackboneEntry) -> BackboneEntry:
    REGISTRY[entry.name] = entry
    return entry


def _builtin() -> None:
    """Register the backbones ttslens ships (importing a module twice is free), beside any user's."""
    from ttslens.audio.backbones.cosyvoice3 import backbone as _cosyvoice3  # noqa: F401
    from ttslens.audio.backbones.csm import backbone as _csm  # noqa: F401
    from ttslens.audio.backbones.demo import backbone as _demo  # noqa: F401  (registers "demo")
    from ttslens.audio.backbones.orpheus import backbone as _orpheus  # noqa: F401


def backbone_spec(backbone: str, model_dir: str = "") -> str:
    """`--backbone NAME --model-dir DIR` as the one string `load_backbone` reads (NAME:DIR)."""
    if not model_dir:
        return backbone
    if not backbone:
        raise BadInput(f"--model-dir {model_dir} needs --backbone NAME (see `ttslens backbones`)")
    if ":" in backbone:
        raise BadInput(f"--backbone {backbone} already names a directory: drop --model-dir, or give --backbone NAME")
    return f"{backbone}:{model_dir}"


def list_backbones() -> list[dict]:
    """One row per registered backbone: name, what it needs, usable now or why not."""
    _builtin()
    rows = []
    for e in REGISTRY.values():
        why = e.ready()
        rows.append({"name": e.name, "needs": e.needs, "usable": why is None, "why_not": why})
    return rows


def load_backbone(name: str | Path = "demo", **options) -> TTSBackbone:
    """A backbone by registered name (`demo`), or a directory one of them recognises
    (e.g. a `ttslens demo build --out DIR`). Options (device, dtype, ...) go to its loader."""
    _builtin()
    key = str(name)
    if key in REGISTRY:
        return REGISTRY[key].load(None, **options)
    if ":" in key and key.split(":", 1)[0] in REGISTRY:  # NAME:PATH_OR_HUB_ID
        kind, where = key.split(":", 1)
        return REGISTRY[kind].load(where, **options)
    p = Path(key)
    if p.is_dir():
        for e in REGISTRY.values():
            if e.claims(p):
                return e.load(str(p), **options)
        names = ", ".join(REGISTRY)
        raise BadInput(f"{p} holds no backbone ttslens recognises: give NAME:{p} with NAME one of {names}")
    names = ", ".join(REGISTRY)
    raise BadInput(f"unknown backbone {key!r}: use one of {names} (see `ttslens backbones`) or a directory")


@dataclass
class BackbonesConfig:
    """List the TTS backbones ttslens knows: name, what each needs, usable here now or why not."""


def run_backbones(cfg: BackbonesConfig | None = None) -> None:
    """Print one line per backbone (`list_backbones()` has the same as data)."""
    rows = list_backbones()
    width = max(len(r["name"]) for r in rows)
    for r in rows:
        state = "usable" if r["usable"] else f"not usable: {r['why_not']}"
        print(f"{r['name']:<{width}}  {state}  (needs {r['needs']})")

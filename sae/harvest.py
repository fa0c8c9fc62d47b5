"""Cache a source's activations as safetensors shards with a manifest, resumably.

`harvest` writes `tokens` rows of any `BatchStream` source (a text LM's
`ttslens.sae.lm.harvest.ModelActivations`, a TTS backbone's `ttslens.audio.harvest.BackboneActivations`)
under a directory that `CachedActivations` reads (the shards the manifest lists, nothing else). The manifest, rewritten
atomically after each shard, records the shards, the source's position and what produced them
(model, layer, dataset), so a resumed run checks it continues the same harvest.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save_file
from tqdm.auto import tqdm

from ttslens.sae.activations import ACTS_KEY, MANIFEST
from ttslens.sae.errors import BadInput
from ttslens.sae.files import atomic_path, atomic_write_json


def harvest(
    source,
    out: str | Path,
    tokens: int,
    shard_rows: int = 65536,
    dtype: str = "float32",
    meta: dict | None = None,
) -> Path:
    """Write `tokens` rows as shards under `out` (+ manifest.json); resumes where a run stopped."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    manifest_path = out / MANIFEST
    manifest = json.loads(manifest_path.read_text()) if manifest_path.exists() else None
    if manifest is None:
        manifest = {"d": source.d, "rows": 0, "shards": [], "state": source.start_state(), **(meta or {})}
    else:
        _check_same_harvest(out, manifest, source.d, meta or {})
    bar = tqdm(total=tokens, initial=min(tokens, manifest["rows"]), unit="tok", desc="harvest")
    while manifest["rows"] < tokens:
        blk = source.block(manifest["state"], min(shard_rows, tokens - manifest["rows"]))
        name = f"shard_{len(manifest['shards']):05d}.safetensors"
        tensors = {ACTS_KEY: blk.acts.to(getattr(torch, dtype)).contiguous(), **blk.meta}
        with atomic_path(out / name) as tmp:
            save_file(tensors, str(tmp))
        manifest.update(rows=manifest["rows"] + blk.acts.shape[0], state=blk.next_state)
        manifest["shards"].append(name)
        atomic_write_json(manifest_path, manifest)
        bar.update(blk.acts.shape[0])
    bar.close()
    return out


def _check_same_harvest(out: Path, manifest: dict, d: int, meta: dict) -> None:
    """A resumed harvest must continue the one in `out`: same width and the same recorded settings
    (model, layer, dataset, ...; a setting the manifest does not record is not checked)."""
    changed = [k for k in meta if k in manifest and manifest[k] != meta[k]]
    if manifest["d"] != d:
        changed.insert(0, "d")
    if changed:
        was = ", ".join(f"{k}={manifest[k]!r}" for k in changed)
        now = ", ".join(f"{k}={({'d': d} | meta)[k]!r}" for k in changed)
        raise BadInput(
            f"{out} holds another harvest ({was}; this run: {now}); "
            "re-run with the original settings to resume it, or pass another --out"
        )

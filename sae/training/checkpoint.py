"""Resumable training state: one atomic torch file beside the run's outputs."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from ttslens.sae.errors import BadInput, FileClash, MissingFile
from ttslens.sae.files import CFG, atomic_torch_save

CKPT = "checkpoint.pt"


def check_out_dir(out: Path, resume: bool, overwrite: bool) -> None:
    """Refuse to mix runs: an existing run needs --resume (same config) or --overwrite."""
    has_run = (out / CKPT).exists() or (out / CFG).exists()
    if resume and not (out / CKPT).exists():
        raise MissingFile(f"--resume: no checkpoint in {out} (start a new run without --resume)")
    if has_run and not resume and not overwrite:
        raise FileClash(f"{out} holds another run; pass --resume to continue it or --overwrite to replace it")


def save(out: Path, state: dict) -> None:
    atomic_torch_save(out / CKPT, state)


def load(out: Path, identity: dict, world: int = 1, ignore: tuple[str, ...] = ()) -> dict:
    """The checkpoint in `out`, if it continues this run: same identity (config, less the `ignore` fields an
    older checkpoint may still hold) and the same number of processes (each one's data stream position is part
    of the state)."""
    try:
        state = torch.load(out / CKPT, map_location="cpu", weights_only=False)
    except Exception as e:
        raise BadInput(f"cannot read {out / CKPT}: {e} (corrupt? start again with --overwrite)") from e
    saved = state.get("world", len(state.get("stream", [None])))
    if saved != world:
        raise BadInput(
            f"--resume: {out / CKPT} was written by {saved} process(es), this run has {world}; "
            f"resume with --nproc_per_node {saved} (torchrun) or start a new --out"
        )
    saved_identity = {k: v for k, v in state["identity"].items() if k not in ignore}
    if saved_identity != identity:
        a, b = _flat(saved_identity), _flat(identity)
        diff = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
        raise BadInput(
            f"--resume with a changed config ({', '.join(diff)}); use the original settings "
            "or start a new run with --overwrite"
        )
    return state


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = json.dumps(v)
    return out

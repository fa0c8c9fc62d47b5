"""Where a backbone's files are: a local directory, or a hub id read from the Hugging Face cache (and
downloaded only when the user allows it: TTSLENS_DOWNLOAD=1)."""

from __future__ import annotations

import os
from pathlib import Path

from ttslens.sae.errors import EnvironmentProblem, MissingFile

ALLOW_DOWNLOAD = "TTSLENS_DOWNLOAD"  # env var: "1" lets a hub id be fetched with huggingface_hub


def load_pretrained(cls, where: str | Path, what: str, device: str = "cpu", dtype: str = "float32"):
    """(model, tokenizer, directory) of a transformers model saved with `save_pretrained`: `cls` from the
    directory (or hub id) on the device and dtype, frozen; a missing file or a mismatched checkpoint is one line."""
    from transformers import AutoTokenizer

    from ttslens.sae.devices import resolve_device, resolve_dtype
    from ttslens.sae.errors import BadInput

    root = resolve_model_dir(where, what)
    if not (root / "config.json").exists() or not any(root.glob("*.safetensors")):
        raise MissingFile(f"{what} model directory {root} lacks config.json or its *.safetensors weights")
    try:
        model = cls.from_pretrained(str(root), dtype=resolve_dtype(dtype), device_map=str(resolve_device(device)))
    except (OSError, ValueError, RuntimeError) as e:  # shapes that do not fit the config, unreadable files
        raise BadInput(f"cannot load {what} from {root}: {' '.join(str(e).split())[:200]}") from None
    return model.eval().requires_grad_(False), AutoTokenizer.from_pretrained(str(root)), root


def resolve_model_dir(where: str | Path, what: str = "model") -> Path:
    """`where` as a local directory: itself, or the hub id's snapshot (cache first; a download only with
    TTSLENS_DOWNLOAD=1)."""
    where = str(where)
    p = Path(where).expanduser()
    if p.is_dir():
        return p
    if p.exists() or where.count("/") != 1 or where.startswith((".", "/", "~")):
        raise MissingFile(f"{what} model directory {where} not found: give the directory holding its files")
    try:
        from huggingface_hub import snapshot_download
    except ImportError:
        raise EnvironmentProblem("fetching a hub id needs huggingface_hub: pip install huggingface_hub") from None
    try:
        return Path(snapshot_download(where, local_files_only=os.environ.get(ALLOW_DOWNLOAD) != "1"))
    except Exception as e:  # offline, unknown id, gated, no permission: one line with the fix
        why = " ".join(str(e).split()).split(". ")[0][:100]
        raise MissingFile(
            f"{where} is neither a local directory nor in the hub cache ({why}): download it "
            f"(set {ALLOW_DOWNLOAD}=1, or `huggingface-cli download {where} --local-dir DIR`) and pass --model-dir DIR"
        ) from None

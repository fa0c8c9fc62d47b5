"""SAE directories on disk, and atomic writes.

An SAE directory holds `cfg.json` + `sae_weights.safetensors` in SAELens's layout
(`sae_lens.SAE.load_from_disk` reads batchtopk, topk and relu SAEs from it and encodes identically):

    ttslens arch   SAELens architecture   tensors
    batchtopk      jumprelu               W_enc [d, F], b_enc, W_dec [F, d], b_dec, threshold [F]
    topk           topk (+ k)             W_enc, b_enc, W_dec, b_dec
    relu           standard               W_enc, b_enc, W_dec, b_dec
    hierarchical   hierarchical_topk      as topk (+ k = the largest level)     (ttslens only)
    kron           kron                   W_uv [h, m+n, d], b_uv, W_dec, b_dec   (ttslens only)

Our own fields live under the `ttslens` key of cfg.json (SAELens ignores it): the SAEConfig, the
training config, the source model, hook and layer, and modality statistics. `metadata.sae_lens_version`
is the installed sae_lens's version, or absent when sae_lens is not installed.

SAELens TopK (and BatchTopK training) files with `rescale_acts_by_decoder_norm=True` select on
h * ||W_dec[i]|| and decode with W_dec[i] / ||W_dec[i]||; `load_sae` folds those norms into the weights
(as `sae_lens`'s `fold_W_dec_norm` does), which gives the same latents and reconstruction.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import json
import os
import tempfile
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from ttslens.sae.base import SAE, SAEConfig, make_sae
from ttslens.sae.errors import BadInput, MissingFile

CFG, WEIGHTS = "cfg.json", "sae_weights.safetensors"
SAELENS_ARCH = {
    "batchtopk": "jumprelu",
    "topk": "topk",
    "relu": "standard",
    "hierarchical": "hierarchical_topk",
    "kron": "kron",
}
FROM_SAELENS = {
    "jumprelu": "batchtopk",
    "batchtopk": "batchtopk",
    "topk": "topk",
    "standard": "relu",
    "hierarchical_topk": "hierarchical",
    "kron": "kron",
}


@contextlib.contextmanager
def atomic_path(path: str | Path):
    """Yield a temp path beside `path`; rename it onto `path` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes owner-only files; give the usual mode
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def atomic_write_json(path: str | Path, obj) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, default=str))


def atomic_torch_save(path: str | Path, obj) -> None:
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def sae_lens_version() -> str | None:
    """The installed sae_lens package's version (None when it is not installed)."""
    try:
        return importlib.metadata.version("sae-lens")
    except importlib.metadata.PackageNotFoundError:
        return None


def save_sae(sae: SAE, path: str | Path, extra: dict | None = None) -> Path:
    """Write `sae` as an SAELens-compatible directory (atomically, file by file)."""
    path = Path(path)
    c = sae.cfg
    sd = {k: v.detach().float().contiguous() for k, v in sae.state_dict().items()}
    if "W_enc" in sd:
        sd["W_enc"] = sd["W_enc"].T.contiguous()
    sd.pop("threshold_updates", None)
    extra = dict(extra or {})
    cfg = {
        "architecture": SAELENS_ARCH[c.arch],
        "d_in": c.d_in,
        "d_sae": c.d_sae,
        "dtype": "float32",
        "device": "cpu",
        "apply_b_dec_to_input": True,
        "normalize_activations": "none",
        "reshape_activations": "none",
        "metadata": {
            "model_name": extra.get("model_name"),
            "hook_name": extra.get("hook_name"),
            "hook_layer": extra.get("layer"),
            "context_size": extra.get("context_size"),
            "prepend_bos": extra.get("prepend_bos", True),
            "dataset_path": extra.get("dataset_path"),
        },
        "ttslens": {"sae": c.to_dict(), **extra},
    }
    if version := sae_lens_version():
        cfg["metadata"] = {"sae_lens_version": version, **cfg["metadata"]}
    if c.arch in ("topk", "hierarchical"):
        cfg.update(k=c.k, rescale_acts_by_decoder_norm=False)
    with atomic_path(path / WEIGHTS) as tmp:
        save_file(sd, str(tmp))
    atomic_write_json(path / CFG, cfg)
    return path


def read_cfg(path: str | Path) -> dict:
    path = Path(path)
    if not (path / CFG).exists():
        raise MissingFile(f"no SAE at {path}: {CFG} is missing (train one with `ttslens train`)")
    try:
        return json.loads((path / CFG).read_text())
    except json.JSONDecodeError as e:
        raise BadInput(f"{path / CFG} is not valid JSON ({e}); the SAE directory is corrupt") from e


def load_sae(path: str | Path, device: str = "cpu") -> SAE:
    """Load a ttslens SAE directory or a SAELens one (standard, topk, jumprelu, batchtopk)."""
    path = Path(path)
    cfg = read_cfg(path)
    arch = cfg.get("architecture", "standard")
    if arch not in FROM_SAELENS:
        raise BadInput(f"{path}: SAELens architecture {arch!r} is not supported (use one of {sorted(FROM_SAELENS)})")
    if cfg.get("normalize_activations", "none") not in ("none", None):
        raise BadInput(
            f"{path}: normalize_activations={cfg['normalize_activations']!r} is not supported; "
            "fold the normalisation into the weights first"
        )
    ours = cfg.get("ttslens", {}).get("sae")
    sae_cfg = (
        SAEConfig.from_dict(ours)
        if ours
        else SAEConfig(arch=FROM_SAELENS[arch], d_in=cfg["d_in"], d_sae=cfg["d_sae"], k=int(cfg.get("k") or 1))
    )
    if not (path / WEIGHTS).exists():
        raise MissingFile(f"no SAE weights at {path / WEIGHTS}")
    try:
        with safe_open(str(path / WEIGHTS), "pt") as f:
            sd = {k: f.get_tensor(k).float() for k in f.keys()}
    except Exception as e:
        raise BadInput(f"cannot read {path / WEIGHTS}: {e} (corrupt or truncated?)") from e
    if "W_enc" in sd:
        if sd["W_enc"].shape != (sae_cfg.d_in, sae_cfg.d_sae):
            raise BadInput(
                f"{path}: W_enc has shape {tuple(sd['W_enc'].shape)}, cfg says [{sae_cfg.d_in}, {sae_cfg.d_sae}]"
            )
        if not cfg.get("apply_b_dec_to_input", True):  # fold: (x - b_dec) W + (b + b_dec W) == x W + b
            sd["b_enc"] = sd["b_enc"] + sd["b_dec"] @ sd["W_enc"]
        sd["W_enc"] = sd["W_enc"].T.contiguous()
    if cfg.get("rescale_acts_by_decoder_norm"):
        _fold_decoder_norm(sd, path, arch)
    if "topk_threshold" in sd:  # SAELens BatchTopK training checkpoint
        sd["threshold"] = torch.full((sae_cfg.d_sae,), float(sd.pop("topk_threshold")))
    sae = make_sae(sae_cfg)
    if sae_cfg.arch == "batchtopk":
        sd.setdefault("threshold_updates", torch.tensor(1))
    missing, unexpected = sae.load_state_dict(sd, strict=False)
    if missing or unexpected:
        raise BadInput(
            f"{path}: weights do not match architecture {sae_cfg.arch} (missing {missing}, unexpected {unexpected})"
        )
    return sae.to(device).eval()


def _fold_decoder_norm(sd: dict[str, torch.Tensor], path: Path, arch: str) -> None:
    """SAELens's `rescale_acts_by_decoder_norm`: latents h_i * n_i, decoded by W_dec[i] / n_i
    (n_i = ||W_dec[i]||); folded as W_enc[i] * n_i, b_enc * n, W_dec[i] / n_i (W_enc here is [F, d]).
    A BatchTopK threshold is already in units of h * n. Other architectures are refused."""
    if arch not in ("topk", "batchtopk") or "W_enc" not in sd:
        raise BadInput(
            f"{path}: rescale_acts_by_decoder_norm is only understood for topk/batchtopk files, not {arch!r}; "
            "fold the decoder norms with sae_lens (sae.fold_W_dec_norm()) and save it again"
        )
    n_F = sd["W_dec"].norm(dim=1).clamp_min(1e-8)  # sae_lens's get_W_dec_norm
    sd["W_enc"] = sd["W_enc"] * n_F[:, None]
    sd["b_enc"] = sd["b_enc"] * n_F
    sd["W_dec"] = sd["W_dec"] / n_F[:, None]


def sae_info(path: str | Path) -> dict:
    """The ttslens fields of an SAE directory (source model, layer, training config, ...)."""
    return read_cfg(path).get("ttslens", {})

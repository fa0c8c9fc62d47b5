"""Steering vectors: one additive d-vector per layer, the only trainable thing (arXiv 2505.18706, 2509.06608).

    vec = SteeringVectors(d=896, layers=[12])          # zeros: a no-op
    edits = vec.edits(where=..., strength=1.0)         # hook-engine edits (`ttslens.sae.hooks`)
    save_vectors(vec, "runs/v", {"model": ..., "hook": "resid", "scope": "generated", ...})
    vec, meta = load_vectors("runs/v")                 # runs/v/vectors.safetensors

File: `DIR/vectors.safetensors`, one [d] float32 tensor per layer named `layer.<L>`; with adaptive token-wise
scaling also `scale.<L>.weight` [d] and `scale.<L>.bias` [1] (the scale at a position is 2·sigmoid(w·h + b), 1 at
initialisation). The metadata (model, layers, hook, scope, objective, reward, data, steps, d_model) is stored in
the safetensors header as JSON strings, so the file is self-describing.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from torch import nn

from ttslens.sae.errors import BadInput, MissingFile
from ttslens.sae.hooks import Edit, check_layer

FILE = "vectors.safetensors"


class SteeringVectors(nn.Module):
    """v_L [d] for each layer L (zeros at start), optionally with a learned per-position scale."""

    def __init__(self, d: int, layers: Sequence[int], adaptive: bool = False) -> None:
        super().__init__()
        if not layers:
            raise BadInput("give at least one layer to train a vector at: --layers L [L ...]")
        self.d, self.layers, self.adaptive = int(d), sorted({int(x) for x in layers}), adaptive
        self.vec = nn.ParameterDict({str(x): nn.Parameter(torch.zeros(self.d)) for x in self.layers})
        if adaptive:
            self.scale_w = nn.ParameterDict({str(x): nn.Parameter(torch.zeros(self.d)) for x in self.layers})
            self.scale_b = nn.ParameterDict({str(x): nn.Parameter(torch.zeros(1)) for x in self.layers})

    def vector(self, layer: int) -> torch.Tensor:
        return self.vec[str(layer)]

    def scale(self, layer: int, rows_ND: torch.Tensor) -> torch.Tensor | float:
        """The per-position scale [N, 1] (1 without adaptive scaling)."""
        if not self.adaptive:
            return 1.0
        w, b = self.scale_w[str(layer)], self.scale_b[str(layer)]
        return 2 * torch.sigmoid(rows_ND.float() @ w[:, None] + b)

    def add(self, layer: int, rows_ND: torch.Tensor, strength: float = 1.0) -> torch.Tensor:
        v = self.vector(layer).to(rows_ND.device)
        s = self.scale(layer, rows_ND)
        s = s.to(rows_ND.device) if torch.is_tensor(s) else s
        return (rows_ND.float() + strength * s * v).to(rows_ND.dtype)

    def edits(self, where: Callable | None = None, strength: float = 1.0, layers=None) -> list[Edit]:
        """One hook-engine edit per layer: h' = h + strength · scale(h) · v_L at the positions `where(ctx)`
        selects (None: all). `layers`: a subset (e.g. to score one layer's vector alone)."""
        return [
            Edit(x, (lambda rows, x=x: self.add(x, rows, strength)), where)
            for x in (self.layers if layers is None else layers)
        ]

    def norms(self) -> dict[int, float]:
        return {x: float(self.vector(x).detach().norm()) for x in self.layers}


def combine(parts: Sequence[tuple[SteeringVectors, float]]) -> SteeringVectors:
    """Vectors trained apart (e.g. each layer's in isolation) as one set: each scaled, summed where layers meet."""
    if not parts:
        raise BadInput("nothing to combine: give at least one set of vectors")
    d = parts[0][0].d
    if any(v.d != d for v, _ in parts):
        raise BadInput("vectors of different widths cannot be combined: they belong to different models")
    if any(v.adaptive for v, _ in parts):
        raise BadInput("adaptively scaled vectors cannot be combined (their scales are per set): apply them one by one")
    out = SteeringVectors(d, sorted({x for v, _ in parts for x in v.layers}))
    with torch.no_grad():
        for v, s in parts:
            for x in v.layers:
                out.vector(x).add_(s * v.vector(x).detach().to(out.vector(x)))
    return out.requires_grad_(False)


def save_vectors(vec: SteeringVectors, out: str | Path, meta: dict) -> Path:
    """Write DIR/vectors.safetensors atomically (tensors `layer.<L>`, metadata as JSON strings)."""
    from safetensors.torch import save_file

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    tensors = {f"layer.{x}": vec.vector(x).detach().float().cpu().contiguous() for x in vec.layers}
    if vec.adaptive:
        for x in vec.layers:
            tensors[f"scale.{x}.weight"] = vec.scale_w[str(x)].detach().float().cpu().contiguous()
            tensors[f"scale.{x}.bias"] = vec.scale_b[str(x)].detach().float().cpu().contiguous()
    meta = {**meta, "layers": vec.layers, "d_model": vec.d, "adaptive": vec.adaptive}
    header = {k: json.dumps(v, default=str) for k, v in meta.items()}
    tmp = out / f".{FILE}.tmp"
    save_file(tensors, str(tmp), metadata=header)
    tmp.replace(out / FILE)
    return out / FILE


def vectors_path(path: str | Path) -> Path:
    p = Path(path)
    p = p / FILE if p.is_dir() else p
    if not p.exists():
        raise MissingFile(f"no steering vectors at {path}: train them with `ttslens vectors train --out DIR`")
    return p


def load_vectors(path: str | Path) -> tuple[SteeringVectors, dict]:
    """(vectors, metadata) from DIR or DIR/vectors.safetensors."""
    from safetensors import safe_open

    p = vectors_path(path)
    try:
        with safe_open(str(p), "pt") as f:
            header = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open has no __iter__)
    except Exception as e:  # a truncated or foreign file
        raise BadInput(f"cannot read {p}: {e} (not a vectors file? train one with `ttslens vectors train`)") from e
    meta = {k: json.loads(v) for k, v in header.items()}
    layers = sorted(int(k.split(".")[1]) for k in tensors if k.startswith("layer."))
    if not layers:
        raise BadInput(f"{p} holds no `layer.<L>` tensors: not a steering-vectors file")
    d = int(tensors[f"layer.{layers[0]}"].numel())
    vec = SteeringVectors(d, layers, adaptive=f"scale.{layers[0]}.weight" in tensors)
    with torch.no_grad():
        for x in layers:
            vec.vector(x).copy_(tensors[f"layer.{x}"].reshape(d))
            if vec.adaptive:
                vec.scale_w[str(x)].copy_(tensors[f"scale.{x}.weight"])
                vec.scale_b[str(x)].copy_(tensors[f"scale.{x}.bias"])
    meta.setdefault("layers", layers)
    meta.setdefault("d_model", d)
    return vec.requires_grad_(False), meta


def check_fits(vec: SteeringVectors, meta: dict, d: int, n_layers: int, model: str | None = None, hook="resid"):
    """One line when vectors trained for another model are applied here (width, layer range, hook)."""
    trained_on = meta.get("model") or "another model"
    if vec.d != d:
        raise BadInput(f"these vectors are {vec.d}-wide (trained on {trained_on}) but this model is {d}-wide")
    for x in vec.layers:
        check_layer(x, n_layers)
    if meta.get("hook", "resid") != hook:
        raise BadInput(f"these vectors edit the {meta.get('hook')} output; only the residual stream (resid) is steered")
    if model and meta.get("model") and str(meta["model"]) != str(model):
        from ttslens.sae.notes import note

        note(f"vectors trained on {meta['model']} applied to {model} (same width: a transfer)")


def parse_vector_specs(specs) -> list[tuple[str, float]]:
    """Vectors to apply: "DIR" or "DIR=STRENGTH" strings, (DIR, STRENGTH) pairs, or a list of either."""
    if not specs:
        return []
    if isinstance(specs, str | Path) or (
        isinstance(specs, tuple) and len(specs) == 2 and not isinstance(specs[1], str)
    ):
        specs = [specs]
    out = []
    for spec in specs:
        if isinstance(spec, tuple):
            path, strength = spec
        else:
            path, _, s = str(spec).rpartition("=") if "=" in str(spec) else (str(spec), "", "1")
            try:
                strength = float(s)
            except ValueError:
                raise BadInput(f"vectors {spec!r}: give DIR or DIR=STRENGTH (e.g. runs/laugh=1.5)") from None
        out.append((str(path), float(strength)))
    return out


_LOADED: dict[str, tuple[float, SteeringVectors, dict]] = {}


def load_cached(path: str) -> tuple[SteeringVectors, dict]:
    """`load_vectors`, reread only when the file changed (the app and the APIs apply the same vectors often)."""
    p = vectors_path(path)
    mtime = p.stat().st_mtime
    hit = _LOADED.get(str(p))
    if hit is None or hit[0] != mtime:
        _LOADED[str(p)] = (mtime, *load_vectors(p))
    return _LOADED[str(p)][1], _LOADED[str(p)][2]

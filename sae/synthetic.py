"""Synthetic activations with a known over-complete dictionary in superposition.

x = sum_i c_i D_i (+ noise), with D [F_true, d] unit rows, each token using ~k_true features whose
firing probabilities follow a power law and magnitudes are |N(1, 0.25)|-ish. Used to check that
an SAE recovers the true dictionary (mean max cosine) and to benchmark on controlled data.
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import torch
from safetensors.torch import save_file

from ttslens.sae.activations import ACTS_KEY
from ttslens.sae.files import atomic_path


class Synthetic(NamedTuple):
    acts: torch.Tensor  # [N, d]
    dictionary: torch.Tensor  # [F_true, d]
    codes_nnz: torch.Tensor  # mean active features per token (scalar)


def make_superposition(
    n: int, d: int, n_features: int, k: int, seed: int = 0, noise: float = 0.0, zipf: float = 0.5
) -> Synthetic:
    g = torch.Generator().manual_seed(seed)
    D = torch.randn(n_features, d, generator=g)
    D = D / D.norm(dim=1, keepdim=True)
    p = torch.arange(1, n_features + 1, dtype=torch.float) ** -zipf
    p = p / p.sum() * k  # expected number of active features per token = k
    p = p.clamp(max=1.0)
    rows = []
    for lo in range(0, n, 8192):
        m = min(8192, n - lo)
        active = torch.rand(m, n_features, generator=g) < p
        mags = (1 + 0.25 * torch.randn(m, n_features, generator=g)).abs()
        rows.append((active * mags) @ D)
    x = torch.cat(rows)
    if noise:
        x = x + noise * torch.randn(x.shape, generator=g)
    return Synthetic(x, D, p.sum())


def mean_max_cosine(learned_FD: torch.Tensor, true_GD: torch.Tensor) -> float:
    """For each true feature, the best cosine with any learned decoder row; averaged."""
    a = learned_FD / learned_FD.norm(dim=1, keepdim=True).clamp_min(1e-12)
    b = true_GD / true_GD.norm(dim=1, keepdim=True).clamp_min(1e-12)
    best = torch.full((b.shape[0],), -1.0)
    for lo in range(0, a.shape[0], 4096):
        best = torch.maximum(best, (b @ a[lo : lo + 4096].T).max(1).values)
    return best.mean().item()


def write_synthetic(path: str | Path, syn: Synthetic, dtype: torch.dtype = torch.float32) -> Path:
    path = Path(path)
    with atomic_path(path) as tmp:
        save_file({ACTS_KEY: syn.acts.to(dtype).contiguous(), "dictionary": syn.dictionary.contiguous()}, str(tmp))
    return path

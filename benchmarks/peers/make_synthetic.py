"""Write a synthetic activation file for the peer benchmarks: sparse superposition of random unit
directions plus a little noise, stored as float32 `activations` [N, d] in a safetensors file.

    python benchmarks/peers/make_synthetic.py --rows 20000 --dim 64 --out /tmp/acts.safetensors
"""

from __future__ import annotations

import argparse

import numpy as np
from safetensors.numpy import save_file


def synthesize(rows: int, dim: int, n_features: int, active: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    dirs = rng.standard_normal((n_features, dim)).astype(np.float32)
    dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
    # Zipf-ish feature frequencies with mean `active` features on per row.
    freq = 1.0 / np.arange(1, n_features + 1) ** 0.5
    freq *= active / freq.sum()
    out = np.empty((rows, dim), dtype=np.float32)
    for start in range(0, rows, 8192):
        n = min(8192, rows - start)
        on = rng.random((n, n_features)) < freq
        coef = (on * rng.exponential(1.0, (n, n_features))).astype(np.float32)
        out[start : start + n] = coef @ dirs + 0.01 * rng.standard_normal((n, dim)).astype(np.float32)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--rows", type=int, required=True)
    p.add_argument("--dim", type=int, required=True)
    p.add_argument("--features", type=int, default=0, help="ground-truth features (default 4 * dim)")
    p.add_argument("--active", type=float, default=8.0, help="mean active features per row")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True)
    a = p.parse_args()
    acts = synthesize(a.rows, a.dim, a.features or 4 * a.dim, a.active, a.seed)
    save_file({"activations": acts}, a.out)
    print(f"wrote {a.out}: {acts.shape} float32")


if __name__ == "__main__":
    main()

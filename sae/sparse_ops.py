"""Sparse encoder/decoder kernels shared by every top-k style SAE.

A top-k SAE touches only k of F latents per token, yet a naive implementation pays three dense
[B, d] x [d, F] products per step (encoder forward, encoder backward, decoder). Here:

- the dense encoder product runs once, without autograd (`dense_preacts`);
- the selected pre-activations are re-attached to the graph by `gather_preacts`, whose backward
  costs O(B * k * d) (a CSR product and an embedding-bag) instead of O(B * F * d);
- the decoder is an embedding-bag over the k active rows (`sparse_decode`), never a [B, F] tensor.

Under `bf16_selection()` (training, where bf16 products are native) the dense product runs in bf16 and
only *chooses* the latents; the chosen pre-activations are recomputed exactly in fp32 (O(B k d)), so the
values, the loss and the gradients are fp32 and only near-ties at the cut may be chosen differently.

`TTSLENS_PLAIN_TORCH=1` switches to plain autograd on dense tensors (the reference path, used by
the tests to check the fast path).
"""

from __future__ import annotations

import os
import threading
import warnings
from contextlib import contextmanager

import torch
import torch.nn.functional as F

warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")


def plain_torch() -> bool:
    return os.environ.get("TTSLENS_PLAIN_TORCH", "0") == "1"


_MODE = threading.local()


@contextmanager
def bf16_selection(enabled: bool = True):
    """Inside: `dense_preacts` returns bf16 pre-activations (for choosing latents) and `gather_preacts`
    recomputes the chosen ones exactly in fp32."""
    old = getattr(_MODE, "bf16", False)
    _MODE.bf16 = enabled and not plain_torch()
    try:
        yield
    finally:
        _MODE.bf16 = old


def _bf16() -> bool:
    return getattr(_MODE, "bf16", False)


def exact_preacts(x_BD, W_FD, b_F, rows_N: torch.Tensor, cols_N: torch.Tensor, chunk: int = 16384) -> torch.Tensor:
    """fp32 pre-activations x[rows] . W[cols] + b[cols] of the flat entries (no graph), in chunks."""
    out = torch.empty(len(rows_N), dtype=x_BD.dtype, device=x_BD.device)
    with torch.no_grad():
        for i in range(0, len(rows_N), chunk):
            r, c = rows_N[i : i + chunk], cols_N[i : i + chunk]
            out[i : i + chunk] = torch.einsum("nd,nd->n", x_BD.index_select(0, r), W_FD.index_select(0, c)) + b_F[c]
    return out


def bag_offsets(rows_N: torch.Tensor, n_rows: int) -> torch.Tensor:
    """embedding_bag offsets for a flat layout whose row indices are sorted."""
    counts = torch.bincount(rows_N, minlength=n_rows)
    return torch.cumsum(counts, 0) - counts


class _GatherPreacts(torch.autograd.Function):
    """vals_N = (x_BD @ W_FD.T + b_F)[rows_N, cols_N] with a sparse backward (rows sorted)."""

    @staticmethod
    def forward(ctx, x_BD, W_FD, b_F, rows_N, cols_N, vals_N):  # noqa: D401
        ctx.save_for_backward(x_BD, W_FD, rows_N, cols_N)
        return vals_N.clone()

    @staticmethod
    def backward(ctx, g_N):
        x_BD, W_FD, rows_N, cols_N = ctx.saved_tensors
        g_N = g_N.contiguous()
        n_lat = W_FD.shape[0]
        grad_x = grad_W = grad_b = None
        if ctx.needs_input_grad[0]:
            offsets = bag_offsets(rows_N, x_BD.shape[0])
            grad_x = F.embedding_bag(cols_N, W_FD, offsets, per_sample_weights=g_N.to(W_FD.dtype), mode="sum")
        if ctx.needs_input_grad[1]:
            order = torch.argsort(cols_N, stable=True)
            crow = torch.zeros(n_lat + 1, dtype=torch.int64, device=cols_N.device)
            crow[1:] = torch.cumsum(torch.bincount(cols_N, minlength=n_lat), 0)
            G_FB = torch.sparse_csr_tensor(
                crow, rows_N[order], g_N[order].to(x_BD.dtype), size=(n_lat, x_BD.shape[0]), check_invariants=False
            )
            grad_W = (G_FB @ x_BD).to(W_FD.dtype)
        if ctx.needs_input_grad[2]:
            grad_b = torch.zeros(n_lat, dtype=g_N.dtype, device=g_N.device).index_add_(0, cols_N, g_N)
        return grad_x, grad_W, grad_b, None, None, None


def dense_preacts(x_BD: torch.Tensor, W_FD: torch.Tensor, b_F: torch.Tensor) -> torch.Tensor:
    """Encoder pre-activations [B, F]; no graph is kept on the fast path."""
    if plain_torch():
        return F.linear(x_BD, W_FD, b_F)
    with torch.no_grad():
        if _bf16():
            return F.linear(x_BD.bfloat16(), W_FD.bfloat16(), b_F.bfloat16())
        return F.linear(x_BD, W_FD, b_F)


def gather_preacts(
    x_BD: torch.Tensor,
    W_FD: torch.Tensor,
    b_F: torch.Tensor,
    pre_BF: torch.Tensor,
    idx: torch.Tensor,
    rows_N: torch.Tensor | None = None,
    exact: bool = True,
    pre_idx: torch.Tensor | None = None,
) -> torch.Tensor:
    """Pre-activations at idx, differentiable w.r.t. x, W and b at sparse cost.

    idx is [B, K] (K latents per token) or flat [N] with `rows_N` (sorted token index per entry). Under
    `bf16_selection`, `exact=False` reads the bf16 values as they are (the auxiliary loss's many entries).
    `pre_idx` (default idx): where the same entries sit in pre_BF when its columns are ordered differently
    from W's rows (KronSAE's rank-major product)."""
    read = idx if pre_idx is None else pre_idx
    if exact and _bf16() and pre_BF.dtype == torch.bfloat16:  # chosen on bf16 values: recompute them exactly
        if idx.dim() == 2:
            rows_N = torch.arange(idx.shape[0], device=idx.device).repeat_interleave(idx.shape[1])
        vals = exact_preacts(x_BD, W_FD, b_F, rows_N, idx.reshape(-1)).view(idx.shape)
    elif idx.dim() == 2:
        vals = pre_BF.gather(1, read).to(x_BD.dtype)  # bf16 autocast: keep the rest in fp32
    else:
        vals = pre_BF[rows_N, read].to(x_BD.dtype)
    if plain_torch() or not torch.is_grad_enabled():
        return vals
    if idx.dim() == 2:
        B, K = idx.shape
        rows = torch.arange(B, device=idx.device).repeat_interleave(K)
        return _GatherPreacts.apply(x_BD, W_FD, b_F, rows, idx.reshape(-1), vals.reshape(-1)).view(B, K)
    return _GatherPreacts.apply(x_BD, W_FD, b_F, rows_N, idx, vals)


def sparse_decode(
    vals: torch.Tensor, idx: torch.Tensor, W_dec_FD: torch.Tensor, rows_N: torch.Tensor | None = None, n_rows: int = 0
) -> torch.Tensor:
    """sum over a token's entries of vals * W_dec[idx] -> [B, d] (no decoder bias).

    [B, K] layout, or flat [N] with sorted `rows_N` and the number of tokens `n_rows`."""
    if plain_torch():
        if idx.dim() == 2:
            dense = torch.zeros(idx.shape[0], W_dec_FD.shape[0], dtype=vals.dtype, device=vals.device)
            return dense.scatter_add(1, idx, vals) @ W_dec_FD
        dense = torch.zeros(n_rows, W_dec_FD.shape[0], dtype=vals.dtype, device=vals.device)
        return dense.index_put((rows_N, idx), vals, accumulate=True) @ W_dec_FD
    w = vals.to(W_dec_FD.dtype)
    if idx.dim() == 2:
        return F.embedding_bag(idx, W_dec_FD, per_sample_weights=w, mode="sum")
    return F.embedding_bag(idx, W_dec_FD, bag_offsets(rows_N, n_rows), per_sample_weights=w, mode="sum")

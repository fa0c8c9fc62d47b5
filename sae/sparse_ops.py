"""Sparse encoder/decoder kernels shared by every top-k style SAE.

A top-k SAE touches only k of F latents per token, yet a naive implementation pays three dense
[B, d] x [d, F] products per step (encoder forward, encoder backward, decoder). Here:

- the dense encoder product runs once, without autograd (`dense_preacts`);
- the selected pre-activations are re-attached to the graph by `gather_preacts`, whose backward
  costs O(B * k * d) (a CSR product and an embedding-bag) instead of O(B * F * d);
- the decoder is an embedding-bag over the k active rows (`sparse_decode`), never a [B, F] tensor.

`TTSLENS_PLAIN_TORCH=1` switches to plain autograd on dense tensors (the reference path, used by
the tests to check the fast path).
"""

from __future__ import annotations

import os
import warnings

import torch
import torch.nn.functional as F

warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")


def plain_torch() -> bool:
    return os.environ.get("TTSLENS_PLAIN_TORCH", "0") == "1"


class _GatherPreacts(torch.autograd.Function):
    """vals_BK = (x_BD @ W_FD.T + b_F)[b, idx_BK] with a sparse backward."""

    @staticmethod
    def forward(ctx, x_BD, W_FD, b_F, idx_BK, vals_BK):  # noqa: D401
        ctx.save_for_backward(x_BD, W_FD, idx_BK)
        return vals_BK.clone()

    @staticmethod
    def backward(ctx, g_BK):
        x_BD, W_FD, idx_BK = ctx.saved_tensors
        g_BK = g_BK.contiguous()
        n_lat = W_FD.shape[0]
        grad_x = grad_W = grad_b = None
        if ctx.needs_input_grad[0]:
            grad_x = F.embedding_bag(idx_BK, W_FD, per_sample_weights=g_BK.to(W_FD.dtype), mode="sum")
        if ctx.needs_input_grad[1]:
            cols = idx_BK.reshape(-1)
            order = torch.argsort(cols, stable=True)
            rows = torch.arange(idx_BK.shape[0], device=cols.device).repeat_interleave(idx_BK.shape[1])
            counts = torch.bincount(cols, minlength=n_lat)
            crow = torch.zeros(n_lat + 1, dtype=torch.int64, device=cols.device)
            crow[1:] = torch.cumsum(counts, 0)
            G_FB = torch.sparse_csr_tensor(
                crow,
                rows[order],
                g_BK.reshape(-1)[order].to(x_BD.dtype),
                size=(n_lat, x_BD.shape[0]),
                check_invariants=False,
            )
            grad_W = (G_FB @ x_BD).to(W_FD.dtype)
        if ctx.needs_input_grad[2]:
            grad_b = torch.zeros(n_lat, dtype=g_BK.dtype, device=g_BK.device)
            grad_b.index_add_(0, idx_BK.reshape(-1), g_BK.reshape(-1))
        return grad_x, grad_W, grad_b, None, None


def dense_preacts(x_BD: torch.Tensor, W_FD: torch.Tensor, b_F: torch.Tensor) -> torch.Tensor:
    """Encoder pre-activations [B, F]; no graph is kept on the fast path."""
    if plain_torch():
        return F.linear(x_BD, W_FD, b_F)
    with torch.no_grad():
        return F.linear(x_BD, W_FD, b_F)


def gather_preacts(
    x_BD: torch.Tensor, W_FD: torch.Tensor, b_F: torch.Tensor, pre_BF: torch.Tensor, idx_BK: torch.Tensor
) -> torch.Tensor:
    """Pre-activations at idx_BK, differentiable w.r.t. x, W and b at sparse cost."""
    vals_BK = pre_BF.gather(1, idx_BK).to(x_BD.dtype)  # bf16 autocast: keep the rest in fp32
    if plain_torch() or not torch.is_grad_enabled():
        return vals_BK
    return _GatherPreacts.apply(x_BD, W_FD, b_F, idx_BK, vals_BK)


def sparse_decode(vals_BK: torch.Tensor, idx_BK: torch.Tensor, W_dec_FD: torch.Tensor) -> torch.Tensor:
    """sum_k vals[b, k] * W_dec[idx[b, k]] -> [B, d] (no decoder bias)."""
    if plain_torch():
        dense_BF = torch.zeros(vals_BK.shape[0], W_dec_FD.shape[0], dtype=vals_BK.dtype, device=vals_BK.device)
        return dense_BF.scatter_add(1, idx_BK, vals_BK) @ W_dec_FD
    return F.embedding_bag(idx_BK, W_dec_FD, per_sample_weights=vals_BK.to(W_dec_FD.dtype), mode="sum")

"""HierarchicalTopK SAE (arXiv 2505.24473): one SAE trained for every sparsity level 1..K.

With the top-K latents of a token sorted v_1 >= ... >= v_K, level j reconstructs
x_hat_j = b_dec + S_j, S_j = sum_{t<=j} v_t w_t (w_t = W_dec[i_t]); the loss is the mean over j of
the level FVUs. `HierarchicalLoss` never forms the K reconstructions. With r = x - b_dec and
P_t = sum_{j>=t} S_j = sum_u M[t, u] v_u w_u, where M[t, u] = K - max(t, u) counts the levels that
use both latents (0-based t, u) and Om_t = K - t those that use latent t,

    sum_j ||r - S_j||^2 = K ||r||^2 - 2 sum_t Om_t v_t (w_t . r) + sum_t v_t (w_t . P_t),

and with Q_t = P_t - Om_t r the gradients are d/dv_t = 2 w_t . Q_t, d/dw_t = 2 v_t Q_t,
d/dr = 2 (K r - sum_t Om_t v_t w_t). P is one small batched product [K, K] x [K, d] per token, so a
row chunk is read once: the loss and its gradients come from the same pass (forward), and backward
only scales them. Memory: an [F + B, d] gather table and O(chunk * K * d). At inference any k <= K
is served by keeping the first k sorted latents.
"""

from __future__ import annotations

import torch

from ttslens.sae.base import SAE, ForwardOutput, batch_world, centred_sq_sum, fvu_loss, register
from ttslens.sae.errors import BadInput
from ttslens.sae.sparse_ops import plain_torch

CHUNK_FLOATS = 1 << 19  # ~2 MB of float32 per [rows, K, d] block: stays in cache


def _chunks(n_rows: int, K: int, d: int):
    step = max(1, CHUNK_FLOATS // max(1, K * d))
    for s in range(0, n_rows, step):
        yield slice(s, min(n_rows, s + step))


def _level_counts(K: int, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Om [K] (levels using latent t) and M [K, K] (levels using both t and u), 0-based ranks."""
    t = torch.arange(K, device=like.device)
    return (K - t).to(like.dtype), (K - torch.maximum(t[:, None], t[None, :])).to(like.dtype)


def _hier_sum(vals_BK, idx_BK, W_dec_FD, b_dec_D, y_BD, grads: bool):
    """sum_b sum_j ||y_b - x_hat_j(b)||^2, the full-K reconstruction x_hat_K [B, d], and (grads) half the
    gradients w.r.t. vals, W_dec and b_dec.

    Per row chunk, each token's K decoder rows and its r are gathered together, as rows of [W_dec; r], into
    T [b, K+1, d]; one batched product A T gives Q_t = P_t - Om_t r (rows :K), S_K and sum_t Om_t v_t w_t.
    (The [F + B, d] table costs one copy of W_dec per step; gathering from it is faster than a per-chunk cat.)"""
    (B, K), (F_, d) = idx_BK.shape, W_dec_FD.shape
    Om_K, M_KK = _level_counts(K, vals_BK)
    r_BD = y_BD - b_dec_D
    table = torch.cat([W_dec_FD.detach(), r_BD])  # row F_ + b is token b's r
    idx_BE = torch.cat([idx_BK, F_ + torch.arange(B, device=idx_BK.device).unsqueeze(1)], 1)
    sums_B2D = torch.empty(B, 2, d, dtype=r_BD.dtype, device=r_BD.device)  # S_K, sum_t Om_t v_t w_t
    wq_BK = torch.empty_like(vals_BK)  # w_t . Q_t
    g_W = torch.zeros_like(W_dec_FD) if grads else None
    step = next(iter(_chunks(B, K + 1, d))).stop
    A_cRE = vals_BK.new_zeros(step, K + 2, K + 1)  # rows: M * v (| -Om), then v and Om v (| 0)
    A_cRE[:, :K, K] = -Om_K
    for sl in _chunks(B, K + 1, d):
        n, v_bK = sl.stop - sl.start, vals_BK[sl]
        A = A_cRE[:n]
        torch.mul(M_KK, v_bK.unsqueeze(1), out=A[:, :K, :K])
        A[:, K, :K] = v_bK
        torch.mul(Om_K, v_bK, out=A[:, K + 1, :K])
        T_bED = table.index_select(0, idx_BE[sl].reshape(-1)).view(n, K + 1, d)  # 2x faster than table[idx]
        out_bRD = torch.bmm(A, T_bED)
        sums_B2D[sl] = out_bRD[:, K:]
        Q_bKD = out_bRD[:, :K]
        wq_BK[sl] = torch.linalg.vecdot(Q_bKD, T_bED[:, :K])
        if grads:
            g_W.index_add_(0, idx_BK[sl].reshape(-1), (v_bK.unsqueeze(-1) * Q_bKD).reshape(-1, d))
    # sum_t Om_t v_t (w_t . r) = r . sums[:, 1]
    total = K * r_BD.pow(2).sum() + (vals_BK * wq_BK).sum() - (r_BD * sums_B2D[:, 1]).sum()
    recon_BD = sums_B2D[:, 0] + b_dec_D
    if not grads:
        return total, recon_BD, None
    g_b = sums_B2D[:, 1].sum(0) - K * r_BD.sum(0)
    return total, recon_BD, (wq_BK, g_W, g_b)


class HierarchicalLoss(torch.autograd.Function):
    """(sum_b sum_j ||y_b - x_hat_j(b)||^2 / (K * denom), x_hat_K without a graph); the gradients are
    computed with the loss, in chunks."""

    @staticmethod
    def forward(ctx, vals_BK, idx_BK, W_dec_FD, b_dec_D, y_BD, denom):  # noqa: D401
        total, recon_BD, grads = _hier_sum(vals_BK, idx_BK, W_dec_FD, b_dec_D, y_BD, True)
        ctx.scale = 1.0 / (idx_BK.shape[1] * float(denom))
        ctx.grads = grads
        ctx.mark_non_differentiable(recon_BD)
        return total * ctx.scale, recon_BD

    @staticmethod
    def backward(ctx, g, _g_recon):
        g_vals, g_W, g_b = ctx.grads
        del ctx.grads
        c = 2.0 * g * ctx.scale  # _hier_sum gives half the gradients
        return g_vals.mul_(c), None, g_W.mul_(c), g_b.mul_(c), None, None  # in place: no second [F, d]


def _level_residuals(r_BD, vals_BK, idx_BK, W_dec_FD):
    """E[b, j] = r_b - S_j(b) -> [B, K, d] (the reference definition)."""
    return r_BD.unsqueeze(1) - (vals_BK.unsqueeze(-1) * W_dec_FD[idx_BK]).cumsum(1)


def hierarchical_loss(y_BD, vals_BK, idx_BK, W_dec_FD, b_dec_D) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean over the K levels of the level FVUs (global-batch aware, like `fvu_loss`), the full-K
    reconstruction without a graph)."""
    K = idx_BK.shape[1]
    denom = (centred_sq_sum(y_BD) / batch_world()[1]).detach()
    if plain_torch():  # reference definition: all K reconstructions at once
        E_BKD = _level_residuals(y_BD - b_dec_D, vals_BK, idx_BK, W_dec_FD)
        return E_BKD.pow(2).sum() / (K * denom), (y_BD - E_BKD[:, -1]).detach()
    if not torch.is_grad_enabled():  # evaluation: no gradients formed
        total, recon_BD, _ = _hier_sum(vals_BK, idx_BK, W_dec_FD, b_dec_D, y_BD, False)
        return total / (K * denom), recon_BD
    return HierarchicalLoss.apply(vals_BK, idx_BK, W_dec_FD, b_dec_D, y_BD, denom)


@register
class HierarchicalTopKSAE(SAE):
    arch = "hierarchical"

    def encode_sparse(self, x_BD: torch.Tensor, k: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        k = k or self.cfg.k
        if not 0 < k <= self.cfg.k:
            raise BadInput(f"hierarchical SAE serves k in 1..{self.cfg.k} (got k={k})")
        vals_BK, idx_BK = self.preacts(x_BD).topk(k, dim=1, sorted=True)
        return vals_BK.relu(), idx_BK

    def forward(self, x_BD: torch.Tensor, dead_F: torch.Tensor | None = None, target_BD=None) -> ForwardOutput:
        pre_BF = self.preacts(x_BD)
        idx_BK = pre_BF.detach().topk(self.cfg.k, dim=1, sorted=False).indices
        vals_BK, order_BK = self.preacts_at(x_BD, pre_BF, idx_BK).relu().sort(1, descending=True)  # exact values
        idx_BK = idx_BK.gather(1, order_BK)
        y_BD = x_BD if target_BD is None else target_BD
        # the full-K level is one of the K levels already: its reconstruction is reported, not a second loss
        hier, recon_BD = hierarchical_loss(y_BD, vals_BK, idx_BK, self.W_dec, self.b_dec)
        terms = {"fvu": fvu_loss(y_BD, recon_BD), "hierarchical": hier}
        return self._with_auxk(x_BD, recon_BD, pre_BF, vals_BK, idx_BK, dead_F, hier, terms, target_BD)

"""HierarchicalTopK SAE (arXiv 2505.24473): one SAE trained for every sparsity level 1..K.

With the top-K latents of a token sorted v_1 >= ... >= v_K, level j reconstructs
x_hat_j = b_dec + sum_{t<=j} v_t W_dec[i_t]; the loss is the mean over j of the level FVUs.
`HierarchicalLoss` computes it in row chunks with a hand-written backward, so memory stays
O(chunk * K * d) instead of O(B * K * d) (no K reconstructions of the whole batch are kept).
At inference any k <= K is served by keeping the first k sorted latents.
"""

from __future__ import annotations

import torch

from ttslens.sae.base import SAE, ForwardOutput, fvu_loss, register
from ttslens.sae.errors import BadInput
from ttslens.sae.sparse_ops import plain_torch

CHUNK_FLOATS = 1 << 21  # ~8 MB of float32 per chunk of [rows, K, d]


def _chunks(n_rows: int, K: int, d: int):
    step = max(1, CHUNK_FLOATS // max(1, K * d))
    for s in range(0, n_rows, step):
        yield slice(s, min(n_rows, s + step))


def _level_residuals(r_BD, vals_BK, idx_BK, W_dec_FD):
    """E[b, j] = r_b - sum_{t<=j} vals[b, t] W_dec[idx[b, t]]  -> [B, K, d]."""
    contrib_BKD = vals_BK.unsqueeze(-1) * W_dec_FD[idx_BK]
    return r_BD.unsqueeze(1) - contrib_BKD.cumsum(1)


class HierarchicalLoss(torch.autograd.Function):
    """sum_b sum_j ||x_b - x_hat_j(b)||^2 / (K * denom), chunked forward and backward."""

    @staticmethod
    def forward(ctx, vals_BK, idx_BK, W_dec_FD, b_dec_D, x_BD, denom):  # noqa: D401
        K, d = idx_BK.shape[1], x_BD.shape[1]
        total = x_BD.new_zeros(())
        r_BD = x_BD - b_dec_D
        for sl in _chunks(x_BD.shape[0], K, d):
            total += _level_residuals(r_BD[sl], vals_BK[sl], idx_BK[sl], W_dec_FD).pow(2).sum()
        ctx.save_for_backward(vals_BK, idx_BK, W_dec_FD, b_dec_D, x_BD)
        ctx.scale = 1.0 / (K * float(denom))
        return total * ctx.scale

    @staticmethod
    def backward(ctx, g):
        vals_BK, idx_BK, W_dec_FD, b_dec_D, x_BD = ctx.saved_tensors
        K, d = idx_BK.shape[1], x_BD.shape[1]
        c = 2.0 * ctx.scale * g
        r_BD = x_BD - b_dec_D
        g_vals = torch.empty_like(vals_BK)
        g_W = torch.zeros_like(W_dec_FD)
        g_b = torch.zeros_like(b_dec_D)
        for sl in _chunks(x_BD.shape[0], K, d):
            E_BKD = _level_residuals(r_BD[sl], vals_BK[sl], idx_BK[sl], W_dec_FD)
            g_b -= c * E_BKD.sum((0, 1))
            # d loss / d contribution_t = -c * sum_{j >= t} E_j  (reverse cumulative sum)
            G_BKD = -c * E_BKD.flip(1).cumsum(1).flip(1)
            rows_BKD = W_dec_FD[idx_BK[sl]]
            g_vals[sl] = (G_BKD * rows_BKD).sum(-1)
            g_W.index_add_(0, idx_BK[sl].reshape(-1), (vals_BK[sl].unsqueeze(-1) * G_BKD).reshape(-1, d))
        return g_vals, None, g_W, g_b, None, None


def hierarchical_loss(x_BD, vals_BK, idx_BK, W_dec_FD, b_dec_D) -> torch.Tensor:
    denom = (x_BD - x_BD.mean(0)).pow(2).sum().clamp_min(1e-12).detach()
    if plain_torch():  # reference definition: all K reconstructions at once
        E_BKD = _level_residuals(x_BD - b_dec_D, vals_BK, idx_BK, W_dec_FD)
        return E_BKD.pow(2).sum() / (idx_BK.shape[1] * denom)
    return HierarchicalLoss.apply(vals_BK, idx_BK, W_dec_FD, b_dec_D, x_BD, denom)


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
        idx_BK = pre_BF.detach().topk(self.cfg.k, dim=1, sorted=True).indices
        vals_BK = self.preacts_at(x_BD, pre_BF, idx_BK).relu()
        y_BD = x_BD if target_BD is None else target_BD
        hier = hierarchical_loss(y_BD, vals_BK, idx_BK, self.W_dec, self.b_dec)
        with torch.no_grad():  # the full-K level is one of the K levels already: report only
            recon_BD = self.decode_sparse(vals_BK, idx_BK)
        terms = {"fvu": fvu_loss(y_BD, recon_BD), "hierarchical": hier}
        return self._with_auxk(x_BD, recon_BD, pre_BF, vals_BK, idx_BK, dead_F, hier, terms, target_BD)

"""BatchTopK SAE (Bussmann et al. 2024): top N*k activations over the whole batch while training;
a single global threshold theta at inference, so z = h * 1[h > theta] per token (JumpReLU)."""

from __future__ import annotations

import torch

from sae.base import SAE, ForwardOutput, register


@register
class BatchTopKSAE(SAE):
    arch = "batchtopk"

    def __init__(self, cfg) -> None:
        super().__init__(cfg)
        self.register_buffer("threshold", torch.zeros(cfg.d_sae))  # per latent (loaded JumpReLUs differ)
        self.register_buffer("threshold_updates", torch.zeros((), dtype=torch.long))

    def encode(self, x_BD: torch.Tensor) -> torch.Tensor:
        pre_BF = self.preacts(x_BD)
        return pre_BF * (pre_BF > self.threshold.clamp_min(0))

    @torch.no_grad()
    def select(self, pre_BF: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Indices [B, C] of the batch's top B*k positive pre-activations and a keep mask [B, C].

        Each token first offers its top C = candidates*k values; if some token had all C kept it
        might own more, and the search is redone with C doubled (up to F), so the result is exact."""
        B, F = pre_BF.shape
        n_keep = B * self.cfg.k
        C = min(F, self.cfg.batchtopk_candidates * self.cfg.k)
        while True:
            cand_vals, cand_idx = pre_BF.topk(C, dim=1, sorted=True)
            keep = torch.zeros(B * C, dtype=torch.bool, device=pre_BF.device)
            keep[cand_vals.reshape(-1).topk(min(n_keep, B * C), sorted=False).indices] = True
            keep = keep.view(B, C) & (cand_vals > 0)
            if C == F or not bool(keep[:, -1].any()):
                break
            C = min(F, 2 * C)
        width = int(keep.any(0).nonzero().max()) + 1 if bool(keep.any()) else 1
        return cand_idx[:, :width], keep[:, :width]

    @torch.no_grad()
    def update_threshold(self, vals_BK: torch.Tensor, keep_BK: torch.Tensor) -> None:
        if not bool(keep_BK.any()):
            return
        smallest = vals_BK.detach()[keep_BK].min().float()
        lr = self.cfg.threshold_lr
        self.threshold.copy_(smallest if self.threshold_updates == 0 else (1 - lr) * self.threshold + lr * smallest)
        self.threshold_updates += 1

    def forward(self, x_BD: torch.Tensor, dead_F: torch.Tensor | None = None) -> ForwardOutput:
        pre_BF = self.preacts(x_BD)
        idx_BK, keep_BK = self.select(pre_BF.detach())
        vals_BK = self.preacts_at(x_BD, pre_BF, idx_BK) * keep_BK
        if self.training:
            self.update_threshold(vals_BK, keep_BK)
        return self._sparse_forward(x_BD, pre_BF, vals_BK, idx_BK, dead_F)

"""BatchTopK SAE (Bussmann et al. 2024): top N*k activations over the whole batch while training;
a single global threshold theta at inference, so z = h * 1[h > theta] per token (JumpReLU)."""

from __future__ import annotations

import torch

from ttslens.sae.base import SAE, ForwardOutput, register


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
        """The batch's top B*k positive pre-activations as flat (rows, cols), sorted by row.

        A cut tau is estimated from a strided sample of pre_BF so that ~1.5*B*k entries pass; the exact
        top B*k is then taken among the entries >= tau (if too few pass, tau is lowered, finally to 0).
        Exact, at the cost of one comparison over B*F instead of a sort."""
        B, F = pre_BF.shape
        flat = pre_BF.reshape(-1)
        n_keep = B * self.cfg.k
        sample = flat[:: max(1, flat.numel() // 262_144)]
        for margin in (1.5, 4.0, None):
            if margin is None or margin * n_keep >= flat.numel():
                mask = pre_BF > 0
            else:
                j = max(1, int(margin * n_keep / flat.numel() * sample.numel()))
                tau = sample.topk(j, sorted=False).values.min()
                mask = pre_BF >= tau if tau > 0 else pre_BF > 0
            rows, cols = mask.nonzero(as_tuple=True)  # row-major: rows come sorted
            if rows.numel() >= n_keep or margin is None:
                break
        if rows.numel() > n_keep:
            top = pre_BF[rows, cols].topk(n_keep, sorted=False).indices.sort().values
            rows, cols = rows[top], cols[top]
        return rows, cols

    @torch.no_grad()
    def update_threshold(self, vals_N: torch.Tensor) -> None:
        if vals_N.numel() == 0:
            return
        smallest = vals_N.detach().min().float()
        lr = self.cfg.threshold_lr
        self.threshold.copy_(smallest if self.threshold_updates == 0 else (1 - lr) * self.threshold + lr * smallest)
        self.threshold_updates += 1

    def forward(self, x_BD: torch.Tensor, dead_F: torch.Tensor | None = None) -> ForwardOutput:
        pre_BF = self.preacts(x_BD)
        rows_N, cols_N = self.select(pre_BF.detach())
        vals_N = self.preacts_at(x_BD, pre_BF, cols_N, rows_N)
        if self.training:
            self.update_threshold(vals_N)
        return self._sparse_forward(x_BD, pre_BF, vals_N, cols_N, dead_F, rows_N)

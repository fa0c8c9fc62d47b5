"""TopK SAE: keep the k largest pre-activations of each token (then ReLU)."""

from __future__ import annotations

import torch

from ttslens.sae.base import SAE, ForwardOutput, register


@register
class TopKSAE(SAE):
    arch = "topk"

    def encode_sparse(self, x_BD: torch.Tensor, k: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        pre_BF = self.preacts(x_BD)
        vals_BK, idx_BK = pre_BF.topk(k or self.cfg.k, dim=1, sorted=True)
        return vals_BK.relu(), idx_BK

    def forward(self, x_BD: torch.Tensor, dead_F: torch.Tensor | None = None, target_BD=None) -> ForwardOutput:
        pre_BF = self.preacts(x_BD)
        idx_BK = pre_BF.detach().topk(self.cfg.k, dim=1, sorted=False).indices
        vals_BK = self.preacts_at(x_BD, pre_BF, idx_BK).relu()
        return self._sparse_forward(x_BD, pre_BF, vals_BK, idx_BK, dead_F, target_BD=target_BD)

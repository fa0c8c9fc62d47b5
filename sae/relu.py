"""ReLU SAE with an L1 penalty (the classic baseline; SAELens "standard")."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ttslens.sae.base import SAE, ForwardOutput, fvu_loss, register


@register
class ReluSAE(SAE):
    arch = "relu"
    uses_k = False

    @torch.no_grad()
    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        """Tied init with the encoder scaled by d/F: with about half the latents active at init, the
        first reconstruction is ~x/2 instead of F/(2d) times too large."""
        super().reset_parameters(generator)
        self.W_enc.mul_(min(1.0, self.cfg.d_in / self.cfg.d_sae))

    def encode(self, x_BD: torch.Tensor) -> torch.Tensor:
        return F.linear(x_BD - self.b_dec, self.W_enc, self.b_enc).relu()

    def forward(self, x_BD: torch.Tensor, dead_F: torch.Tensor | None = None, target_BD=None) -> ForwardOutput:
        acts_BF = self.encode(x_BD)
        recon_BD = self.decode(acts_BF)
        # L1 on decoder-norm-weighted activations, per token, in units of the input's RMS norm.
        l1 = (acts_BF * self.W_dec.norm(dim=1)).sum(1).mean() / math.sqrt(self.cfg.d_in)
        terms = {"fvu": fvu_loss(x_BD if target_BD is None else target_BD, recon_BD), "l1": l1}
        return ForwardOutput(recon_BD, acts_BF, None, terms["fvu"] + self.cfg.l1_coeff * l1, terms)

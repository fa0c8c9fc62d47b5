"""KronSAE (arXiv 2505.22255): a Kronecker-factorised encoder with the mAND activation.

Head g has P_g (m x d) and Q_g (n x d); u = P_g x + b_u, v = Q_g x + b_v, and latent (g, i, j)
is mAND(u_i, v_j) = sqrt(u_i v_j) when both are positive, else 0. F = h * m * n; TopK over the F
values; dense decoder. P and Q are stored together as W_uv [h, m + n, d] (rows :m are P).

Encoding never builds the [B, F] matrix: a latent's value is at most its head's
sqrt(max u * max v), so the top-k latents lie in the k heads with the largest such bound;
only those heads are expanded. Encoder cost: d*h*(m+n) + k*m*n per token instead of d*F.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ttslens.sae.base import SAE, ForwardOutput, fvu_loss, register
from ttslens.sae.errors import BadInput

EPS = 1e-12


def mand(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """[..., m] x [..., n] -> [..., m, n]: sqrt(u_i v_j) where u_i > 0 and v_j > 0, else 0."""
    prod = u.unsqueeze(-1) * v.unsqueeze(-2)
    both = (u.unsqueeze(-1) > 0) & (v.unsqueeze(-2) > 0)
    return torch.where(both, prod.clamp_min(EPS).sqrt(), torch.zeros((), dtype=prod.dtype, device=prod.device))


@register
class KronSAE(SAE):
    arch = "kron"

    def __init__(self, cfg) -> None:
        m, n = cfg.kron_m, cfg.kron_n
        if m <= 0 or n <= 0 or cfg.d_sae % (m * n):
            raise BadInput(f"kron needs d_sae divisible by kron_m*kron_n={m * n} (got d_sae={cfg.d_sae})")
        self.m, self.n, self.h = m, n, cfg.d_sae // (m * n)
        super().__init__(cfg)
        del self.W_enc, self.b_enc
        self.W_uv = torch.nn.Parameter(torch.empty(self.h, m + n, cfg.d_in))
        self.b_uv = torch.nn.Parameter(torch.zeros(self.h, m + n))
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        if not hasattr(self, "W_uv"):  # called by the base __init__ before the encoder exists
            return
        F_ = self.cfg.d_sae
        self.W_uv.copy_(torch.randn(self.W_uv.shape, generator=generator) / math.sqrt(2 * F_))
        self.b_uv.zero_()
        P, Q = self.W_uv[:, : self.m], self.W_uv[:, self.m :]
        self.W_dec.copy_((P.unsqueeze(2) + Q.unsqueeze(1)).reshape(F_, -1))
        self.normalize_decoder()
        self.b_dec.zero_()

    @torch.no_grad()
    def scale_encoder(self, c: float) -> None:
        self.W_uv.mul_(c)  # mAND(c u, c v) = c mAND(u, v)
        self.b_uv.mul_(c)

    @torch.no_grad()
    def fold_scale(self, s: float) -> None:
        self.W_uv.mul_(s)
        self.W_dec.div_(s)
        self.b_dec.div_(s)

    def uv(self, x_BD: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """u [B, h, m], v [B, h, n]."""
        uv = F.linear(x_BD - self.b_dec, self.W_uv.reshape(-1, self.cfg.d_in), self.b_uv.reshape(-1))
        uv = uv.view(x_BD.shape[0], self.h, self.m + self.n)
        return uv[..., : self.m], uv[..., self.m :]

    def preacts(self, x_BD: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            u, v = self.uv(x_BD)
            return mand(u, v).reshape(x_BD.shape[0], -1)

    def _at(self, u: torch.Tensor, v: torch.Tensor, idx_BK: torch.Tensor) -> torch.Tensor:
        mn = self.m * self.n
        head, rest = idx_BK // mn, idx_BK % mn
        u_BK = u.reshape(u.shape[0], -1).gather(1, head * self.m + rest // self.n)
        v_BK = v.reshape(v.shape[0], -1).gather(1, head * self.n + rest % self.n)
        return mand(u_BK.unsqueeze(-1), v_BK.unsqueeze(-1)).reshape(idx_BK.shape)

    def preacts_at(
        self, x_BD: torch.Tensor, pre_BF: torch.Tensor | None, idx_BK: torch.Tensor, exact: bool = True
    ) -> torch.Tensor:
        u, v = self.uv(x_BD)
        return self._at(u, v, idx_BK)

    @torch.no_grad()
    def select(self, u: torch.Tensor, v: torch.Tensor, k: int) -> torch.Tensor:
        """Exact top-k latent indices [B, k] via the per-head upper bound."""
        bound_BH = (u.amax(-1).clamp_min(0) * v.amax(-1).clamp_min(0)).sqrt()
        heads_BJ = bound_BH.topk(min(k, self.h), dim=1, sorted=False).indices
        u_sel = u.gather(1, heads_BJ.unsqueeze(-1).expand(-1, -1, self.m))
        v_sel = v.gather(1, heads_BJ.unsqueeze(-1).expand(-1, -1, self.n))
        z = mand(u_sel, v_sel).reshape(u.shape[0], -1)
        local = z.topk(k, dim=1, sorted=True).indices
        mn = self.m * self.n
        return heads_BJ.gather(1, local // mn) * mn + local % mn

    def encode_sparse(self, x_BD: torch.Tensor, k: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        u, v = self.uv(x_BD)
        idx_BK = self.select(u, v, k or self.cfg.k)
        return self._at(u, v, idx_BK), idx_BK

    def forward(self, x_BD: torch.Tensor, dead_F: torch.Tensor | None = None, target_BD=None) -> ForwardOutput:
        u, v = self.uv(x_BD)
        idx_BK = self.select(u.detach(), v.detach(), self.cfg.k)
        vals_BK = self._at(u, v, idx_BK)
        recon_BD = self.decode_sparse(vals_BK, idx_BK)
        terms = {"fvu": fvu_loss(x_BD if target_BD is None else target_BD, recon_BD)}
        return self._with_auxk(x_BD, recon_BD, None, vals_BK, idx_BK, dead_F, terms["fvu"], terms, target_BD)

"""The SAE interface every architecture implements, its config, and the registry by name.

Notation: B tokens, d = d_in, F = d_sae latents, K active latents per token.
Pre-activation h = (x - b_dec) W_enc^T + b_enc; reconstruction x_hat = z W_dec + b_dec.
Both W_enc and W_dec are stored [F, d] (one row per latent, embedding-bag friendly);
SAELens files hold W_enc transposed, see `ttslens.sae.files`.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import asdict, dataclass, fields
from typing import ClassVar, NamedTuple

import torch
import torch.distributed as tdist
from torch import nn

from ttslens.sae.errors import BadInput
from ttslens.sae.sparse_ops import dense_preacts, gather_preacts, sparse_decode


@dataclass
class SAEConfig:
    """Shape and sparsity of one SAE. Fields an architecture does not use are ignored by it."""

    arch: str = "batchtopk"
    """Architecture name: batchtopk | topk | relu | hierarchical | kron."""
    d_in: int = 0
    """Width of the activations the SAE reads (the model's hidden size)."""
    d_sae: int = 4096
    """Number of latents F."""
    k: int = 32
    """Active latents per token (mean per token for batchtopk; the largest level K for hierarchical)."""
    aux_k: int = 0
    """Latents used by the AuxK dead-latent loss; 0 = d_in // 2."""
    aux_coeff: float = 1 / 32
    """Weight of the AuxK loss."""
    l1_coeff: float = 0.3
    """L1 penalty weight (relu architecture only)."""
    threshold_lr: float = 0.01
    """EMA rate of the batchtopk inference threshold (running mean of the smallest kept activation)."""
    kron_m: int = 2
    """kron: rows m of each head's P (m <= n)."""
    kron_n: int = 4
    """kron: rows n of each head's Q; heads h = d_sae / (m * n)."""

    def __post_init__(self) -> None:
        if self.arch not in ARCHITECTURES:
            raise BadInput(f"unknown SAE architecture {self.arch!r}; choose one of {sorted(ARCHITECTURES)}")
        if self.d_in < 0 or self.d_sae <= 0:
            raise BadInput(f"d_sae must be positive (got d_in={self.d_in}, d_sae={self.d_sae})")
        if ARCHITECTURES[self.arch].uses_k and not 0 < self.k <= self.d_sae:
            raise BadInput(f"k must be in 1..d_sae={self.d_sae} (got k={self.k}); lower --k or raise --latents")

    @property
    def aux_k_eff(self) -> int:
        return self.aux_k or max(1, self.d_in // 2)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> SAEConfig:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


class ForwardOutput(NamedTuple):
    """A training forward pass. Sparse architectures give vals/idx [B, K], or flat [N] entries with
    their sorted token index `rows` (batchtopk: the L0 varies per token); dense ones (relu) give the
    [B, F] activation matrix as vals and idx None."""

    recon: torch.Tensor
    vals: torch.Tensor
    idx: torch.Tensor | None
    loss: torch.Tensor
    terms: dict[str, torch.Tensor]
    rows: torch.Tensor | None = None


# ---- data parallel: one batch spread over processes ---------------------------------------------
_GLOBAL_BATCH = False


@contextlib.contextmanager
def global_batch(enabled: bool = True):
    """Inside this block (the trainer's steps under torchrun) "the batch" is every process's batch
    together, in rank order: BatchTopK selects over it and updates its threshold from it, and FVU
    denominators span it. Outside it (or without a process group) each process is on its own."""
    global _GLOBAL_BATCH
    prev = _GLOBAL_BATCH
    _GLOBAL_BATCH = enabled and tdist.is_initialized() and tdist.get_world_size() > 1
    try:
        yield
    finally:
        _GLOBAL_BATCH = prev


def batch_world() -> tuple[int, int]:
    """(rank, world) of the batch's processes: (0, 1) outside `global_batch`."""
    return (tdist.get_rank(), tdist.get_world_size()) if _GLOBAL_BATCH else (0, 1)


def batch_all_reduce(t: torch.Tensor, op: str = "sum") -> torch.Tensor:
    """Reduce `t` (no graph) over the batch's processes, in place; the identity alone."""
    if _GLOBAL_BATCH:
        tdist.all_reduce(t, {"sum": tdist.ReduceOp.SUM, "min": tdist.ReduceOp.MIN}[op])
    return t


def batch_all_gather(t: torch.Tensor) -> torch.Tensor:
    """Concatenate `t` (same shape on every process) over the batch's processes, in rank order."""
    if not _GLOBAL_BATCH:
        return t
    parts = [torch.empty_like(t) for _ in range(tdist.get_world_size())]
    tdist.all_gather(parts, t.contiguous())
    return torch.cat(parts)


def centred_sq_sum(x_BD: torch.Tensor) -> torch.Tensor:
    """sum ||x - mean(x)||^2 over the batch (over every process's rows under `global_batch`)."""
    if not _GLOBAL_BATCH:
        return (x_BD - x_BD.mean(0)).pow(2).sum().clamp_min(1e-12)
    with torch.no_grad():
        x = x_BD.detach().double()
        n = torch.tensor([float(x.shape[0])], dtype=x.dtype, device=x.device)
        stats = torch.cat([x.sum(0), x.pow(2).sum().view(1), n])
        batch_all_reduce(stats)
        sum_x, sum_sq, n = stats[:-2], stats[-2], stats[-1]
        return (sum_sq - sum_x.pow(2).sum() / n).clamp_min(1e-12).to(x_BD.dtype)


def fvu_loss(x_BD: torch.Tensor, recon_BD: torch.Tensor) -> torch.Tensor:
    """Fraction of variance unexplained, centred by the batch mean (scale-free training loss).

    Under `global_batch` each process returns world * its share of the global batch's FVU, so the
    mean over processes (what DDP's gradient averaging differentiates) is exactly that FVU."""
    world = batch_world()[1]
    return world * (x_BD - recon_BD).pow(2).sum() / centred_sq_sum(x_BD)


ARCHITECTURES: dict[str, type[SAE]] = {}


def register(cls: type[SAE]) -> type[SAE]:
    ARCHITECTURES[cls.arch] = cls
    return cls


class SAE(nn.Module):
    """Base class: parameters, init, decoder-norm upkeep, scale folding, dense/sparse decode.

    Subclasses implement `encode` (inference, dense [B, F]) and `forward` (training).
    """

    arch: ClassVar[str] = ""
    uses_k: ClassVar[bool] = True

    def __init__(self, cfg: SAEConfig) -> None:
        super().__init__()
        self.cfg = cfg
        F, d = cfg.d_sae, cfg.d_in
        self.W_enc = nn.Parameter(torch.empty(F, d))
        self.b_enc = nn.Parameter(torch.zeros(F))
        self.W_dec = nn.Parameter(torch.empty(F, d))
        self.b_dec = nn.Parameter(torch.zeros(d))
        self.reset_parameters()

    # ---- init and upkeep -------------------------------------------------------------------
    @torch.no_grad()
    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        """Unit-norm random decoder rows; encoder = decoder (W_enc = W_dec^T in x W_enc form)."""
        self.W_dec.copy_(torch.randn(self.W_dec.shape, generator=generator))
        self.normalize_decoder()
        self.W_enc.copy_(self.W_dec)
        self.b_enc.zero_()
        self.b_dec.zero_()

    @torch.no_grad()
    def normalize_decoder(self) -> None:
        self.W_dec.div_(self.W_dec.norm(dim=1, keepdim=True).clamp_min(1e-8))

    @torch.no_grad()
    def remove_parallel_grads(self) -> None:
        """Project out the gradient component along each (unit) decoder row."""
        if self.W_dec.grad is None:
            return
        W, g = self.W_dec, self.W_dec.grad
        g.sub_((g * W).sum(1, keepdim=True) * W)

    @torch.no_grad()
    def scale_encoder(self, c: float) -> None:
        """Multiply every latent's value by c > 0 (used at init)."""
        self.W_enc.mul_(c)
        self.b_enc.mul_(c)

    @torch.no_grad()
    def fold_scale(self, s: float) -> None:
        """Turn an SAE trained on s*x into one that reads and reconstructs raw x (same latents)."""
        self.W_enc.mul_(s)
        self.W_dec.div_(s)
        self.b_dec.div_(s)

    # ---- shared pieces ---------------------------------------------------------------------
    def preacts(self, x_BD: torch.Tensor) -> torch.Tensor:
        """Dense pre-activations h [B, F] (no autograd graph on the fast path)."""
        return dense_preacts(x_BD - self.b_dec, self.W_enc, self.b_enc)

    def preacts_at(
        self,
        x_BD: torch.Tensor,
        pre_BF: torch.Tensor,
        idx: torch.Tensor,
        rows_N: torch.Tensor | None = None,
        exact: bool = True,
    ) -> torch.Tensor:
        """h at idx ([B, K], or flat with rows_N), differentiable, at O(B K d) backward cost."""
        return gather_preacts(x_BD - self.b_dec, self.W_enc, self.b_enc, pre_BF, idx, rows_N, exact)

    def decode(self, acts_BF: torch.Tensor) -> torch.Tensor:
        return acts_BF @ self.W_dec + self.b_dec

    def decode_sparse(
        self, vals: torch.Tensor, idx: torch.Tensor, rows_N: torch.Tensor | None = None, n_rows: int = 0
    ) -> torch.Tensor:
        return sparse_decode(vals, idx, self.W_dec, rows_N, n_rows) + self.b_dec

    def encode_sparse(self, x_BD: torch.Tensor, k: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-token top-k latents (vals [B, k], idx [B, k]) for the top-k family."""
        raise NotImplementedError(f"{self.arch} has no fixed number of latents per token; use encode")

    def encode(self, x_BD: torch.Tensor, k: int | None = None) -> torch.Tensor:
        """Inference latents, dense [B, F] (the top-k family scatters `encode_sparse`)."""
        vals_BK, idx_BK = self.encode_sparse(x_BD, k)
        out = torch.zeros(x_BD.shape[0], self.cfg.d_sae, dtype=vals_BK.dtype, device=vals_BK.device)
        return out.scatter(1, idx_BK, vals_BK)

    def reconstruct(self, x_BD: torch.Tensor) -> torch.Tensor:
        """Inference reconstruction (what is spliced into a model)."""
        return self.decode(self.encode(x_BD))

    def forward(
        self, x_BD: torch.Tensor, dead_F: torch.Tensor | None = None, target_BD: torch.Tensor | None = None
    ) -> ForwardOutput:
        """A training pass on x_BD; the loss compares the reconstruction with `target_BD` (default x_BD: an SAE
        Boost residual SAE reads x and reconstructs the base SAE's error)."""
        raise NotImplementedError

    # ---- the top-k family's training pass ----------------------------------------------------
    def _sparse_forward(
        self,
        x_BD: torch.Tensor,
        pre_BF: torch.Tensor,
        vals_BK: torch.Tensor,
        idx_BK: torch.Tensor,
        dead_F: torch.Tensor | None,
        rows_N: torch.Tensor | None = None,
        target_BD: torch.Tensor | None = None,
    ) -> ForwardOutput:
        recon_BD = self.decode_sparse(vals_BK, idx_BK, rows_N, x_BD.shape[0])
        terms = {"fvu": fvu_loss(x_BD if target_BD is None else target_BD, recon_BD)}
        out = self._with_auxk(x_BD, recon_BD, pre_BF, vals_BK, idx_BK, dead_F, terms["fvu"], terms, target_BD)
        return out._replace(rows=rows_N)

    def _with_auxk(self, x_BD, recon_BD, pre_BF, vals_BK, idx_BK, dead_F, loss, terms, target_BD=None):
        if dead_F is not None and bool(dead_F.any()):
            terms["auxk"] = self.auxk_loss(x_BD, recon_BD, pre_BF, dead_F, target_BD)
            loss = loss + self.cfg.aux_coeff * terms["auxk"]
        return ForwardOutput(recon_BD, vals_BK, idx_BK, loss, terms)

    def auxk_loss(
        self,
        x_BD: torch.Tensor,
        recon_BD: torch.Tensor,
        pre_BF: torch.Tensor | None,
        dead_F: torch.Tensor,
        target_BD: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Reconstruct the residual (target − recon) from the top dead latents, without b_dec (normalised MSE)."""
        k_aux = min(self.cfg.aux_k_eff, int(dead_F.sum()))
        if pre_BF is None:
            pre_BF = self.preacts(x_BD)
        masked = pre_BF.detach().masked_fill(~dead_F, -math.inf)
        idx_BA = masked.topk(k_aux, dim=1, sorted=False).indices
        vals_BA = self.preacts_at(x_BD, pre_BF, idx_BA, exact=False).relu()  # an auxiliary loss: bf16 values suffice
        e_BD = ((x_BD if target_BD is None else target_BD) - recon_BD).detach()
        e_hat_BD = sparse_decode(vals_BA, idx_BA, self.W_dec)
        return fvu_loss(e_BD, e_hat_BD)  # global-batch aware, like the main term


def make_sae(cfg: SAEConfig) -> SAE:
    if cfg.d_in <= 0:
        raise BadInput(f"d_in must be positive (got {cfg.d_in})")
    return ARCHITECTURES[cfg.arch](cfg)

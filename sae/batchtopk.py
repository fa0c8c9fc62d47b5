"""BatchTopK SAE (Bussmann et al. 2024): top N*k activations over the whole batch while training;
a single global threshold theta at inference, so z = h * 1[h > theta] per token (JumpReLU).

Under torchrun the batch is every process's batch together (`ttslens.sae.base.global_batch`): the
kept set is the one a single process would keep on the concatenated batch, and theta is updated from
that batch's smallest kept value, so replicas need no threshold averaging.
"""

from __future__ import annotations

import math

import torch

from ttslens.sae.base import SAE, ForwardOutput, batch_all_gather, batch_all_reduce, batch_world, register

SAMPLE = 262_144
"""Entries of pre_BF read (strided) to estimate the selection's cut when B*F is larger than twice this."""


def sample_stride(numel: int, F: int) -> int:
    """Stride of the cut-estimating sample over a flat [B, F] tensor: about numel / SAMPLE, made coprime
    to F so the sample visits every latent (a stride that is a multiple of F would read one column)."""
    step = max(1, numel // SAMPLE)
    while step > 1 and math.gcd(step, F) != 1:
        step += 1
    return step


def top_candidates(pre_BF: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A superset of the n largest positive entries of pre_BF (all positives if fewer): their flat indices,
    ascending (row-major), and their values.

    A cut tau from a strided sample lets ~1.5 n entries through; if fewer than n pass, tau is lowered (4 n),
    finally to 0. Every candidate is positive. One comparison and one nonzero over B*F, instead of a sort."""
    flat = pre_BF.reshape(-1)
    sample = flat[:: sample_stride(flat.numel(), pre_BF.shape[-1])]
    for margin in (1.5, 4.0):
        if margin * n >= flat.numel():
            break
        j = max(1, int(margin * n / flat.numel() * sample.numel()))
        tau = sample.topk(j, sorted=False).values.min()
        if tau <= 0:
            break
        idx = (flat >= tau).nonzero().squeeze(1)
        if idx.numel() >= n:
            return idx, flat[idx]
    idx = (flat > 0).nonzero().squeeze(1)
    return idx, flat[idx]


def top_values(pre_BF: torch.Tensor, n: int) -> torch.Tensor:
    """Values of the n largest positive entries of pre_BF (all positives if fewer), unsorted."""
    vals = top_candidates(pre_BF, n)[1]
    return vals.topk(n, sorted=False).values if vals.numel() > n else vals


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
        """The batch's top n = B*k positive pre-activations as flat (rows, cols), sorted by row.

        The cut t is the n-th largest value over the batch (under `global_batch`, over every process's
        rows: each contributes its own top-n candidates). Entries > t are kept; of the entries equal to
        t (ties) the first ones in row-major order of the (concatenated, rank-ordered) batch fill up to
        n, so the kept set is deterministic and the same alone or data-parallel. Fewer than n positive
        entries: all of them are kept."""
        rank, world = batch_world()
        B, F = pre_BF.shape
        n_keep = B * world * self.cfg.k  # every process holds B rows (the trainer splits the batch evenly)
        idx_M, vals_M = top_candidates(pre_BF, n_keep)  # every entry the cut can keep, in row-major order
        if world > 1:
            padded = torch.zeros(n_keep, dtype=vals_M.dtype, device=vals_M.device)  # zeros are never kept
            top = vals_M.topk(n_keep, sorted=False).values if vals_M.numel() > n_keep else vals_M
            padded[: top.numel()] = top
            cand = batch_all_gather(padded)
            n_pos = int(batch_all_reduce((padded > 0).sum().double().view(1)))
        else:
            cand, n_pos = vals_M, vals_M.numel()
        if n_pos < n_keep:  # every process holds fewer than n_keep positives: its candidates are all of them
            keep_M = torch.ones_like(vals_M, dtype=torch.bool)
        else:
            t = cand.topk(n_keep, sorted=False).values.min() if cand.numel() > n_keep else cand.min()
            keep_M, tied_M = vals_M > t, vals_M == t
            counts = torch.stack([keep_M.sum(), tied_M.sum()]).double()
            ties_before = 0
            if world > 1:
                per_rank = batch_all_gather(counts.view(1, 2))  # [world, 2]
                ties_before = int(per_rank[:rank, 1].sum())
                counts = per_rank.sum(0)
            n_short = n_keep - int(counts[0])  # >= 1: t itself is among the top n
            tied = tied_M.nonzero().squeeze(1)
            take = min(max(n_short - ties_before, 0), tied.numel())
            if take:
                keep_M[tied[:take]] = True
        flat_N = idx_M[keep_M]  # ascending: rows come sorted
        return flat_N // F, flat_N % F

    @torch.no_grad()
    def update_threshold(self, vals_N: torch.Tensor) -> None:
        """theta <- (1 - lr) theta + lr * (the batch's smallest kept value); the first update sets it."""
        local = vals_N.detach().min().float() if vals_N.numel() else torch.tensor(math.inf, device=vals_N.device)
        smallest = batch_all_reduce(local.reshape(1).clone(), "min")[0]
        if not math.isfinite(float(smallest)):
            return
        lr = self.cfg.threshold_lr
        self.threshold.copy_(smallest if self.threshold_updates == 0 else (1 - lr) * self.threshold + lr * smallest)
        self.threshold_updates += 1

    @torch.no_grad()
    def calibrate_threshold(self, batches, max_tokens: int = 65536) -> dict:
        """Set theta (every latent) to the mean over `batches` of each batch's BatchTopK cut (its
        (B*k)-th largest pre-activation), computed with the current weights: the quantity the running
        average tracks, without its lag of ~1/threshold_lr steps (on a short run the early, lower cuts
        keep theta low and the inference L0 above k). Reads batches until max_tokens rows.
        Returns {"threshold_ema", "threshold", "calibration_tokens"}."""
        was_training = self.training
        self.eval()
        cuts, n = [], 0
        for x_BD, _ in batches:
            pre_BF = self.preacts(x_BD.to(self.W_enc.device))
            top = top_values(pre_BF, pre_BF.shape[0] * self.cfg.k)
            cuts.append(float(top.min()) if top.numel() == pre_BF.shape[0] * self.cfg.k else 0.0)
            n += pre_BF.shape[0]
            if n >= max_tokens:
                break
        before = float(self.threshold.max())
        if cuts:  # a batch with fewer than B*k positive values: its cut is 0 (all of them are kept)
            self.threshold.fill_(sum(cuts) / len(cuts))
        self.train(was_training)
        return {"threshold_ema": before, "threshold": float(self.threshold.max()), "calibration_tokens": n}

    def forward(self, x_BD: torch.Tensor, dead_F: torch.Tensor | None = None, target_BD=None) -> ForwardOutput:
        pre_BF = self.preacts(x_BD)
        rows_N, cols_N = self.select(pre_BF.detach())
        vals_N = self.preacts_at(x_BD, pre_BF, cols_N, rows_N)
        if self.training:
            self.update_threshold(vals_N)
        return self._sparse_forward(x_BD, pre_BF, vals_N, cols_N, dead_F, rows_N, target_BD)

"""The one sampler: temperature, top-k and nucleus (top-p) draws, one seeded generator per row.

Used by every generation loop (TTS backbones, text LMs). Each row draws from its own CPU generator,
so a row's sample depends only on its seed and its logits, whatever the batch, device or dtype;
a steered and an unsteered run with the same seed share their randomness.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


def generators(seeds: Sequence[int]) -> list[torch.Generator]:
    return [torch.Generator().manual_seed(int(s)) for s in seeds]


def filter_logits(
    logits_BV: torch.Tensor, temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0
) -> torch.Tensor:
    """Probabilities [B, V] after temperature, top-k and nucleus filtering (float32)."""
    logits_BV = logits_BV.float() / max(temperature, 1e-8)
    V = logits_BV.shape[-1]
    if 0 < top_k < V:
        kth_B1 = logits_BV.topk(top_k, dim=-1).values[:, -1:]
        logits_BV = logits_BV.masked_fill(logits_BV < kth_B1, float("-inf"))
    probs_BV = logits_BV.softmax(-1)
    if top_p < 1.0:
        p_sorted, order = probs_BV.sort(dim=-1, descending=True)
        drop = p_sorted.cumsum(-1) - p_sorted > top_p
        probs_BV = probs_BV.scatter(-1, order, p_sorted.masked_fill(drop, 0.0))
    return probs_BV


def sample(
    logits_BV: torch.Tensor,
    gens: Sequence[torch.Generator],
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    fallback: int = 0,
) -> torch.Tensor:
    """One id per row [B] (on the logits' device); greedy at temperature 0.

    Non-finite logits (an extreme edit) are never sampled: NaN counts as -inf, and a row with nothing
    finite returns `fallback` (a stop / end-of-sequence id, chosen by the caller)."""
    device = logits_BV.device
    logits_BV = logits_BV.detach().float().cpu()
    bad_B = ~torch.isfinite(logits_BV).any(-1)
    logits_BV = torch.nan_to_num(logits_BV, nan=float("-inf"), posinf=1e30)
    logits_BV[bad_B] = 0.0
    if temperature <= 0:
        ids_B = logits_BV.argmax(-1)
    else:
        probs_BV = filter_logits(logits_BV, temperature, top_k, top_p)
        ids_B = torch.stack([torch.multinomial(probs_BV[b], 1, generator=g)[0] for b, g in enumerate(gens)])
    ids_B[bad_B] = fallback
    return ids_B.to(device)

"""What a steering vector (or any residual direction, e.g. an SAE feature's decoder row) does, read off the model.

- `logit_lens(u_D, norm, head)`: the direction through the final norm and the unembedding, logits = W_U · norm(u);
  its top boosted and suppressed tokens (arXiv 2509.06608 reads "To", "Step" off its math vectors this way).
- `sae_view(u_D, sae, labels)`: the direction against an SAE's decoder rows: the features it is most aligned with
  (cosine and projection), with their labels.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from ttslens.sae.errors import BadInput


@torch.no_grad()
def lens_logits(u_D: torch.Tensor, norm: Callable | None, head) -> torch.Tensor:
    """head(norm(u)) [V]: `head` an unembedding matrix W_U [V, d] or a callable (a TTS backbone's speech head);
    norm None: the raw direction."""
    if torch.is_tensor(head):
        W = head
        head = lambda x: x @ W.T  # noqa: E731
        x = u_D.detach().to(W.device, W.dtype)[None]
    else:
        x = u_D.detach()[None]
    if norm is not None:
        p = next(iter(norm.parameters()), None) if isinstance(norm, torch.nn.Module) else None
        x = norm(x.to(p) if p is not None else x)
    return head(x)[0].float().cpu()


def logit_lens(u_D, norm, head, names: Callable[[Sequence[int]], list[str]], k: int = 10) -> dict:
    """Top-k boosted and suppressed tokens of a direction: [{"id", "token", "logit"}], best first."""
    lg = lens_logits(u_D, norm, head)
    k = min(k, lg.numel())
    up, down = lg.topk(k), (-lg).topk(k)
    rows = lambda idx, vals, sign: [  # noqa: E731
        {"id": int(i), "token": t, "logit": round(sign * float(v), 4)}
        for i, v, t in zip(idx, vals, names(idx.tolist()), strict=True)
    ]
    return {"boosted": rows(up.indices, up.values, 1), "suppressed": rows(down.indices, down.values, -1)}


@torch.no_grad()
def sae_view(u_D: torch.Tensor, sae, labels: dict[int, dict] | None = None, k: int = 10) -> dict:
    """The SAE features whose decoder rows the direction is most aligned with (by |cosine|), with the projection
    of the direction on each row (in multiples of the row's norm) and the feature's label."""
    W = sae.W_dec.detach().float().cpu()
    u = u_D.detach().float().cpu()
    if W.shape[1] != u.numel():
        raise BadInput(f"the SAE is {W.shape[1]}-wide but the vector is {u.numel()}-wide: use an SAE of this model")
    cos = (W @ u) / (W.norm(dim=1) * u.norm()).clamp_min(1e-12)
    top = cos.abs().topk(min(k, cos.numel())).indices
    labels = labels or {}
    return {
        "features": [
            {
                "feature": int(f),
                "cosine": round(float(cos[f]), 4),
                "projection": round(float(W[f] @ u / W[f].pow(2).sum().clamp_min(1e-12)), 4),
                "label": (labels.get(int(f)) or {}).get("label", ""),
            }
            for f in top
        ],
        "max_abs_cosine": round(float(cos.abs().max()), 4),
    }

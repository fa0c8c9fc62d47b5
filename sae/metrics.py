"""SAE quality metrics, overall and per modality slice, and downstream CE with the SAE spliced in.

Explained variance is centred by the mean (EV = 1 - sum||x - x_hat||^2 / sum||x - mean(x)||^2),
accumulated over batches with exact sums so the result does not depend on the batch size.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch

from ttslens.sae.activations import MODALITIES
from ttslens.sae.base import SAE


class Accumulator:
    """Running sums for EV/FVU, MSE, L0, cosine and per-latent firing counts over one slice."""

    def __init__(self, d_sae: int) -> None:
        self.n = 0
        self.sse = 0.0
        self.sum_x: torch.Tensor | None = None
        self.sum_sq = 0.0
        self.l0 = 0.0
        self.cos = 0.0
        self.fired = torch.zeros(d_sae, dtype=torch.long)

    def add(self, x_BD: torch.Tensor, recon_BD: torch.Tensor, acts_BF: torch.Tensor) -> None:
        x, r = x_BD.double(), recon_BD.double()
        self.n += x.shape[0]
        self.sse += (x - r).pow(2).sum().item()
        self.sum_x = x.sum(0) if self.sum_x is None else self.sum_x + x.sum(0)
        self.sum_sq += x.pow(2).sum().item()
        active = acts_BF > 0
        self.l0 += active.sum().item()
        self.cos += torch.nn.functional.cosine_similarity(x, r, dim=1).sum().item()
        self.fired += active.sum(0).cpu()

    def result(self) -> dict[str, float]:
        if self.n == 0:
            return {"tokens": 0}
        var = self.sum_sq - self.sum_x.pow(2).sum().item() / self.n  # sum ||x - mean||^2
        # a slice with (nearly) constant activations, e.g. BOS positions, has no variance to explain
        fvu = self.sse / var if var > 1e-6 * self.sum_sq else None
        return {
            "tokens": self.n,
            "explained_variance": None if fvu is None else 1 - fvu,
            "fvu": fvu,
            "mse": self.sse / self.n / self.sum_x.shape[0],
            "l0": self.l0 / self.n,
            "cosine": self.cos / self.n,
            "dead_frac": (self.fired == 0).float().mean().item(),
            "dense_frac": (self.fired > 0.5 * self.n).float().mean().item(),
        }


@torch.no_grad()
def evaluate(sae: SAE, batches: Iterable[tuple[torch.Tensor, dict]], encode_kwargs: dict | None = None) -> dict:
    """Metrics of `sae` (inference mode) over batches; per modality when batches carry `modality`."""
    sae.eval()
    overall = Accumulator(sae.cfg.d_sae)
    per: dict[int, Accumulator] = {}
    for x_BD, meta in batches:
        acts_BF = sae.encode(x_BD, **(encode_kwargs or {}))
        recon_BD = sae.decode(acts_BF)
        overall.add(x_BD, recon_BD, acts_BF)
        if "modality" in meta:
            for m in meta["modality"].unique().tolist():
                sel = meta["modality"] == m
                per.setdefault(m, Accumulator(sae.cfg.d_sae)).add(x_BD[sel], recon_BD[sel], acts_BF[sel])
    out = overall.result()
    if per:
        out["by_modality"] = {MODALITIES[m]: acc.result() for m, acc in sorted(per.items())}
    return out


def ce_recovered_with(ce, sae: SAE, layer: int) -> dict[str, float]:
    """The one CE-recovered: `ce(edits)` is a model's CE under a list of hook edits (`ttslens.sae.hooks`);
    clean (no edit), the SAE's reconstruction spliced in after `layer` at every position, that residual
    zero-ablated; CE recovered = (CE_zero - CE_sae) / (CE_zero - CE_clean)."""
    from ttslens.sae.hooks import Edit

    def splice(h_ND: torch.Tensor) -> torch.Tensor:
        return sae.reconstruct(h_ND.float()).to(h_ND.dtype)

    clean, spliced, zero = ce([]), ce([Edit(layer, splice)]), ce([Edit(layer, torch.zeros_like)])
    return {
        "ce_clean": clean,
        "ce_sae": spliced,
        "ce_zero": zero,
        "ce_recovered": (zero - spliced) / max(zero - clean, 1e-12),
    }


@torch.no_grad()
def ce_recovered(
    model,
    sae: SAE,
    layer: int,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
) -> dict[str, float]:
    """`ce_recovered_with` for a Hugging Face causal LM's next-token CE (padding excluded)."""
    return ce_recovered_with(TextLMEvaluator(model, input_ids, attention_mask).ce, sae, layer)


class TextLMEvaluator:
    """A causal LM on one padded batch: residuals after layers (padding dropped) and next-token CE under
    hook edits (`ttslens.sae.hooks`)."""

    def __init__(self, model, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> None:
        self.model, self.ids = model, input_ids
        self.mask = attention_mask if attention_mask is not None else torch.ones_like(input_ids)
        self.labels = input_ids.masked_fill(self.mask == 0, -100)

    @torch.no_grad()
    def acts(self, layers) -> dict[int, torch.Tensor]:
        from ttslens.sae.hooks import Hooks, residual_layers

        hooks = Hooks(residual_layers(self.model), record=list(layers), stop_after=max(layers))
        hooks.run(lambda: self.model(input_ids=self.ids, attention_mask=self.mask))
        keep = self.mask.bool()
        return {i: v[keep.to(v.device)].float().cpu() for i, v in hooks.hidden().items()}

    @torch.no_grad()
    def ce(self, edits) -> float:
        from ttslens.sae.hooks import Hooks, residual_layers

        with Hooks(residual_layers(self.model), edits=edits):
            return self.model(input_ids=self.ids, attention_mask=self.mask, labels=self.labels).loss.item()

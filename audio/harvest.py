"""Residual-stream activations of a TTS backbone, teacher-forced over a corpus of (text, speech tokens).

`BackboneActivations` is a source for `sae.activations.BatchStream`: every row carries the modality of
its position (text / speech / special), the token id, the corpus item and, for speech, its time.
`train_sae` is `sae.training.train` with `--backbone` resolved here (sae/ never imports audio/).
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from ttslens.audio.backbones.base import TTSBackbone
from ttslens.sae.activations import Block
from ttslens.sae.errors import BadInput
from ttslens.sae.hooks import check_layer


class CorpusItem(NamedTuple):
    text: str
    instruct: str | None
    tokens: torch.Tensor  # [T] speech tokens
    truth: dict  # whatever the corpus knows (voice, gender, rate, laughter spans, ...)


class BackboneActivations:
    """Teacher-forced activations after `layer`, corpus item by item (cycling)."""

    def __init__(self, backbone: TTSBackbone, items: list[CorpusItem], layer: int) -> None:
        check_layer(layer, backbone.n_layers)
        if not items:
            raise BadInput("the corpus is empty")
        self.backbone, self.items, self.layer, self.d = backbone, items, layer, backbone.d_model

    def start_state(self, rank: int = 0, world: int = 1) -> dict:
        return {"item": rank, "stride": world}

    def rows(self, index: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Activations [N, d] of one corpus item and its per-row metadata."""
        it = self.items[index % len(self.items)]
        tf = self.backbone.teacher_forced(it.text, it.tokens, it.instruct, layers=[self.layer])
        seq = tf.sequence
        n = len(seq)
        meta = {
            "modality": seq.modality,
            "token_id": seq.ids,
            "item": torch.full((n,), index % len(self.items), dtype=torch.int32),
            "time": seq.times,
        }
        return tf.hidden[self.layer], meta

    def block(self, state: dict, n_rows: int) -> Block:
        acts, metas, i, total = [], [], state["item"], 0
        while total < n_rows:
            a, m = self.rows(i)
            acts.append(a)
            metas.append(m)
            total += a.shape[0]
            i += state["stride"]
        meta = {k: torch.cat([m[k] for m in metas]) for k in metas[0]}
        return Block(torch.cat(acts), meta, {"item": i, "stride": state["stride"]})


def backbone_sources(name: str, layer: int):
    """(train source, held-out source, metadata) for `sae.training.train`."""
    from ttslens.audio import load_backbone

    bb = load_backbone(name)
    train_items, held = bb.corpus("train"), bb.corpus("heldout")
    info = {
        "model_name": f"ttslens/{bb.name}" if name == bb.name else name,
        "backbone": name,
        "layer": layer,
        "hook_name": f"layers.{layer}",
        "dataset_path": f"{name} corpus (teacher-forced)",
    }
    src = BackboneActivations(bb, train_items, layer)
    return src, BackboneActivations(bb, held or train_items, layer), info


@torch.no_grad()
def speech_ce(backbone: TTSBackbone, sae, layer: int, items: list[CorpusItem]) -> dict[str, float]:
    """Cross-entropy of the speech tokens (and the stop) teacher-forced: clean, with the SAE's
    reconstruction replacing the residual after `layer` at every position, and with it zeroed;
    CE recovered = (CE_zero - CE_sae) / (CE_zero - CE_clean)."""
    from ttslens.audio.backbones.base import Intervention

    def ce(interventions) -> float:
        total, n = 0.0, 0
        for it in items:
            tf = backbone.teacher_forced(it.text, it.tokens, it.instruct, interventions=interventions)
            n_sp = len(it.tokens)
            logits = tf.logits[-n_sp - 1 :]  # from the last prefix position on
            targets = torch.cat([it.tokens, torch.tensor([backbone.n_speech])])
            total += float(torch.nn.functional.cross_entropy(logits, targets, reduction="sum"))
            n += n_sp + 1
        return total / n

    recon = Intervention(layer, lambda h: sae.reconstruct(h.float()).to(h.dtype), scope="all")
    zero = Intervention(layer, torch.zeros_like, scope="all")
    clean, spliced, zeroed = ce([]), ce([recon]), ce([zero])
    return {
        "ce_clean": clean,
        "ce_sae": spliced,
        "ce_zero": zeroed,
        "ce_recovered": (zeroed - spliced) / max(zeroed - clean, 1e-12),
    }


def train_sae(cfg, progress: bool = True):
    """`sae.training.train`, resolving `cfg.backbone` to a teacher-forced backbone source; for a
    backbone the metrics add the speech-token CE with the SAE spliced in (held-out items)."""
    from ttslens.sae.training import train

    if not cfg.backbone:
        return train(cfg, progress=progress)
    src, held, info = backbone_sources(cfg.backbone, cfg.layer)
    res = train(cfg, source=(src, held, info), progress=progress)
    res.metrics["speech_ce"] = speech_ce(held.backbone, res.sae.cpu(), cfg.layer, held.items[:32])
    return res

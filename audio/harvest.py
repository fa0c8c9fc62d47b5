"""Residual-stream activations of a TTS backbone, teacher-forced over a corpus (`ttslens.audio.corpus`).

`BackboneActivations` is a source for `ttslens.sae.activations.BatchStream`: items go through the
backbone in padded batches, and every row carries the modality of its position (text / speech /
special), its token id, the corpus item and, for speech, its time. `train_sae` is
`ttslens.sae.training.train` with `--backbone` resolved here (ttslens.sae never imports ttslens.audio).
"""

from __future__ import annotations

import sys

import torch

from ttslens.audio.backbones.base import TTSBackbone
from ttslens.audio.corpus import CorpusItem, load_corpus, with_tokens
from ttslens.sae.activations import Block
from ttslens.sae.errors import BadInput
from ttslens.sae.hooks import check_layer, hook_name

__all__ = ["BackboneActivations", "BackboneEvaluator", "CorpusItem", "backbone_sources", "run_match", "speech_ce"]
__all__ += ["train_sae"]


class BackboneActivations:
    """Teacher-forced activations after `layer`, corpus item by item (cycling), `batch` items per pass."""

    def __init__(
        self, backbone: TTSBackbone, items: list[CorpusItem], layer: int, batch: int = 8, hook: str = "resid"
    ) -> None:
        check_layer(layer, backbone.n_layers)
        if not items:
            raise BadInput("the corpus is empty")
        self.backbone, self.items, self.layer, self.d, self.batch = backbone, items, layer, backbone.d_model, batch
        self.hook = hook

    def start_state(self, rank: int = 0, world: int = 1) -> dict:
        return {"item": rank, "stride": world}

    def item(self, index: int) -> CorpusItem:
        i = index % len(self.items)
        it = self.items[i]
        if it.tokens is None:  # audio only: its speech tokens, once
            it = self.items[i] = with_tokens(it, self.backbone)
        return it

    def rows_batch(self, indices: list[int]) -> list[tuple[torch.Tensor, dict[str, torch.Tensor]]]:
        """Activations [N, d] and per-row metadata of several corpus items (one padded pass)."""
        its = [self.item(i) for i in indices]
        tfs = self.backbone.teacher_forced_batch(
            [(it.text, it.tokens, it.instruct) for it in its], layers=[self.layer], logits=False, hook=self.hook
        )
        out = []
        for index, tf in zip(indices, tfs, strict=True):
            seq = tf.sequence
            n = len(seq)
            meta = {
                "modality": seq.modality,
                "token_id": seq.token_ids,
                "item": torch.full((n,), index % len(self.items), dtype=torch.int32),
                "time": seq.times,
            }
            out.append((tf.hidden[self.layer], meta))
        return out

    def rows(self, index: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        return self.rows_batch([index])[0]

    def block(self, state: dict, n_rows: int) -> Block:
        acts, metas, i, total = [], [], state["item"], 0
        while total < n_rows:
            idx = [i + j * state["stride"] for j in range(self.batch)]
            for a, m in self.rows_batch(idx):
                acts.append(a)
                metas.append(m)
                total += a.shape[0]
            i += self.batch * state["stride"]
        meta = {k: torch.cat([m[k] for m in metas]) for k in metas[0]}
        return Block(torch.cat(acts), meta, {"item": i, "stride": state["stride"]})


def backbone_sources(
    name: str, layer: int, corpus: str | None = None, device: str = "cpu", dtype: str = "float32", hook: str = "resid"
):
    """(train source, held-out source, metadata) for `ttslens.sae.training.train`."""
    from ttslens.audio.backbones.registry import load_backbone

    bb = load_backbone(name, device=device, dtype=dtype)
    data = load_corpus(corpus, backbone=bb)
    train_items, held = data.items("train"), data.items("heldout")
    info = {
        "model_name": f"ttslens/{bb.name}" if name == bb.name else name,
        "backbone": name,
        "layer": layer,
        "hook_name": hook_name(layer, hook),
        "dataset_path": f"{corpus or name} corpus (teacher-forced)",
    }
    src = BackboneActivations(bb, train_items, layer, hook=hook)
    return src, BackboneActivations(bb, held or train_items, layer, hook=hook), info


@torch.no_grad()
def speech_ce(backbone: TTSBackbone, sae, layer: int, items: list[CorpusItem]) -> dict[str, float]:
    """Cross-entropy of the speech tokens (and the stop) teacher-forced: clean, with the SAE's
    reconstruction replacing the residual after `layer` at every position, and with it zeroed
    (`ttslens.sae.metrics.ce_recovered_with`)."""
    from ttslens.sae.metrics import ce_recovered_with

    return ce_recovered_with(BackboneEvaluator(backbone, items).ce, sae.to(backbone.device), layer)


class BackboneEvaluator:
    """A TTS backbone on corpus items: residuals after layers (every position) and the speech-token CE
    (`speech_nll`, the stop included) under hook edits — what `ttslens.sae.match` measures layer skipping on."""

    def __init__(self, backbone: TTSBackbone, items: list[CorpusItem]) -> None:
        self.bb, self.items = backbone, [with_tokens(it, backbone) for it in items]

    @torch.no_grad()
    def acts(self, layers) -> dict[int, torch.Tensor]:
        out: dict[int, list[torch.Tensor]] = {i: [] for i in layers}
        for k in range(0, len(self.items), 8):
            chunk = [(it.text, it.tokens, it.instruct) for it in self.items[k : k + 8]]
            for tf in self.bb.teacher_forced_batch(chunk, layers=list(layers), logits=False):
                for i in layers:
                    out[i].append(tf.hidden[i])
        return {i: torch.cat(v) for i, v in out.items()}

    @torch.no_grad()
    def ce(self, edits) -> float:
        total, n = 0.0, 0
        for it in self.items:
            tf = self.bb.teacher_forced(it.text, it.tokens, it.instruct, interventions=edits)
            s, c = self.bb.speech_nll(tf, self.bb.as_tokens(it.tokens))
            total, n = total + s, n + c
        return total / n


def run_match(cfg):
    """`ttslens match`: `ttslens.sae.match.run_match`, evaluated on the SAEs' TTS backbone (its held-out
    corpus items) or their text LM (its dataset), whichever they were trained on."""
    from ttslens.audio.backbones.registry import backbone_spec, load_backbone
    from ttslens.sae import match

    _, _, infos = match.load_chain(cfg.sae)
    evaluator = None
    if cfg.items:
        spec = backbone_spec(cfg.backbone, cfg.model_dir) or infos[0].get("backbone")
        model_id = infos[0].get("model_name") or infos[0].get("train", {}).get("model")
        if spec:
            bb = load_backbone(spec, device=cfg.device, dtype=cfg.dtype)
            items = load_corpus(None, backbone=bb).items("heldout")[: cfg.items]
            evaluator = BackboneEvaluator(bb, items)
        elif model_id and not str(model_id).startswith("ttslens/"):
            from ttslens.sae.lm.harvest import eval_batch, load_model, load_text_dataset
            from ttslens.sae.metrics import TextLMEvaluator

            train = infos[0].get("train", {})
            column = train.get("text_column", "text")
            model, tok = load_model(model_id, cfg.device, cfg.dtype)
            ds = load_text_dataset(train.get("dataset", ""), text_column=column)
            ids, mask = eval_batch(tok, ds, column, cfg.items, train.get("context", 256), model.device)
            evaluator = TextLMEvaluator(model, ids, mask)
    return match.run_match(cfg, evaluator)


def run_eval(cfg):
    """`ttslens eval`: `ttslens.sae.commands.run_eval`, or on a TTS backbone's held-out corpus (per modality) with
    the speech-token CE (--ce-sequences items) when the SAE was trained on one (or --backbone is given)."""
    from ttslens.audio.backbones.registry import backbone_spec
    from ttslens.sae import commands
    from ttslens.sae.activations import BatchStream, take_tokens
    from ttslens.sae.files import atomic_write_json, load_sae, sae_info
    from ttslens.sae.hooks import hook_of
    from ttslens.sae.metrics import evaluate

    info = sae_info(cfg.sae)
    spec = backbone_spec(cfg.backbone, cfg.model_dir)
    if not spec and not (cfg.activations or cfg.model):
        spec = info.get("backbone") or ""
    if not spec:
        return commands.run_eval(cfg)
    sae, layer, hook = load_sae(cfg.sae, cfg.device), int(info.get("layer") or 0), hook_of(info.get("hook_name"))
    _, held, _ = backbone_sources(spec, layer, None, cfg.device, cfg.dtype, hook)
    if held.d != sae.cfg.d_in:
        raise BadInput(f"SAE d_in={sae.cfg.d_in} does not match the width {held.d} of {spec}: use one of its SAEs")
    metrics = {"sae": cfg.sae, "backbone": spec}
    metrics |= evaluate(sae.cpu(), take_tokens(BatchStream(held, 4096, 65536, cfg.seed), cfg.tokens))
    if cfg.ce_sequences and hook == "resid":
        metrics["speech_ce"] = speech_ce(held.backbone, sae, layer, held.items[: cfg.ce_sequences])
    metrics |= commands.l0_vs_k(sae, metrics, commands._recorded_k(cfg.sae))
    if cfg.out:
        atomic_write_json(cfg.out, metrics)
    return metrics


def run_boost(cfg):
    """`ttslens boost`: `ttslens.sae.boost.run_boost`; for a TTS backbone the data are its teacher-forced
    corpus and the CE is the speech-token CE (held-out items) with each SAE spliced in."""
    from ttslens.audio.backbones.registry import backbone_spec
    from ttslens.sae import boost

    if not cfg.backbone:
        return boost.run_boost(cfg)
    boost.check_base(cfg)
    spec = backbone_spec(cfg.backbone, cfg.model_dir)
    domain = backbone_sources(spec, cfg.layer, cfg.corpus or None, cfg.device, cfg.model_dtype, cfg.hook)
    general, general_train = domain[1], None
    if cfg.general:
        general_train, general, _ = backbone_sources(
            spec, cfg.layer, cfg.general, cfg.device, cfg.model_dtype, cfg.hook
        )
    held = domain[1]
    ce = None
    if cfg.hook == "resid":

        def ce(sae):
            return speech_ce(held.backbone, sae, cfg.layer, held.items[:32])

    return boost.run_boost(cfg, boost.BoostData(domain, general, ce, general_train))


def run_harvest(cfg):
    """`ttslens harvest`: a text LM's activations (`ttslens.sae.commands.run_harvest`), or a TTS backbone's,
    teacher-forced over --dataset (text, audio) pairs or its own corpus."""
    from ttslens.audio.backbones.registry import backbone_spec
    from ttslens.sae import commands
    from ttslens.sae.harvest import harvest

    if not cfg.backbone:
        return commands.run_harvest(cfg)
    spec = backbone_spec(cfg.backbone, cfg.model_dir)
    src, _, info = backbone_sources(spec, cfg.layer, cfg.dataset or None, cfg.device, cfg.model_dtype, cfg.hook)
    src.batch = cfg.model_batch
    meta = {"backbone": spec, "layer": cfg.layer, "dataset": cfg.dataset or "default", "dtype": cfg.dtype}
    with torch.no_grad():
        return harvest(src, cfg.out, cfg.tokens, cfg.shard_tokens, cfg.dtype, meta | {"hook_name": info["hook_name"]})


def train_sae(cfg, progress: bool = True):
    """`ttslens.sae.training.train`, resolving `cfg.backbone` to a teacher-forced backbone source; for a
    backbone the metrics add the speech-token CE with the SAE spliced in (held-out items)."""
    from ttslens.sae.training import train

    if not cfg.backbone:
        return train(cfg, progress=progress)
    from ttslens.audio.backbones.registry import backbone_spec

    spec = backbone_spec(cfg.backbone, cfg.model_dir)
    if progress:
        print(f"loading backbone {spec} and its corpus ...", file=sys.stderr, flush=True)
    src, held, info = backbone_sources(spec, cfg.layer, cfg.corpus or None, cfg.device, cfg.model_dtype, cfg.hook)
    res = train(cfg, source=(src, held, info), progress=progress)
    if cfg.hook == "resid":  # the CE with the reconstruction spliced into the residual stream
        res.metrics["speech_ce"] = speech_ce(held.backbone, res.sae, cfg.layer, held.items[:32])
    else:
        from ttslens.sae.notes import note

        note(f"speech CE with the SAE spliced in is measured for residual SAEs only (this one reads {cfg.hook})")
    return res

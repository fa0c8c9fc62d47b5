"""`ttslens eval` and `ttslens harvest`: configs and the functions behind them (API = CLI)."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import torch

from ttslens.sae.activations import BatchStream, CachedActivations, take_tokens
from ttslens.sae.errors import BadInput
from ttslens.sae.files import atomic_write_json, load_sae, read_cfg, sae_info
from ttslens.sae.hooks import hook_name
from ttslens.sae.metrics import ce_recovered, evaluate


@dataclass
class EvalConfig:
    """Evaluate a trained SAE: EV/FVU, MSE, L0, dead/dense latents (per modality), CE recovered."""

    sae: str = ""
    """SAE directory (ttslens or SAELens)."""
    activations: str = ""
    """Cached activations to evaluate on (default: the SAE's own held-out data if recorded)."""
    model: str = ""
    """Causal LM for CE recovered and for harvesting (default: the SAE's source model)."""
    dataset: str = ""
    """Text dataset for --model (default: the SAE's training dataset)."""
    backbone: str = ""
    """A TTS backbone to evaluate on (its held-out corpus, speech-token CE; default: the SAE's, when it records one
    and neither --activations nor --model is given)."""
    model_dir: str = ""
    """The backbone's model directory or hub id (the same as --backbone NAME:DIR)."""
    tokens: int = 65536
    """Tokens to evaluate on."""
    ce_sequences: int = 16
    """Sequences for the CE-recovered measurement (0 = skip)."""
    seed: int = 1
    """Seed for the evaluation sample."""
    out: str = ""
    """Write the metrics here as JSON (default: print only)."""
    device: str = "cpu"
    """Torch device for --model: cpu, cuda, cuda:N or auto."""
    dtype: str = "float32"
    """--model weights' dtype: float32, bfloat16 or float16."""

    def __post_init__(self) -> None:
        if not self.sae:
            raise BadInput("--sae DIR is required")


L0_NOTE_FRAC = 0.25
"""`l0_vs_k` adds a note when the measured L0 differs from the training k by more than this fraction."""


def l0_vs_k(sae, metrics: dict, k: int | None = None) -> dict:
    """`k` (the training sparsity) to report beside the measured `l0`, and `l0_note` when they differ
    by more than 25%. Nothing for architectures without a k (relu) or files that do not record one.

    A BatchTopK SAE keeps k latents per token *on average over a training batch*; at inference one
    threshold replaces that cut (ttslens sets it at the end of training so L0 = k on training rows), so
    on other data, or one modality of it, L0 legitimately differs from k. A TopK SAE has L0 <= k."""
    k = sae.cfg.k if k is None else k
    l0 = metrics.get("l0")
    if not sae.uses_k or not k or l0 is None:
        return {}
    out = {"k": k}
    if abs(l0 - k) > L0_NOTE_FRAC * k:
        why = (
            "the inference threshold replaces the training batch's top-N*k cut, so L0 follows how strongly "
            "these rows activate the latents (recalibrate with a new `ttslens train` if this is the training "
            "distribution)"
            if sae.cfg.arch == "batchtopk"
            else "fewer than k latents have a positive pre-activation on many rows"
        )
        out["l0_note"] = f"L0 {l0:.1f} differs from the training k={k} by {abs(l0 - k) / k:.0%}: {why}"
    return out


def run_eval(cfg: EvalConfig) -> dict:
    """Metrics of an SAE on cached activations or a model's text; `k` beside L0 (see `l0_vs_k`)."""
    sae = load_sae(cfg.sae)
    info = sae_info(cfg.sae)
    train = info.get("train", {})
    activations = cfg.activations or (train.get("activations") if not cfg.model else "")
    model_id = cfg.model or (train.get("model") if not cfg.activations else "")
    layer = int(info.get("layer", train.get("layer", 0)) or 0)
    metrics: dict = {"sae": cfg.sae}
    if activations:
        src = CachedActivations(activations)
        _check_width(sae, src.d, activations)
        metrics.update(evaluate(sae, take_tokens(BatchStream(src, 4096, 65536, cfg.seed), cfg.tokens)))
    elif model_id:
        from ttslens.sae.lm.harvest import ModelActivations, eval_batch, load_model, load_text_dataset

        model, tok = load_model(model_id, cfg.device, cfg.dtype)
        _check_width(sae, model.config.hidden_size, model_id)
        ds = load_text_dataset(cfg.dataset or train.get("dataset", ""), text_column=train.get("text_column", "text"))
        src = ModelActivations(model, tok, ds, layer, train.get("context", 256))
        metrics.update(evaluate(sae, take_tokens(BatchStream(src, 1024, 16384, cfg.seed), cfg.tokens)))
        if cfg.ce_sequences:
            column, context = train.get("text_column", "text"), train.get("context", 256)
            ids, mask = eval_batch(tok, ds, column, cfg.ce_sequences, context, model.device)
            metrics.update(ce_recovered(model, sae, layer, ids, mask))
    else:
        raise BadInput("nothing to evaluate on: pass --activations PATH or --model ID --dataset NAME")
    metrics.update(l0_vs_k(sae, metrics, _recorded_k(cfg.sae)))
    if cfg.out:
        atomic_write_json(cfg.out, metrics)
    return metrics


def _recorded_k(path: str) -> int | None:
    """The k an SAE directory records: ttslens's SAEConfig, else SAELens's `k` (jumprelu files have none)."""
    cfg = read_cfg(path)
    k = cfg.get("ttslens", {}).get("sae", {}).get("k") or cfg.get("k")
    return int(k) if k else 0  # 0: do not fall back to the loader's placeholder k


def _check_width(sae, d: int, where: str) -> None:
    if sae.cfg.d_in != d:
        raise BadInput(
            f"SAE d_in={sae.cfg.d_in} does not match the hidden size {d} of {where}; "
            "use the model/layer the SAE was trained on"
        )


@dataclass
class HarvestConfig:
    """Write residual-stream activations of a causal LM, or of a TTS backbone teacher-forced over (text, audio)
    pairs, to a cache of safetensors shards (a TTS backbone's rows carry modality, token, item and time)."""

    model: str = ""
    """Hugging Face causal LM (hub id or local path)."""
    backbone: str = ""
    """A TTS backbone instead (demo, cosyvoice3, ...; see `ttslens backbones`)."""
    model_dir: str = ""
    """The backbone's model directory or hub id (the same as --backbone NAME:DIR)."""
    dataset: str = ""
    """Text dataset for --model (a hub name or a local .txt/.jsonl/.csv/.parquet file or saved dataset); for
    --backbone, (text, audio) pairs in the same forms or hf:NAME (empty: the backbone's own corpus)."""
    text_column: str = "text"
    """Column holding the text."""
    layer: int = 0
    """Decoder layer whose output is cached."""
    hook: str = "resid"
    """What of that layer: resid (the residual stream after it), mlp or attn (its MLP / attention output)."""
    tokens: int = 1_000_000
    """Rows (token positions) to write."""
    context: int = 256
    """Tokens per document (longer ones are truncated)."""
    model_batch: int = 8
    """Documents per forward pass."""
    shard_tokens: int = 65536
    """Rows per shard file."""
    dtype: str = "float32"
    """Stored dtype: float32, float16 or bfloat16."""
    device: str = "cpu"
    """Torch device for the model: cpu, cuda, cuda:N or auto."""
    model_dtype: str = "float32"
    """The model weights' dtype: float32, bfloat16 or float16 (--dtype is the stored one)."""
    out: str = "runs/activations"
    """Output directory (re-run the same command to resume)."""

    def __post_init__(self) -> None:
        if self.backbone and self.model:
            raise BadInput("give --model (a text LM) or --backbone (a TTS backbone), not both")
        if not self.backbone and (not self.model or not self.dataset):
            raise BadInput("--model and --dataset are required (or --backbone NAME for a TTS backbone)")
        if self.dtype not in ("float32", "float16", "bfloat16"):
            raise BadInput(f"--dtype must be float32, float16 or bfloat16 (got {self.dtype!r})")


def run_harvest(cfg: HarvestConfig) -> Path:
    from ttslens.sae.harvest import harvest
    from ttslens.sae.lm.harvest import ModelActivations, load_model, load_text_dataset

    model, tok = load_model(cfg.model, cfg.device, cfg.model_dtype)
    ds = load_text_dataset(cfg.dataset, text_column=cfg.text_column)
    src = ModelActivations(
        model, tok, ds, cfg.layer, cfg.context, cfg.text_column, cfg.model_batch, cfg.device, cfg.hook
    )
    meta = {
        "model": cfg.model,
        "layer": cfg.layer,
        "hook_name": hook_name(cfg.layer, cfg.hook),
        "dataset": cfg.dataset,
        "text_column": cfg.text_column,
        "context": cfg.context,
        "dtype": cfg.dtype,
    }
    with torch.no_grad():
        return harvest(src, cfg.out, cfg.tokens, cfg.shard_tokens, cfg.dtype, meta)


@dataclass
class TextQuickstartConfig:
    """End to end, offline: build a tiny LM, train an SAE on its residual stream, evaluate it."""

    out: str = "runs/quickstart-text"
    """Output directory (model, corpus, SAE, metrics); `ttslens quickstart` writes runs/quickstart."""
    arch: str = "batchtopk"
    """SAE architecture."""
    tokens: int = 300_000
    """SAE training tokens."""
    latents: int = 512
    """SAE latents."""
    k: int = 16
    """Active latents per token."""
    layer: int = 1
    """Layer of the tiny LM to read."""


def run_text_quickstart(cfg: TextQuickstartConfig) -> dict:
    from ttslens.sae.base import SAEConfig
    from ttslens.sae.lm.tiny import build_tiny_lm
    from ttslens.sae.training import TrainConfig, train

    root = Path(cfg.out)
    if not (root / "model" / "config.json").exists():
        print(f"building a tiny LM in {root / 'model'} ...", file=sys.stderr)
        build_tiny_lm(root)
    tcfg = TrainConfig(
        sae=SAEConfig(arch=cfg.arch, d_sae=cfg.latents, k=cfg.k),
        model=str(root / "model"),
        dataset=str(root / "corpus.txt"),
        layer=cfg.layer,
        context=64,
        tokens=cfg.tokens,
        batch_size=1024,
        buffer_tokens=16384,
        lr=1e-3,
        out=str(root / "sae"),
        overwrite=True,
        eval_tokens=8192,
        model_batch=64,
    )
    train(tcfg)
    return run_eval(EvalConfig(sae=str(root / "sae"), tokens=16384, out=str(root / "sae" / "eval.json")))

"""Residual-stream activations from a Hugging Face causal LM over a text dataset.

`ModelActivations` is a source for `BatchStream` (blocks end at document boundaries, so a block is
re-created exactly from the index of its first document). `harvest` writes a cache directory
of safetensors shards that `CachedActivations` reads, resumably (a manifest after each shard).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import nn
from tqdm.auto import tqdm

from sae.activations import ACTS_KEY, SPECIAL, TEXT, Block
from sae.files import atomic_path, atomic_write_json


class StopForward(Exception):
    pass


def residual_layers(model: nn.Module) -> nn.ModuleList:
    """The decoder-layer list of a transformers causal LM (Llama, Qwen2, GPT-2, GPT-NeoX, ...)."""
    n = getattr(model.config, "num_hidden_layers", None) or getattr(model.config, "n_layer", None)
    best = None
    for name, mod in model.named_modules():
        if isinstance(mod, nn.ModuleList) and len(mod) == n and name.split(".")[-1] in ("layers", "h", "blocks"):
            if best is None or len(name) < len(best[0]):
                best = (name, mod)
    if best is None:
        raise ValueError(f"cannot find the decoder layers of {type(model).__name__}")
    return best[1]


def check_layer(layer: int, n_layers: int) -> None:
    if not 0 <= layer < n_layers:
        raise ValueError(f"layer {layer} out of range: the model has {n_layers} layers (0..{n_layers - 1})")


@torch.no_grad()
def layer_output(model: nn.Module, layer: int, **inputs) -> torch.Tensor:
    """Residual stream after decoder layer `layer` ([B, T, d]); stops the forward there."""
    layers = residual_layers(model)
    check_layer(layer, len(layers))
    got: list[torch.Tensor] = []

    def hook(_mod, _inp, out):
        got.append(out[0] if isinstance(out, tuple) else out)
        raise StopForward

    handle = layers[layer].register_forward_hook(hook)
    try:
        model(**inputs)
    except StopForward:
        pass
    finally:
        handle.remove()
    return got[0]


def load_text_dataset(name_or_path: str, split: str = "train", text_column: str = "text"):
    """A `datasets` dataset from a hub name or local files (.txt, .json/.jsonl, .csv, .parquet, a dir)."""
    import datasets

    p = Path(name_or_path)
    kinds = {".txt": "text", ".json": "json", ".jsonl": "json", ".csv": "csv", ".parquet": "parquet"}
    if p.is_file():
        if p.suffix not in kinds:
            raise ValueError(f"unsupported dataset file {p} (use .txt, .jsonl, .json, .csv or .parquet)")
        ds = datasets.load_dataset(kinds[p.suffix], data_files=str(p), split="train")
    elif p.is_dir() and (p / "dataset_info.json").exists():
        ds = datasets.load_from_disk(str(p))
    else:
        ds = datasets.load_dataset(name_or_path, split=split)
    if text_column not in ds.column_names:
        raise ValueError(f"dataset {name_or_path} has no column {text_column!r} (columns: {ds.column_names})")
    return ds


def load_model(name_or_path: str, device: str = "cpu", dtype: str = "float32"):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(name_or_path)
    model = AutoModelForCausalLM.from_pretrained(name_or_path, dtype=getattr(torch, dtype))
    return model.to(device).eval(), tok


class ModelActivations:
    """Activations after decoder layer `layer`, document by document, with a modality per row."""

    def __init__(
        self,
        model,
        tokenizer,
        dataset,
        layer: int,
        context: int = 256,
        text_column: str = "text",
        model_batch: int = 8,
        device: str = "cpu",
    ) -> None:
        self.model, self.tok, self.ds, self.layer = model, tokenizer, dataset, layer
        self.context, self.text_column, self.model_batch, self.device = context, text_column, model_batch, device
        check_layer(layer, len(residual_layers(model)))
        self.d = model.config.hidden_size
        self.special = torch.tensor(sorted(set(tokenizer.all_special_ids)), dtype=torch.long)
        if len(dataset) == 0:
            raise ValueError("the text dataset is empty")
        if tokenizer.pad_token is None:  # batches of documents are padded
            tokenizer.pad_token = tokenizer.eos_token

    def start_state(self, rank: int = 0, world: int = 1) -> dict:
        return {"doc": rank, "stride": world}

    def _encode(self, docs: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        enc = self.tok(docs, return_tensors="pt", padding=True, truncation=True, max_length=self.context)
        ids, mask = enc["input_ids"].to(self.device), enc["attention_mask"].to(self.device)
        h = layer_output(self.model, self.layer, input_ids=ids, attention_mask=mask)
        keep = mask.bool()
        return h[keep].float().cpu(), ids[keep].cpu()

    def block(self, state: dict, n_rows: int) -> Block:
        acts, ids, doc = [], [], state["doc"]
        total = 0
        while total < n_rows:
            idx = [(doc + i * state["stride"]) % len(self.ds) for i in range(self.model_batch)]
            texts = [t for t in (self.ds[i][self.text_column] for i in idx) if t and t.strip()]
            doc += self.model_batch * state["stride"]
            if not texts:
                continue
            a, t = self._encode(texts)
            acts.append(a)
            ids.append(t)
            total += a.shape[0]
        ids_N = torch.cat(ids)
        modality = torch.where(torch.isin(ids_N, self.special), SPECIAL, TEXT).to(torch.int8)
        return Block(
            torch.cat(acts), {"modality": modality, "token_id": ids_N}, {"doc": doc, "stride": state["stride"]}
        )


def harvest(
    source: ModelActivations,
    out: str | Path,
    tokens: int,
    shard_rows: int = 65536,
    dtype: str = "float32",
    meta: dict | None = None,
) -> Path:
    """Write `tokens` rows as shards under `out` (+ manifest.json); resumes where a run stopped."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    manifest_path = out / "manifest.json"
    manifest = json.loads(manifest_path.read_text()) if manifest_path.exists() else None
    if manifest is None:
        manifest = {"d": source.d, "rows": 0, "shards": [], "state": source.start_state(), **(meta or {})}
    elif manifest["d"] != source.d:
        raise ValueError(f"{out} holds activations of width {manifest['d']}, this model's is {source.d}")
    bar = tqdm(total=tokens, initial=min(tokens, manifest["rows"]), unit="tok", desc="harvest")
    while manifest["rows"] < tokens:
        blk = source.block(manifest["state"], min(shard_rows, tokens - manifest["rows"]))
        name = f"shard_{len(manifest['shards']):05d}.safetensors"
        tensors = {ACTS_KEY: blk.acts.to(getattr(torch, dtype)).contiguous(), **blk.meta}
        with atomic_path(out / name) as tmp:
            save_file(tensors, str(tmp))
        manifest.update(rows=manifest["rows"] + blk.acts.shape[0], state=blk.next_state)
        manifest["shards"].append(name)
        atomic_write_json(manifest_path, manifest)
        bar.update(blk.acts.shape[0])
    bar.close()
    return out

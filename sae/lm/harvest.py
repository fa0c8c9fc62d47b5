"""Text causal LMs (Hugging Face transformers) as activation sources: loading, datasets, `ModelActivations`.

`ModelActivations` is a source for `BatchStream`: blocks end at document boundaries, so a block is
re-created exactly from the index of its first document. Its rows come from the one hook engine
(`ttslens.sae.hooks.layer_output`), which stops the forward pass after the harvested layer.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ttslens.sae.activations import SPECIAL, TEXT, Block
from ttslens.sae.devices import resolve_device, resolve_dtype
from ttslens.sae.errors import BadInput
from ttslens.sae.hooks import check_layer, layer_output, residual_layers


def load_text_dataset(name_or_path: str, split: str = "train", text_column: str = "text"):
    """A `datasets` dataset from a hub name or local files (.txt, .json/.jsonl, .csv, .parquet, a dir)."""
    import datasets

    p = Path(name_or_path)
    kinds = {".txt": "text", ".json": "json", ".jsonl": "json", ".csv": "csv", ".parquet": "parquet"}
    if p.is_file():
        if p.suffix not in kinds:
            raise BadInput(f"unsupported dataset file {p} (use .txt, .jsonl, .json, .csv or .parquet)")
        ds = datasets.load_dataset(kinds[p.suffix], data_files=str(p), split="train")
    elif p.is_dir() and (p / "dataset_info.json").exists():
        ds = datasets.load_from_disk(str(p))
    else:
        ds = datasets.load_dataset(name_or_path, split=split)
    if text_column not in ds.column_names:
        raise BadInput(f"dataset {name_or_path} has no column {text_column!r} (columns: {ds.column_names})")
    return ds


def eval_batch(tok, ds, text_column: str, n: int, context: int, device="cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """(input_ids, attention_mask) of the dataset's first `n` non-empty texts, padded and cut at `context`: the
    sequences CE measurements run on."""
    texts = [t for t in ds[:n][text_column] if t and t.strip()]
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    enc = tok(texts, return_tensors="pt", padding=True, truncation=True, max_length=context)
    return enc["input_ids"].to(device), enc["attention_mask"].to(device)


def load_model(name_or_path: str, device: str = "cpu", dtype: str = "float32"):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(name_or_path)
    model = AutoModelForCausalLM.from_pretrained(name_or_path, dtype=resolve_dtype(dtype))
    return model.to(resolve_device(device)).eval(), tok


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
        hook: str = "resid",
    ) -> None:
        self.model, self.tok, self.ds, self.layer, self.hook = model, tokenizer, dataset, layer, hook
        self.context, self.text_column, self.model_batch, self.device = context, text_column, model_batch, device
        check_layer(layer, len(residual_layers(model)))
        self.d = model.config.hidden_size
        self.special = torch.tensor(sorted(set(tokenizer.all_special_ids)), dtype=torch.long)
        if len(dataset) == 0:
            raise BadInput("the text dataset is empty")
        if tokenizer.pad_token is None:  # batches of documents are padded
            tokenizer.pad_token = tokenizer.eos_token

    def start_state(self, rank: int = 0, world: int = 1) -> dict:
        return {"doc": rank, "stride": world}

    def _encode(self, docs: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        enc = self.tok(docs, return_tensors="pt", padding=True, truncation=True, max_length=self.context)
        ids, mask = enc["input_ids"].to(self.device), enc["attention_mask"].to(self.device)
        h = layer_output(self.model, self.layer, self.hook, input_ids=ids, attention_mask=mask)
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

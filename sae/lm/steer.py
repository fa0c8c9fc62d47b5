"""SAE-feature steering of a Hugging Face text causal LM, the text counterpart of `ttslens.audio.steering.api`.

    from ttslens.sae.lm.steer import TextSteerer
    ts = TextSteerer.load("runs/quickstart-text/model", sae="runs/quickstart-text/sae")
    out = ts.generate("the cat", steer={"361": 4}, seed=0)
    out.text, out.tokens, out.steered
    default, steered = ts.compare("the cat", "cat words=4")

`steer` takes the strings of `ttslens.sae.steering.parse_steers`: feature ids (`361=4`, `361:clamp=5`, `361:ablate`,
`361:direction=2`, `3/361=4` for the SAE at layer 3) and label searches (`"the word cat=4"`: the feature with the
best detection AUROC whose SAE_DIR/labels/labels.jsonl label contains the words). Each resolved edit becomes a
`LayerSteer` applied by a forward hook on its SAE's decoder layer, at the positions in scope, under the KV cache.

`add` moves a feature by alpha times Z, its mean activation when active: the labels' `mean_act`, else measured
once per SAE on up to CALIBRATION_DOCS documents of the SAE's training dataset (when it is a local file), else 1.
Sampling draws from a generator seeded by `seed`, so a steered and a default generation share their randomness
and differ only by the edit (alpha = 0 reproduces the default token for token).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import torch

from ttslens.sae.errors import BadInput
from ttslens.sae.hooks import Hooks, layer_output, residual_layers
from ttslens.sae.lm.harvest import load_model, load_text_dataset
from ttslens.sae.sampling import generators, sample
from ttslens.sae.steering import PRESET_NAMES, LayerSteer, LoadedSAE, ResolvedEdit, SAESteerer, load_steer_saes

SCOPES = ("all", "generated", "prompt")
CALIBRATION_DOCS = 32


class TextGeneration(NamedTuple):
    text: str  # the generated continuation (special tokens skipped)
    tokens: torch.Tensor  # [T] generated token ids (eos not included)
    steered: torch.Tensor  # [P + T] bool over prompt + generated: positions an edit touched
    sequence: torch.Tensor  # [P + T] token ids: the encoded prompt, then `tokens`
    stopped: bool  # the model produced eos (False: max_new_tokens cut it)
    edits: list[ResolvedEdit]


class _ScopedSteer:
    """One layer's LayerSteer as a hook-engine edit, at the in-scope absolute positions of each call."""

    def __init__(self, layer: int, steer: LayerSteer, scope: str, prompt_len: int) -> None:
        self.layer, self.steer, self.scope, self.prompt_len = layer, steer, scope, prompt_len

    def __call__(self, rows_ND: torch.Tensor) -> torch.Tensor:
        return self.steer(rows_ND)

    def mask(self, pos_BT: torch.Tensor) -> torch.Tensor:
        """pos_BT: absolute positions of the call (the engine's context)."""
        if self.scope == "all":
            return torch.ones_like(pos_BT, dtype=torch.bool)
        generated = pos_BT >= self.prompt_len
        return generated if self.scope == "generated" else ~generated


class TextSteerer(SAESteerer):
    """A text causal LM with one or more SAEs (one per layer), their labels and mean activations."""

    def __init__(self, model, tokenizer, saes: Sequence[LoadedSAE] = (), device: str = "cpu"):
        self.model, self.tok, self.saes, self.device = model, tokenizer, list(saes), device
        self._mean_act: dict[int, torch.Tensor] = {}

    @classmethod
    def load(cls, model: str, sae: str | Path | Sequence[str | Path], device: str = "cpu") -> TextSteerer:
        """`model`: a hub id or local dir; `sae`: SAE dir(s), each steering the layer its cfg.json records."""
        lm, tok = load_model(model, device)
        loaded = load_steer_saes(sae, lm.config.hidden_size, len(residual_layers(lm)), model, device)
        if not loaded:
            raise BadInput("no SAE given: pass at least one SAE directory")
        return cls(lm, tok, loaded, device)

    # ---- labels and mean activations ---------------------------------------------------------------
    def mean_act(self, s: LoadedSAE, f: int) -> float:
        """Z of feature f: its mean activation when active (labels, else the calibration pass, else 1)."""
        rec = self.labels(s).get(f) or {}
        if rec.get("mean_act"):
            return float(rec["mean_act"])
        if s.layer not in self._mean_act:
            self._mean_act[s.layer] = self._calibrate(s)
        z = float(self._mean_act[s.layer][f])
        return z if z > 0 else 1.0

    @torch.no_grad()
    def _calibrate(self, s: LoadedSAE) -> torch.Tensor:
        """Mean activation when active [F] over the first documents of the SAE's local training dataset
        (zeros, i.e. Z = 1, when it has none on this machine)."""
        train = s.info.get("train") or {}
        data = s.info.get("dataset_path") or train.get("dataset")
        if not data or not Path(data).exists():
            return torch.zeros(s.sae.cfg.d_sae)
        column = train.get("text_column", "text")
        ds = load_text_dataset(str(data), text_column=column)
        texts = [t for t in ds[: min(CALIBRATION_DOCS, len(ds))][column] if t and t.strip()]
        if not texts:
            return torch.zeros(s.sae.cfg.d_sae)
        if self.tok.pad_token is None:
            self.tok.pad_token = self.tok.eos_token
        context = int(s.info.get("context_size") or train.get("context") or 128)
        enc = self.tok(texts, return_tensors="pt", padding=True, truncation=True, max_length=context).to(self.device)
        h_BTD = layer_output(self.model, s.layer, **enc)
        z_NF = s.sae.encode(h_BTD[enc["attention_mask"].bool()].float()).cpu()
        fired_F = (z_NF > 0).sum(0)
        return z_NF.clamp_min(0).sum(0) / fired_F.clamp_min(1)

    def unknown(self, target: str, saes: list[LoadedSAE]) -> str:
        if target in PRESET_NAMES:
            return (
                f"steering preset {target!r} is TTS-only: on a text model name a feature id (e.g. 361=4) "
                "or words of a feature's label"
            )
        return super().unknown(target, saes)

    # ---- generation -----------------------------------------------------------------------------------
    def encode(self, prompt: str) -> torch.Tensor:
        """The prompt's token ids [P] (with the tokenizer's special tokens, e.g. <bos>)."""
        if not prompt or not prompt.strip():
            raise BadInput("empty prompt: give the text to continue")
        ids_P = self.tok(prompt, return_tensors="pt")["input_ids"][0]
        if ids_P.numel() == 0:
            raise BadInput(f"the prompt {prompt!r} encodes to no tokens")
        return ids_P

    def _eos(self) -> set[int]:
        ids = {self.tok.eos_token_id}
        gen_eos = getattr(getattr(self.model, "generation_config", None), "eos_token_id", None)
        ids |= set(gen_eos) if isinstance(gen_eos, list) else {gen_eos}
        return {i for i in ids if i is not None}

    @torch.no_grad()
    def generate(
        self,
        prompt: str,
        steer=None,
        seed: int = 0,
        max_new_tokens: int = 40,
        temperature: float = 1.0,
        top_k: int = 50,
        scope: str = "all",
        top_p: float = 1.0,
        vectors=None,
    ) -> TextGeneration:
        """Continue `prompt` with the edits `steer` names at the positions in `scope`: "all" (prompt and
        generated), "generated" (the generated tokens' positions: the first new token is drawn unsteered),
        "prompt". `vectors`: trained steering vectors added too ("DIR", "DIR=STRENGTH", (DIR, STRENGTH) or a
        list; `ttslens vectors train`), each at the scope it was trained with."""
        if scope not in SCOPES:
            raise BadInput(f"unknown steering scope {scope!r}: use one of {', '.join(SCOPES)}")
        if max_new_tokens < 1:
            raise BadInput(f"max_new_tokens must be at least 1 (got {max_new_tokens})")
        if not math.isfinite(temperature) or temperature < 0:
            raise BadInput(f"temperature must be a finite number >= 0 (got {temperature})")
        ids_P = self.encode(prompt)
        edits = self.resolve(steer)
        P, eos = ids_P.shape[0], self._eos()
        gens = generators([seed])
        edits_ = [_ScopedSteer(layer, st, scope, P) for layer, st in self.steers(edits).items()]
        edits_ += self.vector_edits(vectors, P)
        hooks = Hooks(residual_layers(self.model), edits=edits_)
        steered_N = torch.zeros(P + max_new_tokens, dtype=torch.bool)
        new: list[int] = []
        stopped = False
        with hooks:
            hooks.context = torch.arange(P)[None]
            out = self.model(input_ids=ids_P[None].to(self.device), use_cache=True)
            while True:
                tok = int(sample(out.logits[:, -1], gens, temperature, top_k, top_p, fallback=min(eos, default=0))[0])
                if tok in eos:
                    stopped = True
                    break
                new.append(tok)
                if len(new) == max_new_tokens:
                    break
                hooks.context = torch.tensor([[P + len(new) - 1]])
                step_11 = torch.tensor([[tok]], device=self.device)
                out = self.model(input_ids=step_11, cache=out.cache, use_cache=True)
        if edits_:  # the positions the model read: the prompt and every new token but an unfed last one
            seen = torch.arange(P + len(new) - (0 if stopped or not new else 1))[None]
            masks = [e.mask(seen) for e in edits_]
            steered_N[: seen.shape[1]] = torch.stack([torch.ones_like(seen[0], dtype=torch.bool) if m is None else m[0]
                                                      for m in masks]).any(0)  # fmt: skip
        tokens_T = torch.tensor(new, dtype=torch.long)
        sequence = torch.cat([ids_P, tokens_T])
        text = self.tok.decode(new, skip_special_tokens=True)
        return TextGeneration(text, tokens_T, steered_N[: len(sequence)], sequence, stopped, edits)

    def vector_edits(self, vectors, prompt_len: int) -> list:
        from ttslens.sae.vectors.lm import position_where
        from ttslens.sae.vectors.vectors import check_fits, load_cached, parse_vector_specs

        out = []
        for path, strength in parse_vector_specs(vectors):
            vec, meta = load_cached(path)
            check_fits(vec, meta, self.model.config.hidden_size, len(residual_layers(self.model)))
            where = position_where(meta.get("scope") or "generated", prompt_len)
            out += vec.to(self.device).edits(where, strength)
        return out

    def compare(self, prompt: str, steer, seed: int = 0, **kw) -> tuple[str, str]:
        """(default, steered) continuations of `prompt` under the same seed."""
        self.resolve(steer)  # fail before any work
        return self.generate(prompt, None, seed, **kw).text, self.generate(prompt, steer, seed, **kw).text

"""A Hugging Face causal LM as the policy a steering vector is trained on (`ttslens.sae.vectors.train`).

Scopes (where the vector is added): `all` (the default, as in the papers), `prompt` (the prompt's positions),
`generated` (the positions of generated tokens: the first new token is then drawn from the prompt unsteered).
The hook engine's context for every call is a [B, T] bool mask of which of the call's positions are generated.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import NamedTuple

import torch

from ttslens.sae.errors import BadInput
from ttslens.sae.hooks import Hooks, residual_layers
from ttslens.sae.sampling import generators, sample

SCOPES = ("generated", "prompt", "all")


class Completion(NamedTuple):
    prompt_ids: torch.Tensor  # [P]
    ids: torch.Tensor  # [T] generated ids (the eos not included)
    stopped: bool  # ended with eos (the eos is then a scored target too)
    text: str


def scope_where(scope: str):
    if scope not in SCOPES:
        raise BadInput(f"unknown vector scope {scope!r} for a text LM: use one of {', '.join(SCOPES)}")
    if scope == "all":
        return None
    return (lambda gen_BT: gen_BT) if scope == "generated" else (lambda gen_BT: ~gen_BT)


def position_where(scope: str, prompt_len: int):
    """The same scopes for a hook context of absolute positions [B, T] (`ttslens.sae.lm.steer.TextSteerer`)."""
    scope_where(scope)
    if scope == "all":
        return None
    return (lambda pos: pos >= prompt_len) if scope == "generated" else (lambda pos: pos < prompt_len)


class TextPolicy:
    """Sampling and token log-probs of a causal LM under hook edits (its weights frozen)."""

    default_scope = "all"  # the papers add the vector at every position: the first new token is steered too

    def __init__(self, model, tokenizer, device: str = "cpu") -> None:
        self.model, self.tok, self.device = model.eval().requires_grad_(False), tokenizer, device
        self.d = int(model.config.hidden_size)
        self.n_layers = len(residual_layers(model))
        self.name = str(getattr(model.config, "_name_or_path", "") or type(model).__name__)
        ids = {tokenizer.eos_token_id}
        gen_eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
        ids |= set(gen_eos) if isinstance(gen_eos, list) else {gen_eos}
        self.eos = sorted(i for i in ids if i is not None)
        self.pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (self.eos or [0])[0]

    def layers(self):
        return residual_layers(self.model)

    def parameters(self):
        return self.model.parameters()

    def check_scope(self, scope: str) -> None:
        scope_where(scope)

    def where(self, scope: str):
        return scope_where(scope)

    def edits(self, vec, scope: str, strength: float = 1.0) -> list:
        return vec.edits(scope_where(scope), strength)

    @torch.no_grad()
    def residual_rms(self, items, layers) -> float:
        """RMS of the residual stream's coordinates after `layers`, over the prompts' positions."""
        hooks = Hooks(self.layers(), record=list(layers))
        with hooks:
            for it in items:
                hooks.context = None
                self.model(input_ids=self.encode(getattr(it, "prompt", it))[None].to(self.device))
        h = torch.cat([v.reshape(-1, self.d) for v in hooks.hidden().values()])
        return float(h.float().pow(2).mean().sqrt())

    def sample_kwargs(self, cfg) -> dict:
        return {"max_new_tokens": cfg.max_new_tokens, "temperature": cfg.temperature}

    def encode(self, prompt: str) -> torch.Tensor:
        if not prompt or not prompt.strip():
            raise BadInput("an empty prompt: every prompt needs text")
        ids = self.tok(prompt, return_tensors="pt")["input_ids"][0]
        if ids.numel() == 0:
            raise BadInput(f"the prompt {prompt!r} encodes to no tokens")
        return ids

    @torch.no_grad()
    def sample(self, item, n: int, seeds: Sequence[int], edits=(), max_new_tokens: int = 32,
               temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0) -> list[Completion]:  # fmt: skip
        """n completions of one prompt (an `Item` or a string; one batch, one seeded generator per row)."""
        ids_P = self.encode(getattr(item, "prompt", item))
        P = len(ids_P)
        gens, eos = generators(seeds), set(self.eos)
        new: list[list[int]] = [[] for _ in range(n)]
        done = [False] * n
        stopped = [False] * n
        with Hooks(self.layers(), edits=edits) as hooks:
            hooks.context = torch.zeros((n, P), dtype=torch.bool)
            out = self.model(input_ids=ids_P[None].repeat(n, 1).to(self.device), use_cache=True)
            for i in range(max_new_tokens):
                toks = sample(out.logits[:, -1], gens, temperature, top_k, top_p, fallback=self.eos[0] if eos else 0)
                for b in range(n):
                    if done[b]:
                        continue
                    t = int(toks[b])
                    if t in eos:
                        done[b] = stopped[b] = True
                    else:
                        new[b].append(t)
                if all(done) or i == max_new_tokens - 1:
                    break
                hooks.context = torch.ones((n, 1), dtype=torch.bool)
                out = self.model(input_ids=toks.view(n, 1).to(self.device), cache=out.cache, use_cache=True)
        return [
            Completion(ids_P, torch.tensor(x, dtype=torch.long), s, self.tok.decode(x, skip_special_tokens=True))
            for x, s in zip(new, stopped, strict=True)
        ]

    def completion(self, item) -> Completion:
        """An item's target continuation as a completion (the likelihood objective), ending with eos."""
        ids = self.tok(item.target, add_special_tokens=False, return_tensors="pt")["input_ids"][0]
        if ids.numel() == 0:
            raise BadInput(f"the target {item.target!r} encodes to no tokens")
        return Completion(self.encode(item.prompt), ids, bool(self.eos), item.target)

    def token_logprobs(self, comps: Sequence[Completion], edits=(), also=()) -> tuple[torch.Tensor, torch.Tensor]:
        """log p of each completion's tokens (and its eos when it stopped) [B, T] with their mask [B, T],
        teacher-forced in one right-padded batch; differentiable in whatever the edits hold. `also`: more hook
        engines (e.g. on the layer norms' inputs, `ttslens.sae.vectors.analysis`), given the same context."""
        seqs, targets, gen = [], [], []
        for c in comps:
            tgt = c.ids.tolist() + ([self.eos[0]] if c.stopped else [])
            seqs.append(c.prompt_ids.tolist() + tgt[:-1] if tgt else c.prompt_ids.tolist())
            targets.append(tgt)
            gen.append(len(c.prompt_ids))
        L = max(len(s) for s in seqs)
        T = max(1, max(len(t) for t in targets))
        ids_BL = torch.full((len(seqs), L), self.pad, dtype=torch.long)
        attn_BL = torch.zeros((len(seqs), L), dtype=torch.long)
        tgt_BT = torch.zeros((len(seqs), T), dtype=torch.long)
        mask_BT = torch.zeros((len(seqs), T), dtype=torch.bool)
        for b, (s, t) in enumerate(zip(seqs, targets, strict=True)):
            ids_BL[b, : len(s)] = torch.tensor(s)
            attn_BL[b, : len(s)] = 1
            tgt_BT[b, : len(t)] = torch.tensor(t, dtype=torch.long)
            mask_BT[b, : len(t)] = True
        with Hooks(self.layers(), edits=edits) as hooks, contextlib.ExitStack() as stack:
            for eng in also:
                stack.enter_context(eng)
            for eng in (hooks, *also):
                eng.context = torch.arange(L)[None] >= torch.tensor(gen)[:, None]
            logits = self.model(input_ids=ids_BL.to(self.device), attention_mask=attn_BL.to(self.device)).logits
        # the logits predicting target j sit at position P - 1 + j
        pos_BT = (torch.tensor(gen)[:, None] - 1 + torch.arange(T)[None]).clamp_max(L - 1).to(logits.device)
        lg_BTV = logits.gather(1, pos_BT[..., None].expand(-1, -1, logits.shape[-1])).float()
        lp_BT = lg_BTV.log_softmax(-1).gather(-1, tgt_BT.to(logits.device)[..., None])[..., 0]
        return lp_BT * mask_BT.to(lp_BT.device), mask_BT.to(lp_BT.device)

    def reward_args(self, item, comp: Completion) -> tuple:
        return item.prompt, comp.text, {}

    def lens(self):
        """(final norm or None, unembedding [V, d], ids → token strings) for the logit lens."""
        names = lambda ids: [self.tok.decode([int(i)]) for i in ids]  # noqa: E731
        return final_norm(self.model), self.model.get_output_embeddings().weight, names


def final_norm(model):
    """The norm applied before the unembedding (Llama / Qwen2 `model.norm`, GPT-2 `transformer.ln_f`, ...)."""
    for path in ("model.norm", "transformer.ln_f", "gpt_neox.final_layer_norm", "model.final_layernorm", "norm"):
        mod = model
        for part in path.split("."):
            mod = getattr(mod, part, None)
            if mod is None:
                break
        if mod is not None:
            return mod
    return None

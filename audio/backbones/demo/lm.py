"""The demo TTS LM: a small Qwen2 decoder over [specials | characters | speech tokens], trained with
cross-entropy on the speech positions (and the final <eos>), as CosyVoice3's LM is."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import NamedTuple

import torch
from tqdm.auto import tqdm


@dataclass
class DemoLMConfig:
    """Size and training of the demo LM."""

    d_model: int = 256
    """Residual-stream width."""
    n_layers: int = 6
    """Decoder layers."""
    n_heads: int = 4
    """Attention heads."""
    n_kv_heads: int = 2
    """Key/value heads (grouped-query attention, as Qwen2)."""
    d_ff: int = 768
    """MLP width."""
    max_positions: int = 768
    """Context length (prefix + speech)."""
    steps: int = 1200
    """Optimiser steps."""
    batch_tokens: int = 4096
    """Tokens per step (sequences are bucketed by length and padded)."""
    lr: float = 2e-3
    """Peak AdamW learning rate (warm-up, then cosine to 10%)."""
    warmup: int = 60
    """Warm-up steps."""
    weight_decay: float = 0.01
    """AdamW weight decay."""


def build_lm(vocab_size: int, cfg: DemoLMConfig, pad_id: int = 0, seed: int = 0):
    from transformers import Qwen2Config, Qwen2ForCausalLM

    config = Qwen2Config(
        vocab_size=vocab_size,
        hidden_size=cfg.d_model,
        intermediate_size=cfg.d_ff,
        num_hidden_layers=cfg.n_layers,
        num_attention_heads=cfg.n_heads,
        num_key_value_heads=cfg.n_kv_heads,
        max_position_embeddings=cfg.max_positions,
        rope_theta=10000.0,
        tie_word_embeddings=False,
        pad_token_id=pad_id,
        bos_token_id=None,
        eos_token_id=None,
        attn_implementation="eager",  # on CPU, faster than SDPA with a padding mask
    )
    torch.manual_seed(seed)
    return Qwen2ForCausalLM(config)


def speech_head(model, speech_offset: int, eos_id: int) -> torch.Tensor:
    """Rows of the output layer for the speech tokens, then <eos> (the "stop" column)."""
    w = model.lm_head.weight
    return torch.cat([w[speech_offset:], w[eos_id : eos_id + 1]])


class Example(NamedTuple):
    ids: torch.Tensor  # [N] the whole sequence, ending with <eos>
    first_target: int  # position whose next token is the first speech token (the <task> position)


def _batches(examples: list[Example], batch_tokens: int, gen: torch.Generator) -> list[list[int]]:
    """Length-bucketed batches of example indices, in a random order."""
    order = sorted(range(len(examples)), key=lambda i: (len(examples[i].ids), i))
    batches, cur, longest = [], [], 0
    for i in order:
        longest = max(longest, len(examples[i].ids))
        if cur and longest * (len(cur) + 1) > batch_tokens:
            batches.append(cur)
            cur, longest = [], len(examples[i].ids)
        cur.append(i)
    if cur:
        batches.append(cur)
    perm = torch.randperm(len(batches), generator=gen).tolist()
    return [batches[p] for p in perm]


def collate(examples: list[Example], n_speech: int, speech_offset: int, pad_id: int, eos_id: int):
    """Padded ids [B, T], attention mask [B, T], target positions mask [B, T], targets [n]."""
    T = max(len(e.ids) for e in examples)
    ids = torch.full((len(examples), T), pad_id, dtype=torch.long)
    attn = torch.zeros((len(examples), T), dtype=torch.long)
    tmask = torch.zeros((len(examples), T), dtype=torch.bool)
    for b, e in enumerate(examples):
        n = len(e.ids)
        ids[b, :n], attn[b, :n] = e.ids, 1
        tmask[b, e.first_target : n - 1] = True
    nxt = torch.roll(ids, -1, dims=1)[tmask]
    targets = torch.where(nxt == eos_id, n_speech, nxt - speech_offset)
    return ids, attn, tmask, targets


class TrainLog(NamedTuple):
    step: int
    loss: float
    tokens_per_s: float


def train_lm(
    model,
    examples: list[Example],
    cfg: DemoLMConfig,
    n_speech: int,
    speech_offset: int,
    pad_id: int,
    eos_id: int,
    seed: int = 0,
    progress: bool = True,
    log=None,
) -> list[TrainLog]:
    """AdamW, warm-up + cosine, grad clip 1; epochs of shuffled length buckets until `cfg.steps`."""
    gen = torch.Generator().manual_seed(seed)
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "embed" not in n]
    rest = [p for n, p in model.named_parameters() if not (p.ndim >= 2 and "embed" not in n)]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": rest, "weight_decay": 0.0}],
        lr=cfg.lr,
        betas=(0.9, 0.98),
    )

    def lr_at(step: int) -> float:
        if step < cfg.warmup:
            return cfg.lr * (step + 1) / cfg.warmup
        t = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
        return cfg.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, t))))

    model.train()
    history: list[TrainLog] = []
    bar = tqdm(total=cfg.steps, desc="demo LM", unit="step", disable=not progress)
    step, queue, t0, seen, ema = 0, [], time.perf_counter(), 0, None
    while step < cfg.steps:
        if not queue:
            queue = _batches(examples, cfg.batch_tokens, gen)
        batch = [examples[i] for i in queue.pop()]
        ids, attn, tmask, targets = collate(batch, n_speech, speech_offset, pad_id, eos_id)
        for g in opt.param_groups:
            g["lr"] = lr_at(step)
        h = model.model(input_ids=ids, attention_mask=attn).last_hidden_state
        logits = h[tmask] @ speech_head(model, speech_offset, eos_id).T
        loss = torch.nn.functional.cross_entropy(logits, targets)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        step += 1
        seen += int(attn.sum())
        ema = loss.item() if ema is None else 0.98 * ema + 0.02 * loss.item()
        if step % 20 == 0 or step == cfg.steps:
            rate = seen / (time.perf_counter() - t0)
            history.append(TrainLog(step, ema, rate))
            bar.set_postfix(loss=f"{ema:.3f}", tok_s=f"{rate:,.0f}")
            if log is not None:
                log(history[-1])
        bar.update(1)
    bar.close()
    model.eval()
    return history


@torch.no_grad()
def heldout_loss(model, examples: list[Example], n_speech: int, speech_offset: int, pad_id: int, eos_id: int) -> float:
    """Mean cross-entropy per speech target over `examples`."""
    model.eval()
    total, count = 0.0, 0
    for i in range(0, len(examples), 16):
        ids, attn, tmask, targets = collate(examples[i : i + 16], n_speech, speech_offset, pad_id, eos_id)
        h = model.model(input_ids=ids, attention_mask=attn).last_hidden_state
        logits = h[tmask] @ speech_head(model, speech_offset, eos_id).T
        total += float(torch.nn.functional.cross_entropy(logits, targets, reduction="sum"))
        count += targets.numel()
    return total / max(count, 1)

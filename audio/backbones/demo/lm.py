"""The demo TTS LM: a small Qwen2 decoder over [specials | characters | speech frames], trained with
cross-entropy on the speech frames (and the final <eos>), as CosyVoice3's LM is.

A speech frame is C ids: its phoneme, the next phoneme, then the codec's codes (see tokenizer.py and
phones.py); its input embedding is the sum of its C embeddings (as CSM's), column c's ids sitting at
`speech_offset + c * K + id`. The LM head reads the next frame's *decision* off the decoder's last hidden
state: `<stay>` on the phoneme, `<next>` phoneme, or `<eos>` (only the choices the schedule allows are
scored, in training as in sampling). The codec codes come from a small depth head that adds the embeddings
of the frame's phonemes and of the codes already chosen (`DepthHead`), so each code is conditioned on what
is being said and on the coarser codes, as CSM's depth decoder does.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import NamedTuple

import torch
from torch import nn
from tqdm.auto import tqdm

from ttslens.audio.backbones.demo.phones import END_ID
from ttslens.sae.devices import bf16_native, fused_ok


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
    """Context length (prefix + speech frames)."""
    steps: int = 1800
    """Optimiser steps."""
    batch_tokens: int = 4096
    """Positions per step (sequences are bucketed by length and padded)."""
    lr: float = 2e-3
    """Peak AdamW learning rate (warm-up, then cosine to 10%)."""
    warmup: int = 60
    """Warm-up steps."""
    weight_decay: float = 0.01
    """AdamW weight decay."""
    guided_attention: float = 0.0
    """Weight of the guided-attention loss (as DC-TTS): in head 0 of each `guided_layers` layer, a speech
    frame's attention over the text is pulled towards the diagonal (frame t of T near character n of N when
    n/N ~ t/T); 0 = off (the phoneme columns already say what each frame says)."""
    guided_layers: list[int] = field(default_factory=lambda: [1, 2])
    """Layers whose head 0 the guided-attention loss shapes."""
    guided_width: float = 0.2
    """Width g of the diagonal band: a weight 1 - exp(-(n/N - t/T)^2 / 2g^2) on attention off the diagonal."""
    pairs: float = 0.25
    """Share of extra training examples that are two utterances of one voice in a row (text 1 + text 2, speech
    1 + speech 2): what a voice prompt looks like at inference (CosyVoice3's prompt continuation)."""
    unknown_prompt: float = 0.5
    """Share of those pairs whose first utterance's phonemes are hidden (`<unk>`), as in a prompt read from a
    WAV, whose phoneme timing is unknown."""
    bf16: bool = True
    """Train under bf16 autocast with SDPA attention (weights and optimiser stay fp32) where bf16 products are
    native (AMX / avx512_bf16 CPUs, bf16 GPUs), else fp32. With the fused AdamW: 1.2x the fp32 tokens per second
    on the build's batches on 2 CPU cores (the matmuls get 12x faster; the norms, casts and attention do not)."""


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


class DepthHead(nn.Module):
    """Columns `first`..C-1 of a frame from the frame's hidden state and its earlier columns:
    z_c = h + sum_{j<c} E_j[id_j];  u_c = z_c + MLP(norm(z_c));  logits_c = W_c norm(u_c)."""

    def __init__(self, d_model: int, n_codebooks: int, codebook_size: int, first: int = 1) -> None:
        super().__init__()
        self.C, self.K, self.first = n_codebooks, codebook_size, first
        self.embed = nn.Embedding(max(n_codebooks - 1, 1) * codebook_size, d_model)
        self.mlp = nn.Sequential(nn.Linear(d_model, 2 * d_model), nn.SiLU(), nn.Linear(2 * d_model, d_model))
        self.out = nn.Parameter(torch.zeros(max(n_codebooks - first, 1), codebook_size, d_model))
        nn.init.normal_(self.embed.weight, std=0.02)
        nn.init.normal_(self.out, std=0.02)

    def logits(self, h_ND: torch.Tensor, codes_NC: torch.Tensor) -> torch.Tensor:
        """Teacher-forced logits [N, C-first, K] of columns first..C-1 given the frame's ids [N, C]."""
        prev = self.embed(codes_NC[:, :-1] + torch.arange(self.C - 1, device=codes_NC.device) * self.K)
        z = h_ND[:, None, :] + prev.cumsum(1)[:, self.first - 1 :]  # [N, C-first, d]
        return torch.einsum("ncd,ckd->nck", self._u(z), self.out)

    def column_logits(self, h_ND: torch.Tensor, codes_Nc: torch.Tensor) -> torch.Tensor:
        """Logits [N, K] of column c = codes_Nc.shape[1] >= first, given the frame's columns 0..c-1."""
        c = codes_Nc.shape[1]
        z = h_ND + self.embed(codes_Nc + torch.arange(c, device=codes_Nc.device) * self.K).sum(1)
        return self._u(z) @ self.out[c - self.first].T

    def _u(self, z: torch.Tensor) -> torch.Tensor:
        norm = nn.functional.rms_norm
        u = z + self.mlp(norm(z, (z.shape[-1],)))
        return norm(u, (u.shape[-1],))


STAY, NEXT, STOP = 0, 1, 2  # the decisions the LM head chooses between
FIRST = 2  # `Example.starts` of an utterance's first frame: the schedule allows only NEXT there


def speech_head(model, stay_id: int, next_id: int, eos_id: int) -> torch.Tensor:
    """Rows of the output layer for the decisions: `<stay>`, `<next>`, `<eos>` (the stop)."""
    w = model.lm_head.weight
    return w[[stay_id, next_id, eos_id]]


def allowed_decisions(index: int, n_phones: int) -> list[int]:
    """What the schedule allows after phoneme `index` of `n_phones` (-1: none said yet): the first phoneme,
    then stay or move on, and on the last one stay or stop."""
    if index < 0:
        return [NEXT]
    return [STAY, STOP] if index >= n_phones - 1 else [STAY, NEXT]


def embed_frames(model, ids_BTC: torch.Tensor, speech_BT: torch.Tensor) -> torch.Tensor:
    """Input embeddings: a text/special position embeds column 0; a speech position the sum of its C ids."""
    emb = model.model.embed_tokens
    speech = emb(ids_BTC).sum(-2)
    return torch.where(speech_BT[..., None], speech, emb(ids_BTC[..., 0]))


def lm_state(model, depth: DepthHead, head_ids: list[int] | None = None) -> dict[str, torch.Tensor]:
    """One state dict for the decoder and its depth head ("depth." keys). With `head_ids`, only those rows of
    the output layer are kept ("lm_head.rows" + "lm_head.ids"): the others are never read, nor trained."""
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    if head_ids is not None:
        ids = torch.tensor(head_ids, dtype=torch.long)
        state["lm_head.rows"], state["lm_head.ids"] = state.pop("lm_head.weight")[ids].contiguous(), ids
    return state | {f"depth.{k}": v.contiguous() for k, v in depth.state_dict().items()}


def expand_head(state: dict[str, torch.Tensor], vocab_size: int) -> dict[str, torch.Tensor]:
    """The inverse of `lm_state(..., head_ids)`: a full output layer, zero in the rows that were not kept."""
    if "lm_head.rows" not in state:
        return state
    state = dict(state)
    rows, ids = state.pop("lm_head.rows"), state.pop("lm_head.ids").long()
    full = torch.zeros((vocab_size, rows.shape[1]), dtype=rows.dtype)
    full[ids] = rows
    return state | {"lm_head.weight": full}


def load_lm_state(model, depth: DepthHead, state: dict[str, torch.Tensor]) -> None:
    state = expand_head(state, model.config.vocab_size)
    depth.load_state_dict({k[6:]: v.float() for k, v in state.items() if k.startswith("depth.")})
    model.load_state_dict({k: v.float() for k, v in state.items() if not k.startswith("depth.")})


class Example(NamedTuple):
    prefix: torch.Tensor  # [P] ids, ending with <task>
    speech: torch.Tensor  # [T, C] frames: phoneme, next phoneme, codec codes
    text: tuple[int, int]  # prefix positions [lo, hi) of the text being spoken (after any instruct)
    starts: torch.Tensor  # [T] 1 where a frame moves to a new phoneme, 0 where it stays, -1 unknown, FIRST first


class Batch(NamedTuple):
    ids: torch.Tensor  # [B, L, C] (speech ids offset per codebook; text in column 0, zeros elsewhere)
    attn: torch.Tensor  # [B, L]
    speech: torch.Tensor  # [B, L] bool: speech positions (their embedding sums the C columns)
    tmask: torch.Tensor  # [B, L] bool: positions whose next frame (or the stop) is a target
    targets: torch.Tensor  # [n, C] next frame's ids (zeros for the stop)
    decision: torch.Tensor  # [n] STAY / NEXT / STOP, -100 where the phoneme is unknown
    allowed: torch.Tensor  # [n, 3] bool: the decisions the schedule allows there
    voiced: torch.Tensor  # [n] bool: targets that are frames (not the stop)
    diag: torch.Tensor  # [B, L] where a position sits on the alignment diagonal: t/T for speech, n/N for text
    text: torch.Tensor  # [B, L] bool: the spoken text's positions


def _batches(examples: list[Example], batch_tokens: int, gen: torch.Generator) -> list[list[int]]:
    """Length-bucketed batches of example indices, in a random order."""
    n = [len(e.prefix) + len(e.speech) + 1 for e in examples]
    order = sorted(range(len(examples)), key=lambda i: (n[i], i))
    batches, cur, longest = [], [], 0
    for i in order:
        longest = max(longest, n[i])
        if cur and longest * (len(cur) + 1) > batch_tokens:
            batches.append(cur)
            cur, longest = [], n[i]
        cur.append(i)
    if cur:
        batches.append(cur)
    perm = torch.randperm(len(batches), generator=gen).tolist()
    return [batches[p] for p in perm]


def decision_targets(frames_TC: torch.Tensor, starts_T: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """What the LM head should choose before each frame and after the last: targets [T+1] (STAY / NEXT /
    STOP; -100 where the phoneme is unknown or the target is not allowed) and the allowed decisions
    [T+1, 3] (row k: what may follow frame k-1 — NEXT alone before an utterance's first frame, STOP only
    after a frame that says the last phoneme)."""
    T = len(frames_TC)
    dec = torch.cat([torch.where(starts_T < 0, -100, starts_T.clamp_max(NEXT)), torch.tensor([STOP])])
    last = frames_TC[:, 1] == END_ID  # no next phoneme: the frame says the last one
    ok = torch.zeros((T + 1, 3), dtype=torch.bool)
    ok[1:, STAY] = True
    ok[1:, NEXT] = ~last
    ok[1:, STOP] = last
    ok[torch.cat([starts_T == FIRST, torch.tensor([False])])] = torch.tensor([False, True, False])
    known = dec >= 0
    dec[known & ~ok[torch.arange(T + 1), dec.clamp_min(0)]] = -100
    return dec, ok


def collate(examples: list[Example], codebook_size: int, speech_offset: int, pad_id: int, eos_id: int) -> Batch:
    """Right-padded batch of [prefix, speech frames, <eos>] sequences with next-frame targets."""
    C, K = examples[0].speech.shape[1], codebook_size
    L = max(len(e.prefix) + len(e.speech) + 1 for e in examples)
    ids = torch.zeros((len(examples), L, C), dtype=torch.long)
    ids[..., 0] = pad_id
    attn = torch.zeros((len(examples), L), dtype=torch.long)
    speech = torch.zeros((len(examples), L), dtype=torch.bool)
    tmask = torch.zeros((len(examples), L), dtype=torch.bool)
    text = torch.zeros((len(examples), L), dtype=torch.bool)
    diag = torch.zeros((len(examples), L))
    targets, decisions, allowed = [], [], []
    offsets = speech_offset + torch.arange(C) * K
    for b, e in enumerate(examples):
        P, T = len(e.prefix), len(e.speech)
        ids[b, :P, 0] = e.prefix
        ids[b, P : P + T] = e.speech + offsets
        ids[b, P + T, 0] = eos_id
        attn[b, : P + T + 1] = 1
        speech[b, P : P + T] = True
        lo, hi = e.text
        text[b, lo:hi] = True
        diag[b, lo:hi] = (torch.arange(hi - lo) + 0.5) / max(hi - lo, 1)
        diag[b, P : P + T] = (torch.arange(T) + 0.5) / max(T, 1)
        tmask[b, P - 1 : P + T] = True  # <task> predicts frame 0, ..., the last frame predicts the stop
        targets.append(torch.cat([e.speech, torch.zeros((1, C), dtype=torch.long)]))
        dec, ok = decision_targets(e.speech, e.starts)
        decisions.append(dec)
        allowed.append(ok)
    targets = torch.cat(targets)
    voiced = torch.ones(len(targets), dtype=torch.bool)
    ends = torch.tensor([len(e.speech) + 1 for e in examples]).cumsum(0) - 1
    voiced[ends] = False
    return Batch(ids, attn, speech, tmask, targets, torch.cat(decisions), torch.cat(allowed), voiced, diag, text)


def guided_attention_loss(attentions, batch: Batch, layers: tuple[int, ...], width: float) -> torch.Tensor:
    """Mean over speech frames and guided heads of the off-diagonal share of the frame's attention over the
    spoken text (renormalised over the text), plus 0.1 x -log of the attention mass the head puts on the text."""
    q, k = batch.speech, batch.text
    off = 1 - torch.exp(-((batch.diag[:, None, :] - batch.diag[:, :, None]) ** 2) / (2 * width**2))  # [B, Lq, Lk]
    total = torch.zeros(())
    for layer in layers:
        a = attentions[layer][:, 0] * k[:, None, :]  # head 0, keys on the text only
        mass = a.sum(-1)
        share = (a * off).sum(-1) / (mass + 1e-6)
        total = total + share[q].mean() - 0.1 * torch.log(mass[q] + 1e-6).mean()
    return total / max(len(layers), 1)


def frame_loss(
    model,
    depth: DepthHead,
    batch: Batch,
    head_ids: tuple[int, int, int],
    reduction: str = "mean",
    guided: tuple[float, tuple[int, ...], float] | None = None,
):
    """Cross-entropy of the next frames: the decision (stay / next / stop, over the allowed ones) by the LM
    head at `head_ids` = (<stay>, <next>, <eos>), the codec codes by the depth head; "mean" averages over
    targets, "sum" returns (summed NLL, count of targets). `guided` = (weight, layers, width) adds the
    guided-attention loss (training only; "mean" then returns (total, CE))."""
    h = model.model(
        inputs_embeds=embed_frames(model, batch.ids, batch.speech),
        attention_mask=batch.attn,
        output_attentions=guided is not None,
    )
    h_ND = h.last_hidden_state[batch.tmask]
    ce = nn.functional.cross_entropy
    lg0 = (h_ND @ speech_head(model, *head_ids).T).masked_fill(~batch.allowed, float("-inf"))
    known = batch.decision != -100
    nll0 = ce(lg0[known], batch.decision[known], reduction="sum")
    v, t = batch.voiced, batch.targets
    nll_rest = torch.zeros((), device=h_ND.device)
    if v.any():
        lg = depth.logits(h_ND[v], t[v])  # [n, C-first, K]
        nll_rest = ce(lg.reshape(-1, depth.K), t[v, depth.first :].reshape(-1), reduction="sum")
    count = int(known.sum()) + int(v.sum()) * (t.shape[1] - depth.first)
    if reduction == "sum":
        return nll0 + nll_rest, count
    ce = (nll0 + nll_rest) / count
    if guided is None:
        return ce
    weight, layers, width = guided
    return ce + weight * guided_attention_loss(h.attentions, batch, layers, width), ce


class TrainLog(NamedTuple):
    step: int
    loss: float
    tokens_per_s: float


def train_lm(
    model,
    depth: DepthHead,
    examples: list[Example],
    cfg: DemoLMConfig,
    speech_offset: int,
    pad_id: int,
    head_ids: tuple[int, int, int],
    seed: int = 0,
    progress: bool = True,
    log=None,
) -> list[TrainLog]:
    """AdamW, warm-up + cosine, grad clip 1; epochs of shuffled length buckets until `cfg.steps`."""
    gen = torch.Generator().manual_seed(seed)
    params = [*model.named_parameters(), *(("depth." + n, p) for n, p in depth.named_parameters())]
    decay = [p for n, p in params if p.ndim >= 2 and "embed" not in n]
    rest = [p for n, p in params if not (p.ndim >= 2 and "embed" not in n)]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": rest, "weight_decay": 0.0}],
        lr=cfg.lr,
        betas=(0.9, 0.98),
        fused=fused_ok(next(model.parameters()).device),
    )

    def lr_at(step: int) -> float:
        if step < cfg.warmup:
            return cfg.lr * (step + 1) / cfg.warmup
        t = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
        return cfg.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, t))))

    model.train()
    depth.train()
    device = next(model.parameters()).device.type
    amp = cfg.bf16 and bf16_native(device)
    attn = model.config._attn_implementation
    if amp and not cfg.guided_attention:  # the guided loss reads the attention weights, which SDPA does not return
        model.config._attn_implementation = "sdpa"  # with bf16, faster than eager even with a padding mask
    history: list[TrainLog] = []
    bar = tqdm(total=cfg.steps, desc="demo LM", unit="step", disable=not progress)
    step, queue, t0, seen, ema = 0, [], time.perf_counter(), 0, None
    while step < cfg.steps:
        if not queue:
            queue = _batches(examples, cfg.batch_tokens, gen)
        batch = collate([examples[i] for i in queue.pop()], depth.K, speech_offset, pad_id, head_ids[2])
        for g in opt.param_groups:
            g["lr"] = lr_at(step)
        layers = tuple(i for i in cfg.guided_layers if i < cfg.n_layers)
        guided = (cfg.guided_attention, layers, cfg.guided_width) if cfg.guided_attention and layers else None
        with torch.autocast(device, dtype=torch.bfloat16, enabled=amp):
            out = frame_loss(model, depth, batch, head_ids, guided=guided)
        loss, ce = out if guided else (out, out)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_([p for _, p in params], 1.0)
        opt.step()
        step += 1
        seen += int(batch.attn.sum())
        ema = ce.item() if ema is None else 0.98 * ema + 0.02 * ce.item()
        if step % 20 == 0 or step == cfg.steps:
            rate = seen / (time.perf_counter() - t0)
            history.append(TrainLog(step, ema, rate))
            bar.set_postfix(loss=f"{ema:.3f}", tok_s=f"{rate:,.0f}")
            if log is not None:
                log(history[-1])
        bar.update(1)
    bar.close()
    model.config._attn_implementation = attn
    model.eval()
    depth.eval()
    return history


@torch.no_grad()
def heldout_loss(
    model, depth: DepthHead, examples: list[Example], speech_offset: int, pad_id: int, head_ids: tuple[int, int, int]
):
    """Mean cross-entropy per target (decisions and codec codes) over `examples`."""
    model.eval()
    depth.eval()
    total, count = 0.0, 0
    for i in range(0, len(examples), 16):
        batch = collate(examples[i : i + 16], depth.K, speech_offset, pad_id, head_ids[2])
        s, n = frame_loss(model, depth, batch, head_ids, reduction="sum")
        total, count = total + float(s), count + n
    return total / max(count, 1)

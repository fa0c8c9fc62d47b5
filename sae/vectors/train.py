"""Training steering vectors with every base weight frozen: the likelihood of target continuations, or online RL.

Online RL, one step: `prompts_per_step` prompts, a group of `samples` completions of each drawn under the current
vector, each rewarded; the advantage of a completion is its reward minus its group's mean (`grpo`, without the
std normalisation) or minus the mean of the others (`rloo`); then `epochs` updates of the clipped policy-gradient
loss per token, -min(ρA, clip(ρ, 1 - ε, 1 + ε)A) with ρ = π/π_old, plus `kl` × the k3 estimate of KL(π‖π_base)
(π_base: the model without the vector), averaged over each completion's tokens, then over completions. Samples
whose reward failed are left out (counted); a group with fewer than two valid samples teaches nothing.

The policy is anything with `d`, `n_layers`, `layers()`, `sample`, `token_logprobs`, `completion`, `reward_args`
(`ttslens.sae.vectors.lm.TextPolicy` for text LMs; `ttslens.audio.vectors.TTSPolicy` for TTS backbones). Sampling
is seeded per (seed, step, prompt, sample), so a resumed run repeats the uninterrupted one.
"""

from __future__ import annotations

import json
import math
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import torch

from ttslens.sae.errors import BadInput, FileClash, MissingFile
from ttslens.sae.files import atomic_path, atomic_torch_save, atomic_write_json
from ttslens.sae.vectors.rewards import Reward
from ttslens.sae.vectors.vectors import SteeringVectors, save_vectors

OBJECTIVES = ("rl", "likelihood")
ADVANTAGES = ("grpo", "rloo")
CKPT, LOG, SUMMARY = "checkpoint.pt", "train_log.jsonl", "summary.json"


@dataclass
class VectorConfig:
    """Train one additive steering vector per layer (every model weight frozen): likelihood of targets, or online
    RL against a reward (`ttslens vectors train`). Writes OUT/vectors.safetensors, OUT/train_log.jsonl and
    OUT/summary.json (mean reward without and with the vectors on fresh samples)."""

    model: str = ""
    """A Hugging Face causal LM (hub id or local path)."""
    backbone: str = ""
    """A TTS backbone instead (e.g. demo): prompts are texts to speak, rewards read the decoded audio."""
    model_dir: str = ""
    """The backbone's model directory or hub id (as `ttslens train --model-dir`)."""
    prompts: str = ""
    """Prompts: a .txt file (one per line) or .jsonl (records with `prompt` — or `text` —, optional `answer`
    for the answer / exact rewards, `target` for the likelihood objective, `instruct` for a TTS backbone)."""
    reward: str = ""
    """The reward SPEC (rl): regex:PATTERN, answer, exact, module:function, a TTS name (laughter, male, female,
    slower, faster, content), or a weighted sum such as laughter+content."""
    objective: str = "rl"
    """rl (online policy gradient against --reward) or likelihood (the NLL of each prompt's `target`)."""
    layers: list[int] = field(default_factory=list)
    """Layers whose residual output gets a vector (default: the middle layer)."""
    scope: str = ""
    """Positions the vector is added at: text LMs all | prompt | generated (default all, as in the papers;
    generated leaves the first new token unsteered); TTS backbones generated | speech | text | all (default
    generated: the new speech, never a voice prompt)."""
    steps: int = 40
    """Optimiser steps."""
    prompts_per_step: int = 4
    """Prompts per step (the reference code: 16; scaled down for CPU)."""
    samples: int = 8
    """Completions sampled per prompt, one group (the reference code: 64)."""
    lr: float = 0.0
    """Adam learning rate after warm-up; 0 = 0.05 × the residual stream's RMS at the vectors' layers (measured on
    the prompts), i.e. a step of about 5% of a typical coordinate (the reference code's 5e-4 suits billion-parameter
    models over hundreds of steps; a few dozen CPU steps need more)."""
    warmup_steps: int = 5
    """Linear learning-rate warm-up steps."""
    advantage: str = "grpo"
    """grpo (reward minus the group mean, no std normalisation) or rloo (minus the mean of the others)."""
    kl: float = 0.01
    """Weight of the KL penalty to the model without the vector (0 = off)."""
    clip: float = 0.2
    """PPO clipping ε of the probability ratio (acts when --epochs > 1)."""
    epochs: int = 1
    """Policy updates per sampled batch."""
    grad_clip: float = 1.0
    """Gradient-norm clipping (0 = off)."""
    adaptive: bool = False
    """Adaptive token-wise scaling: a learned per-position scale 2·sigmoid(w·h + b) on each vector."""
    max_new_tokens: int = 24
    """Text LMs: the longest completion sampled."""
    temperature: float = 1.0
    """Sampling temperature (1: the policy itself, so the policy gradient is on-policy)."""
    eval_samples: int = 8
    """Completions per prompt (fresh seeds) scored without and with the trained vectors at the end (0 = skip)."""
    eval_prompts: int = 16
    """Prompts scored at the end (the first N)."""
    seed: int = 0
    """Seed of prompt order and sampling."""
    device: str = "cpu"
    """Device of the model: cpu, cuda, cuda:N or auto."""
    checkpoint_every: int = 10
    """Steps between checkpoints (OUT/checkpoint.pt)."""
    resume: bool = False
    """Continue the run in --out from its checkpoint."""
    overwrite: bool = False
    """Replace a run already in --out."""
    out: str = "runs/vectors"
    """Output directory."""

    RUNTIME = ("resume", "overwrite", "device", "checkpoint_every", "out", "eval_samples", "eval_prompts")

    def identity(self) -> dict:
        return {k: v for k, v in asdict(self).items() if k not in self.RUNTIME}


class Item(NamedTuple):
    prompt: str
    target: str | None = None
    info: dict = {}  # noqa: RUF012 (read-only default): answer, instruct, ... passed to the reward


def load_prompts(path: str) -> list[Item]:
    """A prompts file: .txt (a prompt per line) or .jsonl (see VectorConfig.prompts)."""
    if not path:
        raise BadInput("give the prompts: --prompts FILE (.txt, one per line, or .jsonl)")
    p = Path(path)
    if not p.exists():
        raise MissingFile(f"--prompts {path}: no such file")
    items = []
    if p.suffix == ".jsonl":
        for n, line in enumerate(p.read_text().splitlines(), 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
                prompt = rec.get("prompt", rec.get("text"))
            except (json.JSONDecodeError, AttributeError):
                raise BadInput(f"{path}:{n}: not a JSON record with a `prompt`") from None
            if not isinstance(prompt, str) or not prompt.strip():
                raise BadInput(f"{path}:{n}: the record has no `prompt` (or `text`)")
            info = {k: v for k, v in rec.items() if k not in ("prompt", "text", "target")}
            items.append(Item(prompt, rec.get("target"), info))
    else:
        items = [Item(line.strip()) for line in p.read_text().splitlines() if line.strip()]
    if not items:
        raise BadInput(f"--prompts {path} holds no prompts")
    return items


def _check(cfg: VectorConfig, policy, items: list[Item]) -> Reward | None:
    if cfg.objective not in OBJECTIVES:
        raise BadInput(f"unknown --objective {cfg.objective!r}: use one of {', '.join(OBJECTIVES)}")
    if cfg.advantage not in ADVANTAGES:
        raise BadInput(f"unknown --advantage {cfg.advantage!r}: use one of {', '.join(ADVANTAGES)}")
    if cfg.steps < 1 or cfg.prompts_per_step < 1 or cfg.epochs < 1:
        raise BadInput("--steps, --prompts-per-step and --epochs must be at least 1")
    if cfg.objective == "rl" and cfg.samples < 2:
        raise BadInput("--samples must be at least 2: the group baseline needs two samples per prompt")
    if not (cfg.lr >= 0 and cfg.kl >= 0 and 0 <= cfg.clip < 1):
        raise BadInput("--lr must be >= 0 (0: from the residual's scale), --kl >= 0 and --clip in [0, 1)")
    if not cfg.layers:
        cfg.layers = [policy.n_layers // 2]
    for x in cfg.layers:
        if not 0 <= x < policy.n_layers:
            raise BadInput(f"layer {x} out of range: the model has {policy.n_layers} layers (0..{policy.n_layers - 1})")
    if cfg.objective == "likelihood":
        missing = [i for i, it in enumerate(items, 1) if not (it.target or it.info.get("audio"))]
        if missing:
            raise BadInput(
                f"--objective likelihood needs a `target` (or for a TTS backbone an `audio` file) for every prompt "
                f"(record {missing[0]} has none)"
            )
        return None
    return Reward(cfg.reward)


def _out_dir(cfg: VectorConfig) -> Path:
    out = Path(cfg.out)
    has_run = (out / CKPT).exists() or (out / LOG).exists()
    if cfg.resume and not (out / CKPT).exists():
        raise MissingFile(f"--resume: no checkpoint in {out} (start a new run without --resume)")
    if has_run and not (cfg.resume or cfg.overwrite):
        raise FileClash(f"{out} holds another run; pass --resume to continue it or --overwrite to replace it")
    if cfg.overwrite and not cfg.resume:
        for name in (CKPT, LOG, SUMMARY, "vectors.safetensors"):
            (out / name).unlink(missing_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    return out


def group_advantages(r_PS: torch.Tensor, valid_PS: torch.Tensor, kind: str = "grpo") -> torch.Tensor:
    """Advantages [P, S] from rewards [P, S] (invalid samples: 0, and left out of the baseline)."""
    n_P1 = valid_PS.sum(1, keepdim=True).float()
    r = torch.where(valid_PS, r_PS, torch.zeros_like(r_PS))
    total_P1 = r.sum(1, keepdim=True)
    if kind == "grpo":
        base = total_P1 / n_P1.clamp_min(1)
    else:  # rloo: the mean of the group's other valid samples
        base = (total_P1 - r) / (n_P1 - 1).clamp_min(1)
    adv = torch.where(valid_PS & (n_P1 >= 2), r - base, torch.zeros_like(r))
    return adv


def policy_loss(lp_BT, old_BT, ref_BT, mask_BT, adv_B, clip: float, kl: float) -> tuple[torch.Tensor, dict]:
    """The clipped policy-gradient loss with the k3 KL penalty, per-token then per-completion means."""
    ratio = torch.exp(lp_BT - old_BT)
    a = adv_B[:, None]
    surr = torch.minimum(ratio * a, ratio.clamp(1 - clip, 1 + clip) * a) if clip > 0 else ratio * a
    per_tok = -surr
    k3 = torch.zeros_like(lp_BT)
    if ref_BT is not None:
        d = ref_BT - lp_BT
        k3 = torch.exp(d) - d - 1
        per_tok = per_tok + kl * k3
    m = mask_BT.float()
    n_B = m.sum(1).clamp_min(1)
    loss = ((per_tok * m).sum(1) / n_B).mean()
    k3 = k3.detach()
    return loss, {
        "kl": float(((k3 * m).sum(1) / n_B).mean()),
        "clipped": float(((ratio - 1).abs() > clip).float()[mask_BT].mean()),
    }


def _seeds(seed: int, step: int, j: int, n: int) -> list[int]:
    return [(seed * 1_000_003 + step * 10_007 + j * 101 + i) % 2**31 for i in range(n)]


def _score(reward: Reward, policy, item: Item, comps) -> list[float | None]:
    out = []
    for c in comps:
        prompt, completion, extra = policy.reward_args(item, c)
        out.append(reward.score(prompt, completion, **{**item.info, **extra}))
    return out


def mean_reward(policy, items: list[Item], reward: Reward, vec: SteeringVectors | None, scope: str, n: int,
                seed: int, strength: float = 1.0, **sample_kw) -> dict:  # fmt: skip
    """Mean reward over n fresh samples per prompt, with the vectors (or without: vec None); the same seeds
    either way (paired)."""
    vals = []
    edits = [] if vec is None else policy.edits(vec, scope, strength)
    for j, it in enumerate(items):
        comps = policy.sample(it, n, _seeds(seed + 7919, 10**6, j, n), edits, **sample_kw)
        vals += [v for v in _score(reward, policy, it, comps) if v is not None]
    if not vals:
        return {"reward": None, "n": 0}
    t = torch.tensor(vals, dtype=torch.float64)
    se = float(t.std() / math.sqrt(len(t))) if len(t) > 1 else 0.0
    return {"reward": float(t.mean()), "se": se, "n": len(t)}


def train_vectors(
    cfg: VectorConfig,
    policy,
    items: list[Item],
    progress: bool = True,
    meta: dict | None = None,
    train_weights: bool = False,
):
    """Train; returns the summary (also OUT/summary.json). `meta`: extra metadata for the vectors file.
    `train_weights`: the baseline the papers compare against — the same objective, sampling and budget, but every
    model weight trained (in place) instead of a vector (kl must be 0: there is no frozen reference then; lr 0
    means 1e-3); nothing is saved but the log and the summary."""
    reward = _check(cfg, policy, items)
    scope = cfg.scope or policy.default_scope
    policy.check_scope(scope)
    out = _out_dir(cfg)
    torch.manual_seed(cfg.seed)
    vec = SteeringVectors(policy.d, cfg.layers, cfg.adaptive).to(policy.device)
    sample_kw = policy.sample_kwargs(cfg)
    ev_items = items[: cfg.eval_prompts]
    base_eval = None
    if reward is not None and cfg.eval_samples > 0:  # before training: with train_weights the model changes
        base_eval = mean_reward(policy, ev_items, reward, None, scope, cfg.eval_samples, cfg.seed, **sample_kw)
    if train_weights:
        if cfg.kl > 0 or cfg.resume:
            raise BadInput("the full fine-tuning baseline needs kl = 0 and no --resume")
        weights = list(policy.parameters())
        for p in weights:
            p.requires_grad_(True)
        lr = cfg.lr or 1e-3
        opt = torch.optim.Adam(weights, lr=lr)
        try:
            return _train(cfg, policy, items, progress, meta, reward, scope, out, vec, opt, lr, base_eval, weights)
        finally:
            for p in weights:
                p.requires_grad_(False)
    lr = cfg.lr or 0.05 * policy.residual_rms(items[:8], cfg.layers)
    opt = torch.optim.Adam(vec.parameters(), lr=lr)
    return _train(cfg, policy, items, progress, meta, reward, scope, out, vec, opt, lr, base_eval)


def _train(cfg, policy, items, progress, meta, reward, scope, out, vec, opt, lr, base_eval, weights=None) -> dict:
    params = weights if weights is not None else list(vec.parameters())
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / max(1, cfg.warmup_steps)))
    start, log_rows = 0, []
    if cfg.resume:
        state = torch.load(out / CKPT, map_location="cpu", weights_only=False)
        if state["identity"] != cfg.identity():
            diff = sorted(k for k in cfg.identity() if state["identity"].get(k) != cfg.identity()[k])
            raise BadInput(
                f"--resume with a changed config ({', '.join(diff)}); use the original settings or --overwrite"
            )
        vec.load_state_dict(state["vectors"])
        opt.load_state_dict(state["opt"])
        sched.load_state_dict(state["sched"])
        start, log_rows = state["step"], state["log"]
        with atomic_path(out / LOG) as tmp:  # rows logged after the checkpoint are dropped: no duplicates
            tmp.write_text("".join(json.dumps(r) + "\n" for r in log_rows))
    if weights is None and any(p.requires_grad for p in policy.parameters()):
        raise RuntimeError("the model's weights must be frozen while a vector trains")  # a bug, not input
    sample_kw = policy.sample_kwargs(cfg)
    bar = _bar(progress, cfg.steps, start)
    skipped = sum(r.get("skipped", 0) for r in log_rows)
    for step in range(start, cfg.steps):
        t0 = time.perf_counter()
        rng = random.Random(cfg.seed * 7_777_777 + step)
        batch = [items[rng.randrange(len(items))] for _ in range(cfg.prompts_per_step)]
        row: dict[str, Any] = {"step": step + 1, "lr": sched.get_last_lr()[0]}
        if cfg.objective == "likelihood":
            comps = [policy.completion(it) for it in batch]
            lp, mask = policy.token_logprobs(comps, policy.edits(vec, scope))
            loss = -(lp.sum() / mask.sum().clamp_min(1))
            row["nll"] = float(loss.detach())
            opt.zero_grad()
            loss.backward()
            _step(params, opt, sched, cfg.grad_clip)
            n_tok = int(mask.sum())
        else:
            comps, rewards = [], []
            with torch.no_grad():
                for j, it in enumerate(batch):
                    group = policy.sample(
                        it, cfg.samples, _seeds(cfg.seed, step, j, cfg.samples), policy.edits(vec, scope), **sample_kw
                    )
                    comps += group
                    rewards.append(_score(reward, policy, it, group))
            valid = torch.tensor([[r is not None for r in g] for g in rewards])
            r_PS = torch.tensor([[r if r is not None else 0.0 for r in g] for g in rewards], dtype=torch.float32)
            adv_B = group_advantages(r_PS, valid, cfg.advantage).reshape(-1)
            keep = [i for i, v in enumerate(valid.reshape(-1).tolist()) if v]
            row |= {"reward": float(r_PS[valid].mean()) if valid.any() else None, "skipped": int((~valid).sum())}
            skipped += row["skipped"]
            n_tok = 0
            if keep and bool(adv_B[keep].abs().sum() > 0):
                kept = [comps[i] for i in keep]
                adv = adv_B[keep].to(policy.device)
                with torch.no_grad():
                    ref = policy.token_logprobs(kept, [])[0] if cfg.kl > 0 else None
                old = None  # π_old: the first epoch's own log-probs (the policy that sampled), detached
                for _ in range(cfg.epochs):
                    lp, mask = policy.token_logprobs(kept, policy.edits(vec, scope))
                    old = lp.detach() if old is None else old
                    loss, stats = policy_loss(lp, old, ref, mask, adv, cfg.clip, cfg.kl)
                    opt.zero_grad()
                    loss.backward()
                    _step(params, opt, sched, cfg.grad_clip, advance=False)
                sched.step()
                row |= stats
                n_tok = int(mask.sum())
            else:
                sched.step()
                row["note"] = "no reward differences in any group: nothing to learn this step"
        row["norm"] = {str(k): round(v, 4) for k, v in vec.norms().items()}
        row["tokens_per_s"] = round(n_tok / max(time.perf_counter() - t0, 1e-9), 1)
        log_rows.append(row)
        with open(out / LOG, "a") as f:
            f.write(json.dumps(row) + "\n")
        if bar is not None:
            bar.update(1)
            bar.set_postfix(
                {
                    k: (f"{v:.3g}" if isinstance(v, float) else v)
                    for k, v in row.items()
                    if k in ("reward", "nll", "kl", "tokens_per_s")
                }
            )
        if (step + 1) % cfg.checkpoint_every == 0 or step + 1 == cfg.steps:
            state = {"identity": cfg.identity(), "step": step + 1, "vectors": vec.state_dict(), "log": log_rows}
            atomic_torch_save(out / CKPT, state | {"opt": opt.state_dict(), "sched": sched.state_dict()})
    if bar is not None:
        bar.close()
    if weights is not None:  # the fine-tuning baseline: the model itself is the result
        summary = {"out": str(out), "trained": "all weights", "lr": lr, "reward_failures": skipped}
        if base_eval is not None:
            summary["eval"] = {"base": base_eval, "trained": mean_reward(policy, items[: cfg.eval_prompts], reward,
                               None, scope, cfg.eval_samples, cfg.seed, **sample_kw)}  # fmt: skip
        atomic_write_json(out / SUMMARY, summary)
        return summary
    vec = vec.cpu().requires_grad_(False)
    info = {"model": policy.name, "backbone": cfg.backbone or None, "hook": "resid", "scope": scope,
            "objective": cfg.objective, "reward": cfg.reward if cfg.objective == "rl" else None, "data": cfg.prompts,
            "steps": cfg.steps, "config": asdict(cfg), **(meta or {})}  # fmt: skip
    save_vectors(vec, out, info)
    summary = {"out": str(out), "layers": vec.layers, "norms": vec.norms(), "lr": lr, "reward_failures": skipped}
    summary |= info
    if base_eval is not None:
        v_dev = vec.to(policy.device)
        ev_items = items[: cfg.eval_prompts]
        summary["eval"] = {
            "base": base_eval,
            "vectors": mean_reward(policy, ev_items, reward, v_dev, scope, cfg.eval_samples, cfg.seed, **sample_kw),
        }
        vec.cpu()
    if cfg.objective == "likelihood":
        with torch.no_grad():
            comps = [policy.completion(it) for it in items[: cfg.eval_prompts]]
            nll = {}
            for name, edits in (("base", []), ("vectors", policy.edits(vec.to(policy.device), scope))):
                lp, mask = policy.token_logprobs(comps, edits)
                nll[name] = float(-(lp.sum() / mask.sum().clamp_min(1)))
            summary["eval"] = {"target_nll": nll}
            vec.cpu()
    atomic_write_json(out / SUMMARY, summary)
    return summary


def _step(params, opt, sched, grad_clip: float, advance: bool = True) -> None:
    if grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(params, grad_clip)
    opt.step()
    if advance:
        sched.step()


def _bar(progress: bool, total: int, start: int):
    if not progress:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=start, desc="train vectors", unit="step")

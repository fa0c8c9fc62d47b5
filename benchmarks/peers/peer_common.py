"""Shared, library-agnostic plumbing for the peer SAE benchmark runners.

Run the runners with the peer venv (see setup_peers.sh); this module only needs torch + safetensors.
Data protocol: the first N - E rows train (cycled in order, batch by batch, no shuffle), the last E
rows evaluate. FVU is mean-centred: sum((x - x_hat)^2) / sum((x - x.mean(0))^2) over the eval rows.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable, Iterator
from typing import Any

import torch
from safetensors.torch import load_file

# Reconstruct a chunk of rows -> (x_hat, number of active latents summed over the chunk's rows).
ReconstructFn = Callable[[torch.Tensor], tuple[torch.Tensor, float]]


def parse_args(description: str) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--activations", required=True, help="safetensors file with float32 `activations` [N, d]")
    p.add_argument("--latents", type=int, required=True)
    p.add_argument("--k", type=int, required=True)
    p.add_argument("--batch-size", type=int, required=True)
    p.add_argument("--steps", type=int, required=True)
    p.add_argument("--lr", type=float, default=None, help="2e-4 if absent; with --defaults: ttslens only")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--warmup-steps", type=int, default=3, help="leading steps excluded from timing")
    p.add_argument("--eval-tokens", type=int, default=16384)
    p.add_argument("--bf16", action="store_true", help="the training step under torch.autocast(bfloat16)")
    p.add_argument("--bf16-select", action="store_true", help="ttslens only: latents chosen on a bf16 product")
    p.add_argument("--arch", default="", help="ttslens only: the architecture (default batchtopk)")
    p.add_argument(
        "--defaults", action="store_true", help="the library's own optimiser, lr and schedule (ttslens: --lr overrides)"
    )
    args = p.parse_args()
    args.lr_given = args.lr is not None
    args.lr = 2e-4 if args.lr is None else args.lr
    if args.warmup_steps >= args.steps:
        p.error("--warmup-steps must be < --steps")
    return args


def load_split(path: str, eval_tokens: int) -> tuple[torch.Tensor, torch.Tensor]:
    acts = load_file(path)["activations"]
    if acts.dtype != torch.float32 or acts.ndim != 2:
        raise ValueError(f"expected float32 [N, d], got {acts.dtype} {tuple(acts.shape)}")
    if acts.shape[0] <= eval_tokens:
        raise ValueError(f"need more than {eval_tokens} rows, got {acts.shape[0]}")
    return acts[:-eval_tokens], acts[-eval_tokens:]


def train_batches(train: torch.Tensor, batch_size: int) -> Iterator[torch.Tensor]:
    """Consecutive batches of `train`, wrapping around at the end (identical across libraries)."""
    n = train.shape[0]
    start = 0
    while True:
        if start + batch_size <= n:
            yield train[start : start + batch_size]
        else:
            yield train[torch.arange(start, start + batch_size) % n]
        start = (start + batch_size) % n


@torch.no_grad()
def evaluate(reconstruct: ReconstructFn, x: torch.Tensor, chunk: int) -> tuple[float, float]:
    """Mean-centred FVU and mean L0 over `x`, reconstructing `chunk` rows at a time."""
    sse = 0.0
    active = 0.0
    for rows in x.split(chunk):
        x_hat, n_active = reconstruct(rows)
        sse += (rows - x_hat).double().pow(2).sum().item()
        active += n_active
    total_var = (x.double() - x.double().mean(0)).pow(2).sum().item()
    return sse / total_var, active / x.shape[0]


def mmcs(path: str, W_dec_FD: torch.Tensor) -> float | None:
    """Mean over the file's true features (its `dictionary`, when it has one) of the best cosine with a learned
    decoder row; None for data without a known dictionary."""
    tensors = load_file(path)
    if "dictionary" not in tensors:
        return None
    a = W_dec_FD.detach().float()
    a = a / a.norm(dim=1, keepdim=True).clamp_min(1e-12)
    b = tensors["dictionary"].float()
    b = b / b.norm(dim=1, keepdim=True).clamp_min(1e-12)
    return (b @ a.T).max(1).values.mean().item()


def autocast(args: argparse.Namespace):
    """bf16 autocast around a step when --bf16 is given (CPU)."""
    return torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.bf16)


def peak_rss_mb() -> float:
    """This process's peak resident memory so far (MB): data, model, optimiser and the step's buffers."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_timed(step: Callable[[torch.Tensor], None], batches: Iterator[torch.Tensor], steps: int) -> list[float]:
    """Run `steps` training steps; return each step's wall time (batch fetch excluded)."""
    times = []
    for _ in range(steps):
        batch = next(batches)
        t0 = time.perf_counter()
        step(batch)  # CPU: ops have finished when this returns (loss/optimizer run eagerly)
        times.append(time.perf_counter() - t0)
    return times


def emit(args: argparse.Namespace, step_times: list[float], **fields: Any) -> None:
    timed = step_times[args.warmup_steps :]
    med = statistics.median(timed)
    record = {
        **{k: v for k, v in fields.items() if k in ("library", "version", "arch")},
        "tokens_per_s": args.batch_size / med,
        "step_s_median": med,
        **{k: v for k, v in fields.items() if k not in ("library", "version", "arch")},
        "steps": args.steps,
        "timed_steps": len(timed),
        "batch_size": args.batch_size,
        "latents": args.latents,
        "k": args.k,
        "bf16_autocast": args.bf16,
        "peak_rss_mb": peak_rss_mb(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
    }
    print(json.dumps(record))

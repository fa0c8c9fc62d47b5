"""ttslens's SAE training under the same protocol as the peer runners (main venv), through
`ttslens.sae.training.train` itself: the trainer reads the activation file (its tail held out), logs every
step, and the step times are read back from its own log (`train_log.jsonl`: the wall time between two steps,
batch fetch included). Same steps, batch, latents, k and lr as the peers; without --defaults no latent counts as
dead before 10M tokens (sparsify's threshold). `--bf16` runs the trainer's bf16 autocast; `--bf16-select`
chooses the latents on a bf16 product (values recomputed in fp32). Also timed in this process: the floor every
top-k SAE pays, one dense encoder product [B, d] x [d, F] (+ bias), in fp32 and in bf16. Evaluation uses the saved SAE's
inference encoder (a single JumpReLU threshold for batchtopk).
"""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from peer_common import ReconstructFn, emit, evaluate, load_split, mmcs, parse_args

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from ttslens.sae.base import SAEConfig  # noqa: E402
from ttslens.sae.devices import bf16_native  # noqa: E402
from ttslens.sae.training import TrainConfig, train  # noqa: E402


def reconstructor(sae) -> ReconstructFn:
    def run(x: torch.Tensor) -> tuple[torch.Tensor, float]:
        z = sae.encode(x)
        return sae.decode(z), float((z > 0).sum())

    return run


def encoder_floor(d: int, latents: int, batch: int, bf16: bool, repeats: int = 10) -> float:
    """Median seconds of one dense encoder product F.linear(x [B, d], W [F, d], b [F])."""
    x, w, b = torch.randn(batch, d), torch.randn(latents, d) / d**0.5, torch.zeros(latents)
    times = []
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        for _ in range(repeats + 2):
            t0 = time.perf_counter()
            torch.nn.functional.linear(x, w, b)
            times.append(time.perf_counter() - t0)
    return statistics.median(times[2:])


def main() -> None:
    args = parse_args(__doc__ or "")
    bf16, select, arch = args.bf16, args.bf16_select, args.arch or "batchtopk"
    _, held_out = load_split(args.activations, args.eval_tokens)
    with tempfile.TemporaryDirectory() as tmp:
        cfg = TrainConfig(
            sae=SAEConfig(arch=arch, d_sae=args.latents, k=args.k),
            activations=args.activations,
            tokens=args.steps * args.batch_size,
            batch_size=args.batch_size,
            lr=0.0 if args.defaults and not args.lr_given else args.lr,  # 0: the trainer's rule
            seed=args.seed,
            eval_tokens=args.eval_tokens,
            calibration_tokens=min(65536, 4 * args.batch_size),
            bf16=bf16,
            bf16_select=select,
            log_every=1,
            # --defaults: the trainer's own dead-latent rule; else as sparsify's dead_feature_threshold (timing runs)
            dead_tokens=0 if args.defaults else 10_000_000,
            out=str(Path(tmp) / "sae"),
        )
        result = train(cfg, progress=False)
        rows = [json.loads(line) for line in (Path(tmp) / "sae" / "train_log.jsonl").read_text().splitlines()]
    step_times = [args.batch_size / r["tokens_per_s"] for r in rows]
    floors = {p: encoder_floor(held_out.shape[1], args.latents, args.batch_size, p == "bf16") for p in ("fp32", "bf16")}
    fvu, l0 = evaluate(reconstructor(result.sae), held_out, args.batch_size)
    import ttslens.sae as pkg

    timed = statistics.median(step_times[args.warmup_steps :])
    emit(
        args,
        step_times,
        library="ttslens",
        version=getattr(pkg, "__version__", "0.1.0"),
        arch=arch,
        fvu=fvu,
        l0=l0,
        mmcs=mmcs(args.activations, result.sae.W_dec),
        dead_pct=rows[-1]["dead_pct"],
        bf16=bf16,
        bf16_select=select and bf16_native("cpu") and not bf16,
        encoder_product_s=floors,
        step_over_encoder_product={p: timed / f for p, f in floors.items()},
        trainer_lr=cfg.lr_eff,
    )


if __name__ == "__main__":
    main()

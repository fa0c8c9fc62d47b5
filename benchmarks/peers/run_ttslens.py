"""ttslens's SAE training step under the same protocol as the peer runners (main venv).

The step is the one `sae.training.trainer` runs: activations scaled so E||x|| = sqrt(d) (estimated
on the first batches), the trainer's `init_from_batch` on the first batch, forward with AuxK once
latents die, decoder-parallel gradient removed, grad clip 1.0, Adam at a constant --lr, decoder rows
renormalised. Batches come in file order (no shuffle), like the peers. Evaluation uses the inference
encoder (a single JumpReLU threshold for batchtopk) with the scale folded into the weights.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import torch
from peer_common import ReconstructFn, emit, evaluate, load_split, parse_args, run_timed, train_batches

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from ttslens.sae.base import SAEConfig, make_sae  # noqa: E402
from ttslens.sae.training.trainer import init_from_batch  # noqa: E402


def reconstructor(sae) -> ReconstructFn:
    def run(x: torch.Tensor) -> tuple[torch.Tensor, float]:
        z = sae.encode(x)
        return sae.decode(z), float((z > 0).sum())

    return run


def main() -> None:
    args = parse_args(__doc__ or "")
    arch = "batchtopk"
    train, held_out = load_split(args.activations, args.eval_tokens)
    d = train.shape[1]
    scale = math.sqrt(d) / train[: 4 * args.batch_size].norm(dim=1).mean().item()
    sae = make_sae(SAEConfig(arch=arch, d_in=d, d_sae=args.latents, k=args.k))
    init_from_batch(sae, train[: args.batch_size] * scale, args.seed)
    opt = torch.optim.Adam(sae.parameters(), lr=args.lr)
    since_fired = torch.zeros(args.latents, dtype=torch.long)
    dead_after = 10_000_000

    def step(batch: torch.Tensor) -> None:
        out = sae(batch * scale, dead_F=since_fired >= dead_after)
        opt.zero_grad(set_to_none=True)
        out.loss.backward()
        sae.remove_parallel_grads()
        torch.nn.utils.clip_grad_norm_(sae.parameters(), 1.0)
        opt.step()
        sae.normalize_decoder()
        since_fired.add_(batch.shape[0])
        since_fired[out.idx[out.vals.detach() > 0]] = 0

    def eval_now() -> tuple[float, float]:
        folded = make_sae(sae.cfg)
        folded.load_state_dict(sae.state_dict())
        folded.fold_scale(scale)
        return evaluate(reconstructor(folded.eval()), held_out, args.batch_size)

    fvu_init, l0_init = eval_now()
    step_times = run_timed(step, train_batches(train, args.batch_size), args.steps)
    fvu, l0 = eval_now()
    import ttslens.sae as pkg

    emit(
        args,
        step_times,
        library="ttslens",
        version=getattr(pkg, "__version__", "0.1.0"),
        arch=arch,
        fvu=fvu,
        l0=l0,
        fvu_init=fvu_init,
        l0_init=l0_init,
    )


if __name__ == "__main__":
    main()

"""Benchmark EleutherAI sparsify's TopK SAE training step on a fixed activation file (peer venv only).

sparsify's `Trainer.fit` is tied to running an LLM with hooks, so the step below calls sparsify's APIs
in the order its trainer does for loss_fn="fvu", grad_acc_steps=micro_acc_steps=1, autoencoding:
first step only, b_dec <- batch mean; `set_decoder_norm_to_unit_norm()`; `SparseCoder.forward`
(fused TopK encoder, sparse decoder, fvu + auxk on dead latents when auxk_alpha > 0 per its
TrainConfig defaults); backward on fvu + auxk_alpha * auxk + multi_topk_fvu / 8;
`remove_gradient_parallel_to_decoder_directions()`; optimizer step + zero_grad; dead-latent counters.
Optimizer: torch Adam at --lr with a constant LR (sparsify's own "adam" path uses this Adam when
bitsandbytes is absent, but with a 1000-step linear warm-up/decay schedule, which is not applied here).
With --defaults: its default optimiser as its trainer builds it, ScheduleFree(SignSGD, momentum 0.95) at
lr 5e-3 / sqrt(latents / 2^14), switched to its averaged weights (`eval()`) before evaluating, as its
checkpointing does. Evaluation uses `encode` + `decode`, which is also its inference path.
"""

from __future__ import annotations

import contextlib
import sys

import torch
from peer_common import ReconstructFn, autocast, emit, evaluate, load_split, mmcs, parse_args, run_timed, train_batches

with contextlib.redirect_stdout(sys.stderr):  # sparsify prints its decoder choice at import
    import sparsify
    from sparsify import SaeConfig, SparseCoder, TrainConfig


def reconstructor(sae: SparseCoder) -> ReconstructFn:
    def run(x: torch.Tensor) -> tuple[torch.Tensor, float]:
        top_acts, top_indices, _ = sae.encode(x)
        return sae.decode(top_acts, top_indices), float((top_acts > 0).sum())

    return run


def main() -> None:
    args = parse_args(__doc__ or "")
    torch.manual_seed(args.seed)
    train, held_out = load_split(args.activations, args.eval_tokens)

    cfg = TrainConfig(SaeConfig(num_latents=args.latents, k=args.k), optimizer="adam", lr=args.lr)
    sae = SparseCoder(train.shape[1], cfg.sae, device="cpu", dtype=torch.float32)
    if args.defaults:
        from schedulefree import ScheduleFreeWrapper
        from sparsify.sign_sgd import SignSGD

        lr = 5e-3 / (sae.num_latents / 2**14) ** 0.5
        optimizer = ScheduleFreeWrapper(SignSGD([{"params": sae.parameters(), "lr": lr}]), momentum=0.95)
        optimizer.train()
    else:
        lr, optimizer = args.lr, torch.optim.Adam(sae.parameters(), lr=args.lr)
    tokens_since_fired = torch.zeros(sae.num_latents, dtype=torch.long)
    did_fire = torch.zeros(sae.num_latents, dtype=torch.bool)
    first = True

    def step(batch: torch.Tensor) -> None:
        nonlocal first
        if first:  # sparsify centres the pre-activations on its first batch
            sae.b_dec.data = batch.mean(0)
            first = False
        sae.set_decoder_norm_to_unit_norm()
        dead_mask = tokens_since_fired > cfg.dead_feature_threshold if cfg.auxk_alpha > 0 else None
        with autocast(args):
            out = sae(batch, dead_mask=dead_mask)
            loss = out.fvu + cfg.auxk_alpha * out.auxk_loss + out.multi_topk_fvu / 8
        did_fire[out.latent_indices.flatten()] = True
        loss.backward()
        sae.remove_gradient_parallel_to_decoder_directions()
        optimizer.step()
        optimizer.zero_grad()
        with torch.no_grad():
            tokens_since_fired.add_(batch.shape[0])
            tokens_since_fired[did_fire] = 0
            did_fire.zero_()

    # sparsify sets b_dec from the first training batch, so the initial eval does the same first.
    batches = train_batches(train, args.batch_size)
    with torch.no_grad():
        sae.b_dec.data = train[: args.batch_size].mean(0)
    fvu_init, l0_init = evaluate(reconstructor(sae), held_out, args.batch_size)

    step_times = run_timed(step, batches, args.steps)
    if args.defaults:
        optimizer.eval()  # the averaged weights, as sparsify saves them

    fvu, l0 = evaluate(reconstructor(sae), held_out, args.batch_size)
    emit(
        args,
        step_times,
        library="sparsify",
        version=sparsify.__version__,
        arch="topk",
        fvu=fvu,
        l0=l0,
        fvu_init=fvu_init,
        l0_init=l0_init,
        mmcs=mmcs(args.activations, sae.W_dec),
        eval_mode="inference",
        optimizer="schedulefree_signum" if args.defaults else "adam_constant_lr",
        lr=lr,
        auxk_alpha=cfg.auxk_alpha,
    )


if __name__ == "__main__":
    main()

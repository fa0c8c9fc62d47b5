"""Benchmark SAELens's BatchTopK SAE training step on a fixed activation file (peer venv only).

Timed per step is exactly what SAELens's own training loop does per step: `SAETrainer.step(batch)`
(the public seam its `fit()` calls), i.e. `BatchTopKTrainingSAE.training_forward_pass` (BatchTopK
encode with rescale_acts_by_decoder_norm=True, decode, MSE + TopK aux loss on dead latents,
topk_threshold EMA update), dead-latent bookkeeping, backward, clip_grad_norm_(1.0), torch Adam step,
zero_grad and the (constant) LR scheduler step. SAELens has no decoder unit-norm constraint or
gradient projection for this architecture (rescale_acts_by_decoder_norm covers it). No LLM, no
activation store; `fit()`'s every-2000-steps sparsity-window reset and wandb logging are skipped.

Evaluation uses the inference form SAELens saves for BatchTopK: a JumpReLUSAE whose threshold is the
learned topk_threshold (`save_inference_model` + `SAE.load_from_disk`). The BatchTopK training encoder
(batch-level top-k over chunks of --batch-size eval rows) is reported too as fvu_batchtopk/l0_batchtopk.
"""

from __future__ import annotations

import tempfile

import sae_lens
import torch
from peer_common import ReconstructFn, autocast, emit, evaluate, load_split, mmcs, parse_args, run_timed, train_batches
from sae_lens import SAE, BatchTopKTrainingSAE, BatchTopKTrainingSAEConfig, SAETrainer
from sae_lens.config import SAETrainerConfig


def inference_sae(sae: BatchTopKTrainingSAE) -> SAE:
    """Round-trip through SAELens's own save path: BatchTopK training SAE -> JumpReLU inference SAE."""
    with tempfile.TemporaryDirectory() as tmp:
        sae.save_inference_model(tmp)
        return SAE.load_from_disk(tmp, device="cpu")


def reconstructor(model: SAE) -> ReconstructFn:
    def run(x: torch.Tensor) -> tuple[torch.Tensor, float]:
        acts = model.encode(x)
        return model.decode(acts), float((acts != 0).sum())

    return run


def main() -> None:
    args = parse_args(__doc__ or "")
    torch.manual_seed(args.seed)
    train, held_out = load_split(args.activations, args.eval_tokens)

    cfg = BatchTopKTrainingSAEConfig(d_in=train.shape[1], d_sae=args.latents, k=args.k)
    sae = BatchTopKTrainingSAE(cfg)
    batches = train_batches(train, args.batch_size)
    lr = 3e-4 if args.defaults else args.lr  # --defaults: SAELens's documented lr (constant schedule, Adam)
    trainer_cfg = SAETrainerConfig(
        total_training_samples=args.steps * args.batch_size,
        train_batch_size_samples=args.batch_size,
        lr=lr,
        lr_end=lr,  # only read by decaying schedulers; the default scheduler is "constant"
        device="cpu",
    )
    trainer = SAETrainer(cfg=trainer_cfg, sae=sae, data_provider=batches)

    fvu_init, l0_init = evaluate(reconstructor(inference_sae(sae)), held_out, args.batch_size)

    def step(batch: torch.Tensor) -> None:
        with autocast(args):
            trainer.step(batch)
        trainer.n_training_steps += 1  # fit() advances this after step()

    step_times = run_timed(step, batches, args.steps)

    fvu, l0 = evaluate(reconstructor(inference_sae(sae)), held_out, args.batch_size)
    sae.eval()
    fvu_btk, l0_btk = evaluate(reconstructor(sae), held_out, args.batch_size)
    emit(
        args,
        step_times,
        library="sae_lens",
        version=sae_lens.__version__,
        arch=cfg.architecture(),
        fvu=fvu,
        l0=l0,
        fvu_init=fvu_init,
        l0_init=l0_init,
        eval_mode="jumprelu_inference",
        fvu_batchtopk=fvu_btk,
        l0_batchtopk=l0_btk,
        topk_threshold=float(sae.topk_threshold),
        mmcs=mmcs(args.activations, sae.W_dec),
        lr=lr,
    )


if __name__ == "__main__":
    main()

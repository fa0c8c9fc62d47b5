"""The training config: one dataclass drives `ttslens train` and `ttslens.sae.training.train`."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

from ttslens.sae.base import SAEConfig
from ttslens.sae.errors import BadInput


@dataclass
class TrainConfig:
    """Train a sparse autoencoder on one layer's residual stream."""

    sae: SAEConfig = field(default_factory=SAEConfig)
    """Architecture and size (d_in is read from the data)."""
    model: str = ""
    """Hugging Face causal LM (hub id or local path) to harvest activations from."""
    dataset: str = ""
    """Text dataset for --model: a hub name or a local .txt/.jsonl/.csv/.parquet file or saved dataset."""
    text_column: str = "text"
    """Column of --dataset holding the text."""
    activations: str = ""
    """Cached activations instead of a model: a safetensors file or a directory of shards."""
    backbone: str = ""
    """A TTS backbone instead (e.g. demo): teacher-forced over its corpus, with text/speech modality."""
    model_dir: str = ""
    """The backbone's model directory or hub id (e.g. the Fun-CosyVoice3-0.5B-2512 files for cosyvoice3); the
    same as --backbone NAME:DIR."""
    corpus: str = ""
    """With --backbone: what to teacher-force (default: the backbone's own corpus; or (text, audio) pairs:
    a .jsonl/.csv/.parquet file, a saved `datasets` directory or hf:NAME, tokenised by the backbone)."""
    layer: int = 0
    """Decoder layer whose output (the residual stream after it) is read."""
    hook: str = "resid"
    """What of that layer: resid (the residual stream after it), mlp or attn (its MLP / attention block's
    output, before it is added to the residual: the modules feature flow traces features through)."""
    context: int = 256
    """Tokens per document when harvesting from --model (longer ones are truncated)."""
    tokens: int = 2_000_000
    """Training tokens."""
    batch_size: int = 4096
    """Tokens per optimiser step (over all processes)."""
    lr: float = 0.0
    """Adam learning rate; 0 = 2e-3 / sqrt(latents / 2^14) (chosen by benchmarks/bench_defaults.py)."""
    warmup_steps: int = 1000
    """Linear learning-rate warm-up steps (at most 10% of the run)."""
    decay_frac: float = 0.2
    """Fraction of the run, at the end, over which the learning rate decays linearly to 0."""
    grad_clip: float = 1.0
    """Gradient-norm clipping (0 = off)."""
    seed: int = 0
    """Seed for initialisation and data order."""
    buffer_tokens: int = 65536
    """Shuffle buffer (rows held in memory and shuffled together)."""
    exclude_special: bool = False
    """Skip positions whose modality is 'special' (BOS, task and end tokens)."""
    modality: str = "all"
    """Train (and evaluate) on the positions of one modality only: all | text | speech (e.g. a text-only base
    SAE for `ttslens boost` to teach speech)."""
    dead_tokens: int = 0
    """A latent that has not fired for this many tokens is dead (AuxK); 0 = 100 mean firing intervals
    (100 x latents / k tokens), at least one batch and at most 10M."""
    eval_tokens: int = 16384
    """Held-out tokens for the final metrics (the tail of a cache, fresh text for a model)."""
    calibration_tokens: int = 65536
    """batchtopk: training rows (read after the last step) on which the inference threshold is set so the
    mean L0 is k; 0 = keep the running average of the batches' cuts (which lags behind on short runs)."""
    bf16: bool = False
    """Run the encoder under bfloat16 autocast."""
    bf16_select: bool = False
    """Where bf16 products are native (AMX / avx512_bf16 CPUs, bf16 GPUs): choose the top-k latents on a bf16
    encoder product and recompute the chosen pre-activations exactly in fp32 (values, loss and gradients stay
    fp32). Off by default: on a 2-core CPU the exact recompute and the selection's passes over a bf16 [B, F]
    cost more than the product saves (benchmarks/RESULTS.md, issue 17)."""
    device: str = "cpu"
    """Torch device (under torchrun, cuda uses the local rank)."""
    model_dtype: str = "float32"
    """dtype of the model whose activations are harvested (--model or --backbone): float32, bfloat16, float16."""
    model_batch: int = 8
    """Documents per model forward when harvesting."""
    checkpoint_every: int = 1_000_000
    """Save a resumable checkpoint every this many tokens (0 = only at the end)."""
    log_every: int = 20
    """Steps between progress/log updates."""
    out: str = "runs/sae"
    """Output directory (SAE + checkpoint + train_log.jsonl + metrics.json)."""
    resume: bool = False
    """Continue the run in --out from its checkpoint (the config must match)."""
    overwrite: bool = False
    """Replace another run found in --out."""

    def __post_init__(self) -> None:
        if isinstance(self.sae, dict):
            self.sae = SAEConfig.from_dict(self.sae)
        if bool(self.activations) + bool(self.model) + bool(self.backbone) != 1:
            raise BadInput(
                "give exactly one data source: --activations PATH, --model ID --dataset NAME, or --backbone NAME"
            )
        if self.model and not self.dataset:
            raise BadInput("--model needs --dataset (a hub name or a local text file)")
        if self.tokens < self.batch_size:
            raise BadInput(f"--tokens {self.tokens} is less than one batch ({self.batch_size}); raise --tokens")
        if self.batch_size <= 0 or self.lr < 0:
            raise BadInput("--batch-size must be positive and --lr non-negative")

    @property
    def steps(self) -> int:
        return self.tokens // self.batch_size

    @property
    def lr_eff(self) -> float:
        return self.lr or 2e-3 / math.sqrt(self.sae.d_sae / 2**14)

    @property
    def dead_after(self) -> int:
        """Tokens without firing after which a latent is dead (AuxK revives it)."""
        return self.dead_tokens or min(10_000_000, max(self.batch_size, 100 * self.sae.d_sae // max(1, self.sae.k)))

    def lr_scale(self, step: int) -> float:
        """Warm-up, constant, then linear decay to 0."""
        warm = max(1, min(self.warmup_steps, self.steps // 10))
        decay_start = int(self.steps * (1 - self.decay_frac))
        if step < warm:
            return (step + 1) / warm
        if step >= decay_start and self.decay_frac > 0:
            return max(0.0, (self.steps - step) / max(1, self.steps - decay_start))
        return 1.0

    # fields that may change between a run and its --resume (out: a run directory moved elsewhere resumes)
    RUNTIME = (
        "resume", "overwrite", "log_every", "device", "checkpoint_every", "model_batch", "calibration_tokens",
        "bf16_select",
    )  # fmt: skip
    RUNTIME += ("out",)

    def identity(self) -> dict:
        d = asdict(self)
        for k in self.RUNTIME:
            d.pop(k, None)
        d["sae"].pop("d_in", None)
        if d.get("modality") == "all":  # runs from before the field resume as they were
            d.pop("modality")
        return d

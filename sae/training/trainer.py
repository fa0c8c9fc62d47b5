"""The training loop: data -> scaled batches -> SAE step -> decoder upkeep -> logs/checkpoints.

Reads top to bottom: `train(cfg)` builds the data source, initialises (or resumes) the SAE, runs
`cfg.steps` steps and writes the SAE directory with the activation scale folded into its weights.
"""

from __future__ import annotations

import json
import math
import sys
import time
from contextlib import nullcontext
from dataclasses import asdict
from pathlib import Path
from typing import NamedTuple

import torch
from tqdm.auto import tqdm

from ttslens.sae.activations import (
    BatchStream,
    CachedActivations,
    StreamState,
    geometric_median,
    mean_norm,
    take_tokens,
)
from ttslens.sae.base import SAE, ForwardOutput, global_batch, make_sae
from ttslens.sae.commands import l0_vs_k
from ttslens.sae.devices import bf16_native, fused_ok
from ttslens.sae.errors import BadInput
from ttslens.sae.files import atomic_write_json, save_sae
from ttslens.sae.hooks import hook_name
from ttslens.sae.metrics import evaluate
from ttslens.sae.sparse_ops import bf16_selection
from ttslens.sae.training import checkpoint
from ttslens.sae.training.config import TrainConfig
from ttslens.sae.training.dist import (
    DistInfo,
    all_sum,
    barrier,
    broadcast_float,
    broadcast_module,
    broadcast_tensor,
    check_replicas,
    setup,
    teardown,
)

LOG = "train_log.jsonl"


class TrainResult(NamedTuple):
    path: Path
    sae: SAE
    metrics: dict


def build_source(cfg: TrainConfig, say=lambda msg: None):
    """Training source, evaluation source and facts about the data for the SAE's metadata."""
    if cfg.backbone:
        raise BadInput(
            "a --backbone run needs its source from audio/: use `ttslens train` or ttslens.audio.harvest.train_sae"
        )
    if cfg.activations:
        full = CachedActivations(cfg.activations)
        n = full.total_rows
        hold = cfg.eval_tokens if n >= 4 * cfg.eval_tokens else 0
        train_src = CachedActivations(cfg.activations, window=(0, n - hold))
        eval_src = CachedActivations(cfg.activations, window=(n - hold, n)) if hold else train_src
        return (
            train_src,
            eval_src,
            {"dataset_path": cfg.activations, "hook_name": hook_name(cfg.layer, cfg.hook), "layer": cfg.layer},
        )
    from ttslens.sae.lm.harvest import ModelActivations, load_model, load_text_dataset

    say(f"loading {cfg.model} and the dataset {cfg.dataset} ...")
    model, tok = load_model(cfg.model, cfg.device, cfg.model_dtype)
    ds = load_text_dataset(cfg.dataset, text_column=cfg.text_column)
    src = ModelActivations(
        model, tok, ds, cfg.layer, cfg.context, cfg.text_column, cfg.model_batch, cfg.device, cfg.hook
    )
    info = {
        "model_name": cfg.model,
        "dataset_path": cfg.dataset,
        "layer": cfg.layer,
        "context_size": cfg.context,
        "hook_name": hook_name(cfg.layer, cfg.hook),
    }
    return src, src, info


@torch.no_grad()
def init_from_batch(sae: SAE, x_BD: torch.Tensor, seed: int) -> SAE:
    """Seeded tied init, b_dec at the batch's geometric median, and the encoder scaled by the
    least-squares factor that best fits the batch (every architecture's code is linear in that
    scale), so the first reconstruction never overshoots (FVU <= 1 from the start)."""
    sae.reset_parameters(torch.Generator().manual_seed(seed))
    sae.b_dec.copy_(geometric_median(x_BD))
    r_BD = sae.eval()(x_BD).recon - sae.b_dec  # eval: the probe is no batchtopk threshold update
    c = float(((x_BD - sae.b_dec) * r_BD).sum() / r_BD.pow(2).sum().clamp_min(1e-12))
    if c > 0:
        sae.scale_encoder(c)
    return sae.train()


@torch.no_grad()
def init_boost(sae: SAE, x_BD: torch.Tensor, e_BD: torch.Tensor, seed: int) -> SAE:
    """An SAE Boost residual SAE: seeded tied init, no decoder bias (b_dec = 0, frozen: the encoder reads x
    itself), the encoder scaled by the least-squares factor that best fits the base's error e."""
    sae.reset_parameters(torch.Generator().manual_seed(seed))
    r_BD = sae.eval()(x_BD).recon
    c = float((e_BD * r_BD).sum() / r_BD.pow(2).sum().clamp_min(1e-12))
    if c > 0:
        sae.scale_encoder(c)
    return sae.train()


def boost_target(base: SAE, x_BD: torch.Tensor, scale: float) -> torch.Tensor:
    """What a residual SAE learns on scaled rows x_BD = s·x: s·(x − x̂_base(x)) (the base reads raw x)."""
    with torch.no_grad():
        return x_BD - scale * base.reconstruct(x_BD / scale).to(x_BD.dtype)


def _init_sae(cfg: TrainConfig, source, dist: DistInfo, say, boost_base: SAE | None = None) -> tuple[SAE, float]:
    """Activation scale so that E||s x|| = sqrt(d), then `init_from_batch` on a first batch (`init_boost`
    for the residual SAE of a boost)."""
    probe_batch = min(cfg.batch_size, 4096)
    probe = iter(
        BatchStream(
            source,
            probe_batch,
            cfg.buffer_tokens,
            cfg.seed + 7919,
            exclude_special=cfg.exclude_special,
            modality=cfg.modality,
        )  # fmt: skip
    )
    say(f"reading a first block of activations ({max(probe_batch, cfg.buffer_tokens)} rows) ...")
    x0, _ = next(probe)
    say(f"estimating the activation scale on 4 batches of {probe_batch} rows ...")
    scale = broadcast_float(math.sqrt(cfg.sae.d_in) / max(mean_norm(probe, 4), 1e-12))
    x0 = x0[:4096] * scale
    if boost_base is not None:
        say("initialising the residual SAE on the base SAE's error ...")
        sae = init_boost(frozen_b_dec(make_sae(cfg.sae)), x0, boost_target(boost_base, x0, scale), cfg.seed)
    else:
        say(f"initialising the SAE (b_dec = geometric median of {min(len(x0), 4096)} rows) ...")
        sae = init_from_batch(make_sae(cfg.sae), x0, cfg.seed)
    broadcast_module(sae)
    return sae, scale


def frozen_b_dec(sae: SAE) -> SAE:
    """No decoder bias (a boost's residual SAE): b_dec stays 0."""
    with torch.no_grad():
        sae.b_dec.zero_()
    sae.b_dec.requires_grad_(False)
    return sae


def train_step(
    model: torch.nn.Module,
    sae: SAE,
    opt: torch.optim.Optimizer,
    x_BD: torch.Tensor,
    dead_F: torch.Tensor,
    lr: float,
    cfg: TrainConfig,
    data_parallel: bool,
    target_BD: torch.Tensor | None = None,
) -> ForwardOutput:
    """One optimiser step on this process's rows x_BD (already scaled). `model` is `sae` or its DDP
    wrapper; with `data_parallel` the step sees the processes' rows as one global batch (BatchTopK
    selection and threshold, FVU denominators), so it equals one process stepping on their concatenation."""
    for g in opt.param_groups:
        g["lr"] = lr
    autocast = torch.autocast(x_BD.device.type, dtype=torch.bfloat16) if cfg.bf16 else nullcontext()
    select = bf16_selection(cfg.bf16_select and not cfg.bf16 and bf16_native(x_BD.device))
    with global_batch(data_parallel), autocast, select:
        res = model(x_BD, dead_F=dead_F, target_BD=target_BD)
    opt.zero_grad(set_to_none=True)
    res.loss.backward()
    sae.remove_parallel_grads()
    if cfg.grad_clip:
        torch.nn.utils.clip_grad_norm_(sae.parameters(), cfg.grad_clip)
    opt.step()
    sae.normalize_decoder()
    return res


def train(cfg: TrainConfig, source=None, progress: bool = True, boost_base: SAE | None = None) -> TrainResult:
    """Train per `cfg`. `source`: an activation source, or (train source, eval source, metadata) —
    how callers outside sae/ (e.g. a TTS backbone in audio/) supply data. `boost_base`: train the residual
    SAE of an SAE Boost on that frozen SAE's error (`ttslens.sae.boost`); its metrics are the stitched SAE's."""
    dist = setup(cfg.device)
    out = Path(cfg.out)

    def say(msg: str) -> None:  # set-up phases, one line each on stderr (quiet with progress=False)
        if progress and dist.main:
            print(msg, file=sys.stderr, flush=True)

    checkpoint.check_out_dir(out, cfg.resume, cfg.overwrite)
    if source is None:
        train_src, eval_src, info = build_source(cfg, say)
    elif isinstance(source, tuple):
        train_src, eval_src, info = source
    else:
        train_src, eval_src, info = source, source, {"layer": cfg.layer}
    cfg.sae.d_in = train_src.d
    if cfg.batch_size % dist.world:
        raise BadInput(f"--batch-size {cfg.batch_size} must divide evenly over {dist.world} processes")
    local_batch = cfg.batch_size // dist.world

    # ---- model, optimiser, data position: fresh or from the checkpoint -------------------------
    identity = cfg.identity()
    state = checkpoint.load(out, identity, dist.world, cfg.RUNTIME) if cfg.resume else None
    if state is None:
        sae, scale = _init_sae(cfg, train_src, dist, say, boost_base)
        step, stream_state = 0, None
        since_fired = torch.zeros(cfg.sae.d_sae, dtype=torch.long)
    else:
        sae = make_sae(cfg.sae)
        sae.load_state_dict(state["sae"])
        if boost_base is not None:
            frozen_b_dec(sae)
        scale, step, since_fired = state["scale"], state["step"], state["since_fired"]
        stream_state = StreamState(*state["stream"][dist.rank])
    sae.to(dist.device).train()
    opt = torch.optim.Adam(sae.parameters(), lr=cfg.lr_eff, betas=(0.9, 0.999), fused=fused_ok(dist.device))
    if boost_base is not None:
        boost_base = boost_base.to(dist.device).eval().requires_grad_(False)
    if state is not None:
        opt.load_state_dict(state["opt"])
    model = sae
    if dist.world > 1:
        model = torch.nn.parallel.DistributedDataParallel(sae)
    stream = BatchStream(
        train_src, local_batch, cfg.buffer_tokens, cfg.seed, dist.rank, dist.world, cfg.exclude_special, stream_state,
        cfg.modality,
    )  # fmt: skip
    batches = iter(stream)
    dead_after = cfg.dead_after
    since_fired = since_fired.to(dist.device)

    if dist.main:
        out.mkdir(parents=True, exist_ok=True)
        _trim_log(out / LOG, step)
    log = open(out / LOG, "a") if dist.main else None
    if step < cfg.steps:
        say(f"training: {cfg.steps - step} steps of {cfg.batch_size} rows (reading the stream's first block) ...")
    bar = tqdm(
        total=cfg.steps,
        initial=step,
        unit="step",
        desc=f"train {cfg.sae.arch}",
        disable=not (progress and dist.main),
        dynamic_ncols=True,
        mininterval=0.5 if sys.stderr.isatty() else 30,
    )
    every_ckpt = max(1, cfg.checkpoint_every // cfg.batch_size) if cfg.checkpoint_every else 0
    t_last, tok_last = time.perf_counter(), 0

    def save_checkpoint() -> None:
        streams = [None] * dist.world
        if dist.world > 1:
            torch.distributed.all_gather_object(streams, tuple(stream.state))
        else:
            streams = [tuple(stream.state)]
        if dist.main:
            checkpoint.save(
                out,
                {
                    "identity": identity,
                    "sae": sae.state_dict(),
                    "opt": opt.state_dict(),
                    "step": step,
                    "scale": scale,
                    "since_fired": since_fired.cpu(),
                    "stream": streams,
                    "world": dist.world,
                },
            )
        barrier()

    while step < cfg.steps:
        x_BD, _meta = next(batches)
        x_BD = x_BD.to(dist.device) * scale
        dead_F = since_fired >= dead_after
        target_BD = None if boost_base is None else boost_target(boost_base, x_BD, scale)
        lr = cfg.lr_eff * cfg.lr_scale(step)
        res = train_step(model, sae, opt, x_BD, dead_F, lr, cfg, dist.world > 1, target_BD)

        fired_F = _fired(res, cfg.sae.d_sae)
        fired_F = all_sum(fired_F)
        since_fired += cfg.batch_size
        since_fired[fired_F > 0] = 0
        step += 1
        tok_last += cfg.batch_size

        log_now = step % cfg.log_every == 0 or step == cfg.steps
        row = _log_row(res, cfg, dist) if log_now else {}  # a collective: every process takes part
        if log_now and dist.main:
            now = time.perf_counter()
            row = {
                "step": step,
                "tokens": step * cfg.batch_size,
                "tokens_per_s": tok_last / (now - t_last),
                "lr": opt.param_groups[0]["lr"],
                **row,
                "dead_pct": 100 * float((since_fired >= dead_after).float().mean()),
            }
            log.write(json.dumps(row) + "\n")
            log.flush()
            bar.set_postfix(
                tok_s=f"{row['tokens_per_s']:.0f}",
                fvu=f"{row['fvu']:.4f}",
                l0=f"{row['l0']:.1f}",
                dead=f"{row['dead_pct']:.1f}%",
            )
            t_last, tok_last = now, 0
        bar.update(1)
        if every_ckpt and step % every_ckpt == 0 and step < cfg.steps:
            save_checkpoint()
    bar.close()
    check_replicas(sae)
    save_checkpoint()
    if log:
        log.close()

    # ---- final: metrics on held-out data, raw-activation SAE on disk ---------------------------
    result = sae.to("cpu")
    result.fold_scale(scale)
    calibration = _calibrate(result, batches, cfg, dist, say)
    metrics = {}
    if dist.main:
        say(f"evaluating on {cfg.eval_tokens} held-out rows ...")
        eval_batches = take_tokens(
            BatchStream(
                eval_src,
                min(cfg.eval_tokens, 4096),
                cfg.buffer_tokens,
                cfg.seed + 1,
                exclude_special=cfg.exclude_special,
                modality=cfg.modality,
            ),
            cfg.eval_tokens,
        )
        if boost_base is None:  # a boost's residual SAE alone reconstructs no x: `run_boost` evaluates it stitched
            metrics = evaluate(result, eval_batches)
            metrics.update(l0_vs_k(result, metrics))
        extra = {**info, "train": asdict(cfg), "activation_scale": scale, "metrics": metrics, **calibration}
        save_sae(result, out, extra)
        atomic_write_json(out / "metrics.json", metrics)
    del model  # the DDP reducer goes before the process group does
    teardown()
    return TrainResult(out, result.eval(), metrics)


def _log_row(res: ForwardOutput, cfg: TrainConfig, dist: DistInfo) -> dict:
    """The step's loss terms and L0 over the global batch (a collective: every process calls it)."""
    terms = {"loss": res.loss, **res.terms}  # each process's term is world x its share: the mean is global
    vals = torch.stack([v.detach().float() for v in terms.values()] + [(res.vals > 0).sum().float()])
    vals = (all_sum(vals.double()) / dist.world).cpu().tolist()
    return {**dict(zip(terms, vals[:-1], strict=True)), "l0": vals[-1] * dist.world / cfg.batch_size}


def _calibrate(sae: SAE, batches, cfg: TrainConfig, dist: DistInfo, say) -> dict:
    """BatchTopK: set the inference threshold so the mean L0 is k on the training stream's next
    `cfg.calibration_tokens` rows (see `BatchTopKSAE.calibrate_threshold`); rank 0 decides."""
    if not hasattr(sae, "calibrate_threshold") or cfg.calibration_tokens <= 0:
        return {}
    info = {}
    if dist.main:
        say(f"calibrating the inference threshold (L0 = k) on {cfg.calibration_tokens} training rows ...")
        info = sae.calibrate_threshold(take_tokens(batches, cfg.calibration_tokens), cfg.calibration_tokens)
    sae.threshold.copy_(broadcast_tensor(sae.threshold))
    return {"threshold_calibration": info} if info else {}


def _fired(res, d_sae: int) -> torch.Tensor:
    if res.idx is None:
        return (res.vals.detach() > 0).sum(0)
    return torch.bincount(res.idx[res.vals.detach() > 0], minlength=d_sae)


def _trim_log(path: Path, step: int) -> None:
    """On resume, drop log rows past the checkpoint so nothing is duplicated."""
    if not path.exists():
        return
    rows = [r for r in path.read_text().splitlines() if r.strip() and json.loads(r)["step"] <= step]
    path.write_text("".join(r + "\n" for r in rows))

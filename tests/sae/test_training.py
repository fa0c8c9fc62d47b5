"""Training: learning, recovery of a known dictionary, resume equivalence, bad inputs."""

import gc
import json
import os
import sys

import pytest
import torch
from safetensors.torch import save_file

from ttslens.sae.base import SAEConfig
from ttslens.sae.files import load_sae
from ttslens.sae.synthetic import make_superposition, mean_max_cosine, write_synthetic
from ttslens.sae.training import TrainConfig, checkpoint, train


def _cfg(path, out, arch="batchtopk", **kw):
    base = dict(
        sae=SAEConfig(arch=arch, d_sae=256, k=4),
        activations=str(path),
        tokens=60 * 512,
        batch_size=512,
        lr=2e-3,
        buffer_tokens=8192,
        eval_tokens=4096,
        out=str(out),
        log_every=5,
    )
    base.update(kw)
    return TrainConfig(**base)


@pytest.mark.parametrize("arch", ["batchtopk", "topk", "relu", "hierarchical", "kron"])
def test_training_reduces_fvu(synthetic, tmp_path, arch):
    path, _ = synthetic
    sae_cfg = SAEConfig(arch=arch, d_sae=256, k=4, l1_coeff=0.3)
    res = train(_cfg(path, tmp_path / arch, arch, sae=sae_cfg, log_every=1), progress=False)
    log = [json.loads(r) for r in (tmp_path / arch / "train_log.jsonl").read_text().splitlines()]
    assert log[-1]["loss"] < log[0]["loss"]  # from step 1 (the init is already fitted to the data)
    assert res.metrics["fvu"] < 0.75  # held-out rows, inference-mode encoder
    assert (tmp_path / arch / "cfg.json").exists() and (tmp_path / arch / "metrics.json").exists()


def test_batchtopk_recovers_true_dictionary(tmp_path):
    """128 true features in 64 dimensions (generated with a seed no SAE init uses: seed s starts an SAE's
    decoder at randn(seed=s), so data of the same seed would hand it the answer)."""
    syn = make_superposition(40_000, 64, 128, 4, seed=101)
    path = write_synthetic(tmp_path / "acts.safetensors", syn)
    res = train(_cfg(path, tmp_path / "gt", tokens=300 * 512, lr=3e-3), progress=False)
    assert mean_max_cosine(res.sae.W_dec.detach(), syn.dictionary) > 0.9
    assert abs(res.metrics["l0"] - 4) < 1.5  # inference threshold gives ~k per token


def test_saved_sae_reads_raw_activations(synthetic, tmp_path):
    """The activation scale is folded in: the saved SAE reconstructs raw rows."""
    path, syn = synthetic
    res = train(_cfg(path, tmp_path / "raw"), progress=False)
    loaded = load_sae(tmp_path / "raw")
    x = syn.acts[-2000:]
    fvu = (x - loaded.reconstruct(x)).pow(2).sum() / (x - x.mean(0)).pow(2).sum()
    assert float(fvu.detach()) == pytest.approx(res.metrics["fvu"], abs=0.05)


def test_resume_is_bit_identical(synthetic, tmp_path, monkeypatch):
    path, _ = synthetic
    ref = train(_cfg(path, tmp_path / "ref", checkpoint_every=10 * 512), progress=False)

    real_save, calls = checkpoint.save, []

    def save_then_die(out, state):
        real_save(out, state)
        calls.append(state["step"])
        if state["step"] == 30:
            raise KeyboardInterrupt  # killed right after the checkpoint at step 30

    monkeypatch.setattr(checkpoint, "save", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        train(_cfg(path, tmp_path / "run", checkpoint_every=10 * 512), progress=False)
    monkeypatch.setattr(checkpoint, "save", real_save)
    (tmp_path / "run").rename(tmp_path / "moved")  # a run directory moved elsewhere resumes there
    resumed = train(_cfg(path, tmp_path / "moved", checkpoint_every=10 * 512, resume=True), progress=False)
    for (name, a), (_, b) in zip(ref.sae.state_dict().items(), resumed.sae.state_dict().items(), strict=True):
        assert torch.equal(a, b), name
    steps = [json.loads(r)["step"] for r in (tmp_path / "moved" / "train_log.jsonl").read_text().splitlines()]
    assert steps == sorted(set(steps))  # no duplicated log rows after the resume


def test_resume_with_changed_config_is_refused(synthetic, tmp_path):
    path, _ = synthetic
    train(_cfg(path, tmp_path / "r"), progress=False)
    with pytest.raises(ValueError, match=r"changed config \(sae.k\)"):
        train(_cfg(path, tmp_path / "r", resume=True, sae=SAEConfig(arch="batchtopk", d_sae=256, k=5)), progress=False)


def test_out_dir_with_another_run(synthetic, tmp_path):
    path, _ = synthetic
    train(_cfg(path, tmp_path / "o"), progress=False)
    with pytest.raises(FileExistsError, match="--overwrite"):
        train(_cfg(path, tmp_path / "o"), progress=False)
    train(_cfg(path, tmp_path / "o", overwrite=True, tokens=10 * 512), progress=False)
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        train(_cfg(path, tmp_path / "empty", resume=True), progress=False)


def test_per_modality_metrics_and_exclude_special(modality_acts, tmp_path):
    res = train(_cfg(modality_acts, tmp_path / "m", sae=SAEConfig(d_sae=64, k=4)), progress=False)
    assert set(res.metrics["by_modality"]) == {"text", "speech", "special"}
    res2 = train(
        _cfg(modality_acts, tmp_path / "m2", sae=SAEConfig(d_sae=64, k=4), exclude_special=True), progress=False
    )
    assert "special" not in res2.metrics["by_modality"]


def test_bf16_autocast_runs(synthetic, tmp_path):
    path, _ = synthetic
    res = train(_cfg(path, tmp_path / "bf", bf16=True, tokens=20 * 512), progress=False)
    assert res.metrics["fvu"] < 1.0


@pytest.mark.parametrize(
    "make, msg",
    [
        (lambda p: save_file({"activations": torch.full((600, 8), float("nan"))}, str(p)), "NaN/Inf"),
        (lambda p: p.write_bytes(b"\x00garbage"), "corrupt or truncated"),
        (lambda p: save_file({"other": torch.zeros(600, 8)}, str(p)), "no tensor named 'activations'"),
        (lambda p: save_file({"activations": torch.zeros(600, 8, dtype=torch.int32)}, str(p)), "float32/16/bf16"),
    ],
)
def test_bad_activation_files(tmp_path, make, msg):
    p = tmp_path / "bad.safetensors"
    make(p)
    with pytest.raises(ValueError, match=msg):
        train(_cfg(p, tmp_path / "out", tokens=1024), progress=False)


def test_truncated_safetensors(synthetic, tmp_path):
    path, _ = synthetic
    p = tmp_path / "trunc.safetensors"
    p.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(ValueError, match="cannot read activations"):
        train(_cfg(p, tmp_path / "out"), progress=False)


def test_config_errors():
    with pytest.raises(ValueError, match="exactly one data source"):
        TrainConfig()
    with pytest.raises(ValueError, match="less than one batch"):
        TrainConfig(activations="x", tokens=10, batch_size=100)


def test_default_lr_and_dead_rules():
    """The rules bench_defaults.py chose: lr 2e-3 / sqrt(F / 2^14); dead after 100 mean firing intervals
    (100 F / k tokens), at least a batch, at most 10M; explicit values win."""
    from ttslens.sae.base import SAEConfig

    cfg = TrainConfig(activations="x", sae=SAEConfig(d_sae=2048, k=16), batch_size=4096)
    assert cfg.lr_eff == pytest.approx(2e-3 * 8**0.5)
    assert cfg.dead_after == 12_800
    assert TrainConfig(activations="x", sae=SAEConfig(d_sae=1024, k=64), batch_size=4096).dead_after == 4096
    assert TrainConfig(activations="x", sae=SAEConfig(d_sae=2**22, k=8)).dead_after == 10_000_000
    given = TrainConfig(activations="x", lr=1e-4, dead_tokens=777)
    assert (given.lr_eff, given.dead_after) == (1e-4, 777)


# ---- torchrun: resume with another world size, DDP = one process on the concatenated batch ----------


def test_resume_with_another_world_size_is_refused(synthetic, tmp_path, monkeypatch):
    from ttslens.sae.errors import BadInput
    from ttslens.sae.training import trainer
    from ttslens.sae.training.dist import DistInfo

    path, _ = synthetic
    train(_cfg(path, tmp_path / "w", tokens=10 * 512), progress=False)
    with monkeypatch.context() as m:  # the same run resumed under torchrun --nproc_per_node 2
        m.setattr(trainer, "setup", lambda device: DistInfo(0, 2, device))
        msg = r"written by 1 process\(es\), this run has 2; resume with --nproc_per_node 1"
        with pytest.raises(BadInput, match=msg):
            train(_cfg(path, tmp_path / "w", tokens=10 * 512, resume=True), progress=False)
    # a checkpoint of two processes (an older one, without the "world" field) resumed by one
    state = torch.load(tmp_path / "w" / checkpoint.CKPT, weights_only=False)
    state["stream"] = state["stream"] * 2
    del state["world"]
    checkpoint.save(tmp_path / "w", state)
    with pytest.raises(BadInput, match=r"written by 2 process\(es\), this run has 1; resume with --nproc_per_node 2"):
        train(_cfg(path, tmp_path / "w", tokens=10 * 512, resume=True), progress=False)


DDP_STEPS, DDP_BATCH = 6, 512


def _ddp_steps(rank: int, world: int, x_SBD: torch.Tensor) -> dict:
    """DDP_STEPS trainer steps of a BatchTopK SAE; this process gets its slice of each global batch."""
    import torch.distributed as tdist

    from ttslens.sae.base import global_batch, make_sae
    from ttslens.sae.training.trainer import init_from_batch, train_step

    cfg = _cfg("unused", "unused", sae=SAEConfig(arch="batchtopk", d_in=x_SBD.shape[-1], d_sae=128, k=4))
    sae = init_from_batch(make_sae(cfg.sae), x_SBD[0], seed=0)
    model = torch.nn.parallel.DistributedDataParallel(sae) if world > 1 else sae
    opt = torch.optim.Adam(sae.parameters(), lr=3e-3)
    dead_F = torch.arange(128) % 5 == 0  # exercise AuxK too
    n = DDP_BATCH // world
    out = {"kept": [], "loss": [], "threshold": []}
    for s in range(DDP_STEPS):
        res = train_step(model, sae, opt, x_SBD[s, rank * n : (rank + 1) * n], dead_F, 3e-3, cfg, world > 1)
        kept = (res.rows + rank * n) * 128 + res.idx
        loss = res.loss.detach().clone()
        if world > 1:
            parts = [None] * world
            tdist.all_gather_object(parts, kept)
            kept = torch.cat(parts)
            tdist.all_reduce(loss)
            loss /= world
        out["kept"].append(kept.sort().values)
        out["loss"].append(float(loss))
        out["threshold"].append(float(sae.threshold[0]))
    # ties at the cut: the same entries as one process on the concatenated batch (rank order)
    g = torch.Generator().manual_seed(5)
    pre_BF = torch.randint(-3, 4, (64, 40), generator=g).float()
    rows, cols = sae.select(pre_BF) if world == 1 else (None, None)
    if world > 1:
        with global_batch():
            r, c = sae.select(pre_BF[rank * 32 : (rank + 1) * 32])
        parts = [None] * world
        tdist.all_gather_object(parts, (r + rank * 32) * 40 + c)
        out["ties"] = torch.cat(parts)
    else:
        out["ties"] = rows * 40 + cols
    out["state"] = {k: v.detach().clone() for k, v in sae.state_dict().items()}
    del model, opt  # the DDP reducer goes before the process group does
    return out


def _ddp_worker(rank: int, world: int, init_file: str, data: str, result: str) -> None:
    import torch.distributed as tdist

    torch.set_num_threads(1)
    tdist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        out = _ddp_steps(rank, world, torch.load(data))
        gc.collect()
        if rank == 0:
            torch.save(out, result)
        tdist.barrier()
    finally:
        tdist.destroy_process_group()
    # The result is on disk and every rank has passed the barrier. Leave without running the C++
    # static destructors: gloo's teardown at interpreter exit has aborted once in CI (SIGABRT,
    # "terminate called without an active exception") after a correct run.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def test_ddp_batchtopk_equals_one_process_on_the_global_batch(synthetic, tmp_path):
    """2 gloo processes, each with half of every batch, select the same entries, report the same loss
    and end with (nearly) the same weights and threshold as one process stepping on the whole batches."""
    import torch.multiprocessing as mp

    _, syn = synthetic
    x_SBD = syn.acts[: DDP_STEPS * DDP_BATCH].reshape(DDP_STEPS, DDP_BATCH, -1) * 3.0
    torch.save(x_SBD, tmp_path / "x.pt")
    mp.spawn(
        _ddp_worker,
        args=(2, str(tmp_path / "store"), str(tmp_path / "x.pt"), str(tmp_path / "ddp.pt")),
        nprocs=2,
        join=True,
    )
    ddp, one = torch.load(tmp_path / "ddp.pt"), _ddp_steps(0, 1, x_SBD)
    assert torch.equal(ddp["kept"][0], one["kept"][0])  # the first step: the exact same kept set
    assert ddp["kept"][0].numel() == DDP_BATCH * 4
    for s in range(1, DDP_STEPS):  # later steps: weights differ by float rounding only
        assert len(set(ddp["kept"][s].tolist()) ^ set(one["kept"][s].tolist())) <= 4, s
    assert ddp["loss"] == pytest.approx(one["loss"], rel=1e-5)
    assert ddp["threshold"] == pytest.approx(one["threshold"], rel=1e-5)
    assert torch.equal(ddp["ties"], one["ties"])
    for name, ref in one["state"].items():
        torch.testing.assert_close(ddp["state"][name], ref, rtol=1e-4, atol=1e-5, msg=name)


# ---- batchtopk L0 vs k, and what train says while it sets up -----------------------------------------


def test_batchtopk_threshold_is_calibrated_to_k(synthetic, tmp_path):
    """A short run's running-average threshold lags (held-out L0 well above k); the calibrated one gives
    L0 ~ k, and `ttslens eval` reports k beside L0 with a note only when they differ by > 25%."""
    from ttslens.sae.commands import EvalConfig, run_eval

    path, _ = synthetic
    lag = train(_cfg(path, tmp_path / "ema", tokens=40 * 512, calibration_tokens=0), progress=False)
    cal = train(_cfg(path, tmp_path / "cal", tokens=40 * 512), progress=False)
    assert lag.metrics["l0"] > 1.25 * 4 and "l0_note" in lag.metrics
    assert abs(cal.metrics["l0"] - 4) < 0.3 and "l0_note" not in cal.metrics
    info = json.loads((tmp_path / "cal" / "cfg.json").read_text())["ttslens"]["threshold_calibration"]
    assert info["calibration_tokens"] >= 65536 and info["threshold"] > info["threshold_ema"]
    m = run_eval(EvalConfig(sae=str(tmp_path / "ema"), tokens=4096))
    assert m["k"] == 4 and "differs from the training k=4" in m["l0_note"]
    m = run_eval(EvalConfig(sae=str(tmp_path / "cal"), tokens=4096))
    assert m["k"] == 4 and abs(m["l0"] - 4) < 0.3 and "l0_note" not in m


def test_train_says_what_it_is_doing_before_the_bar(synthetic, tmp_path, capsys):
    path, _ = synthetic
    train(_cfg(path, tmp_path / "loud", tokens=10 * 512), progress=True)
    err = capsys.readouterr().err
    for phase in ("reading a first block", "estimating the activation scale", "initialising the SAE (b_dec"):
        assert phase in err
    assert err.index("estimating the activation scale") < err.index("train batchtopk")  # before the bar
    assert "calibrating the inference threshold" in err and "evaluating on 4096 held-out rows" in err
    train(_cfg(path, tmp_path / "quiet", tokens=10 * 512), progress=False)
    assert capsys.readouterr().err == ""

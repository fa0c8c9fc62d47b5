"""Training: learning, recovery of a known dictionary, resume equivalence, bad inputs."""

import json

import pytest
import torch
from safetensors.torch import save_file

from ttslens.sae.base import SAEConfig
from ttslens.sae.files import load_sae
from ttslens.sae.synthetic import mean_max_cosine
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


def test_batchtopk_recovers_true_dictionary(synthetic, tmp_path):
    path, syn = synthetic
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
    resumed = train(_cfg(path, tmp_path / "run", checkpoint_every=10 * 512, resume=True), progress=False)
    for (name, a), (_, b) in zip(ref.sae.state_dict().items(), resumed.sae.state_dict().items(), strict=True):
        assert torch.equal(a, b), name
    steps = [json.loads(r)["step"] for r in (tmp_path / "run" / "train_log.jsonl").read_text().splitlines()]
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

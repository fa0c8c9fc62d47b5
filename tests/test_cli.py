"""The `ttslens` command: help, the end-to-end quickstart, bad input -> one clear line, torchrun DDP."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ttslens.app.cli import main

ROOT = Path(__file__).resolve().parents[1]


def test_help_lists_commands_and_field_docs(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    for cmd in ("train", "eval", "harvest", "quickstart", "quickstart-text", "synthesize"):
        assert cmd in out
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    out = capsys.readouterr().out
    assert "--latents N" in out and "Number of latents F" in out and "--resume" in out


def test_train_and_eval_from_cli(synthetic, tmp_path, capsys):
    path, _ = synthetic
    args = [
        "train",
        "--activations",
        str(path),
        "--latents",
        "64",
        "--k",
        "4",
        "--tokens",
        "4096",
        "--batch-size",
        "512",
        "--out",
        str(tmp_path / "s"),
    ]
    assert main(args) == 0
    assert json.loads(capsys.readouterr().out)["fvu"] < 1
    assert main(["eval", "--sae", str(tmp_path / "s"), "--tokens", "2048"]) == 0
    assert "explained_variance" in json.loads(capsys.readouterr().out)
    assert main(args) == 2  # same --out again without --resume/--overwrite
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "holds another run" in err


@pytest.mark.parametrize(
    "extra, msg",
    [
        (["--arch", "nope"], "unknown SAE architecture 'nope'"),
        (["--k", "0"], "k must be in 1..d_sae"),
        (["--k", "500", "--latents", "64"], "k must be in 1..d_sae=64"),
    ],
)
def test_bad_input_is_one_line(synthetic, tmp_path, capsys, extra, msg):
    path, _ = synthetic
    assert main(["train", "--activations", str(path), "--out", str(tmp_path / "x"), *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert msg in err and err.count("\n") == 0


def test_missing_files_are_one_line(tmp_path, capsys):
    assert main(["train", "--activations", str(tmp_path / "none.safetensors"), "--out", str(tmp_path / "o")]) == 2
    assert "activations not found" in capsys.readouterr().err
    assert main(["eval", "--sae", str(tmp_path / "nosae")]) == 2
    assert "cfg.json is missing" in capsys.readouterr().err


def test_quickstart_end_to_end(tmp_path, capsys):
    assert main(["quickstart-text", "--out", str(tmp_path / "qs"), "--tokens", "120000", "--latents", "256"]) == 0
    m = json.loads(capsys.readouterr().out)
    assert m["fvu"] < 0.5 and m["ce_recovered"] > 0.5
    assert (tmp_path / "qs" / "sae" / "sae_weights.safetensors").exists()


def test_torchrun_two_processes(synthetic, tmp_path):
    """Data-parallel training under torchrun with 2 CPU processes (gloo); replicas stay identical."""
    path, _ = synthetic
    cmd = [  # `python -m torch.distributed.run` is torchrun, without relying on a console script
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        "-m",
        "ttslens.app.cli",
        "train",
        "--activations",
        str(path),
        "--latents",
        "128",
        "--k",
        "4",
        "--tokens",
        "20480",
        "--batch-size",
        "1024",
        "--lr",
        "2e-3",
        "--eval-tokens",
        "2048",
        "--out",
        str(tmp_path / "ddp"),
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    metrics = json.loads((tmp_path / "ddp" / "metrics.json").read_text())
    assert metrics["fvu"] < 0.7
    log = [json.loads(r) for r in (tmp_path / "ddp" / "train_log.jsonl").read_text().splitlines()]
    assert log[-1]["step"] == 20

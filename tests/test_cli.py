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


def _parsed(argv):
    from ttslens.app.cli import _commands, build_parser
    from ttslens.app.cli_args import from_args

    name = argv[0]
    return from_args(_commands()[name][0], build_parser().parse_args(argv))


@pytest.mark.parametrize(
    "argv",
    [
        ["synthesize", "some text", "--steer", "laughter=1", "female voice=-2"],
        ["synthesize", "--steer", "laughter=1", "female voice=-2", "some text"],
        ["synthesize", "--steer", "laughter=1", "--steer", "female voice=-2", "some text", "--seed", "3"],
    ],
)
def test_list_options_before_the_text_leave_it_the_text(argv):
    cfg = _parsed(argv)
    assert cfg.text == "some text" and cfg.steer == ["laughter=1", "female voice=-2"]


def test_list_options_give_back_only_what_is_not_their_form(tmp_path):
    sae = tmp_path / "sae"
    sae.mkdir()
    (sae / "cfg.json").write_text("{}")
    cfg = _parsed(["synthesize", "--sae", str(sae), "hello there.", "--steer", "361:clamp", "361:ablate"])
    assert (cfg.text, cfg.sae, cfg.steer) == ("hello there.", [str(sae)], ["361:clamp", "361:ablate"])
    cfg = _parsed(["synthesize", "--steer", "gender", "hello there."])  # a wrong edit stays an edit
    assert (cfg.text, cfg.steer) == ("hello there.", ["gender"])
    cfg = _parsed(["synthesize", "--steer", "gender"])  # never all of an option's values
    assert (cfg.text, cfg.steer) == ("", ["gender"])
    cfg = _parsed(["synthesize", "hi.", "--steer", "laughter=1", "oops"])  # the text is given: oops is an edit
    assert (cfg.text, cfg.steer) == ("hi.", ["laughter=1", "oops"])
    assert _parsed(["steer-eval", "--alphas", "-2", "2"]).alphas == [-2.0, 2.0]  # no positional: no change
    with pytest.raises(SystemExit):
        _parsed(["steer-eval", "--alphas", "1", "x"])


def test_text_after_steer_and_wrong_edits_are_one_line(capsys):
    assert main(["synthesize", "--steer", "gender", "hello there."]) == 2
    err = capsys.readouterr().err
    assert err.startswith("ttslens synthesize: error: steering 'gender' has no strength: write gender=ALPHA (")
    assert err.count("\n") == 1
    assert main(["synthesize", "--steer", "laughter=1", "hello there."]) == 2  # read right: the text is there
    assert "needs an SAE" in capsys.readouterr().err


def test_one_steering_scale_in_the_help(capsys):
    from ttslens.sae.steering import STRENGTHS

    readme = (ROOT / "README.md").read_text()
    assert "α ≈ 1–4 is already strong" in STRENGTHS and "α ≈ 1–4 is already strong" in readme
    for cmd, flag in (("synthesize", "--steer"), ("steer-eval", "--alphas")):
        with pytest.raises(SystemExit):
            main([cmd, "--help"])
        out = " ".join(capsys.readouterr().out.split())
        assert flag in out and " ".join(STRENGTHS.split()) in out.replace("Strengths are", "strengths are")
        assert "=40" not in out and "=-30" not in out


def test_the_two_quickstarts_write_to_different_folders():
    from ttslens.audio.commands import QuickstartConfig
    from ttslens.sae.commands import TextQuickstartConfig

    assert QuickstartConfig().out == "runs/quickstart" and TextQuickstartConfig().out == "runs/quickstart-text"


@pytest.mark.parametrize(
    "argv, msg",
    [
        (["synthesize", "hi.", "--sae", "MISSING", "--steer", "laughter=1"], "no SAE at MISSING"),
        (["synthesize", "--sae", "MISSING", "hi.", "--steer", "laughter=1"], "no SAE at MISSING"),
        (["presets", "--sae", "MISSING"], "no SAE at MISSING"),
        (["steer-eval", "--sae", "MISSING"], "no SAE at MISSING"),
        (["steer-eval", "--sae", "MISSING", "--attribute", "loudness"], "unknown attribute 'loudness'"),
        (["synthesize", "hi.", "--steer", "5:boost=1"], "unknown steering op 'boost'"),
    ],
)
def test_user_errors_of_the_steering_commands_are_one_line(tmp_path, capsys, monkeypatch, argv, msg):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert msg in err and err.count("\n") == 0 and "Traceback" not in err
    assert not (tmp_path / "MISSING").exists()  # nothing written for a missing SAE


def test_a_bug_keeps_its_traceback(monkeypatch, capsys):
    """Only ttslens's own error types become one line: anything else is a bug and propagates."""
    import ttslens.app.cli as cli

    real = cli._commands

    def commands():
        cmds = real()
        cls, _fn, help_ = cmds["presets"]

        def broken(cfg):
            raise KeyError("presets")

        return cmds | {"presets": (cls, broken, help_)}

    monkeypatch.setattr(cli, "_commands", commands)
    with pytest.raises(KeyError, match="presets"):
        cli.main(["presets", "--sae", "anything"])
    assert "error" not in capsys.readouterr().err


def test_backbones_lists_the_demo(capsys):
    assert main(["backbones"]) == 0
    (line,) = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("demo")]
    assert "usable" in line and "not usable" not in line

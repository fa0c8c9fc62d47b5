"""Shared fixtures: small data the tests build themselves (no downloads)."""

from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from ttslens.sae.synthetic import make_superposition, write_synthetic


@pytest.fixture(scope="session")
def synthetic(tmp_path_factory):
    """40k rows of d=32 superposition data (128 true features, ~4 active) + the dictionary."""
    syn = make_superposition(40_000, 32, 128, 4, seed=0)
    path = write_synthetic(tmp_path_factory.mktemp("syn") / "acts.safetensors", syn)
    return path, syn


@pytest.fixture(scope="session")
def modality_acts(tmp_path_factory) -> Path:
    """Two shards with a `modality` companion (text / speech / special rows)."""
    d = tmp_path_factory.mktemp("shards")
    g = torch.Generator().manual_seed(0)
    for i in range(2):
        n = 6000
        modality = torch.randint(0, 3, (n,), generator=g).to(torch.int8)
        acts = torch.randn(n, 16, generator=g) + 3 * modality[:, None].float()
        save_file({"activations": acts, "modality": modality}, str(d / f"shard_{i:05d}.safetensors"))
    return d


@pytest.fixture(scope="session")
def tiny_lm(tmp_path_factory) -> Path:
    """A tiny Llama + word-level tokenizer + corpus, built and briefly trained locally."""
    from ttslens.sae.lm.tiny import build_tiny_lm

    return build_tiny_lm(tmp_path_factory.mktemp("tiny"), n_sentences=400, hidden=48, train_steps=40)


@pytest.fixture(scope="session")
def small_assets(tmp_path_factory):
    """`ttslens demo build --small`, end to end: corpus → codec → laughter detector → LM → assets."""
    from ttslens.app.cli import main as cli

    work = tmp_path_factory.mktemp("demo_small")
    assert cli(["demo", "build", "--small", "--workdir", str(work)]) == 0
    return work / "assets"


@pytest.fixture(scope="session")
def small(small_assets):
    from ttslens.audio import load_backbone

    return load_backbone(str(small_assets))


@pytest.fixture(scope="session")
def steer_sae(tmp_path_factory):
    """A small BatchTopK SAE on the shipped demo backbone's layer 3, with probe presets and labels of
    its first 48 features (SAE_DIR/labels): what the steering API, the CLI and the app read."""
    from ttslens.app.cli import main as cli

    out = tmp_path_factory.mktemp("steer") / "sae"
    args = ["train", "--backbone", "demo", "--layer", "3", "--latents", "256", "--k", "8", "--tokens", "40000"]
    args += ["--batch-size", "1024", "--eval-tokens", "2048", "--buffer-tokens", "8192", "--out", str(out)]
    assert cli(args) == 0
    assert cli(["presets", "--sae", str(out), "--source", "probe", "--items", "120", "--no-progress"]) == 0
    label = ["label", "--sae", str(out), "--items", "60", "--features", "0:48", "--batch", "16", "--no-progress"]
    assert cli([*label, "--asr", "", "--laughter-model", "", "--gender-model", ""]) == 0
    return out

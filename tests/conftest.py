"""Shared fixtures: small data the tests build themselves (no downloads)."""

from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from ttslens.sae.synthetic import make_superposition, write_synthetic


@pytest.fixture(scope="session")
def synthetic(tmp_path_factory):
    """40k rows of d=32 superposition data (128 true features, ~4 active) + the dictionary."""
    syn = make_superposition(40_000, 32, 128, 4, seed=101)  # not an SAE seed: seed s inits at randn(seed=s)
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
def small_sae(small_assets, tmp_path_factory) -> Path:
    """A 48-latent TopK-4 SAE on layer 1 of the `--small` demo backbone (what the label tests label)."""
    from ttslens.app.cli import main as cli

    out = tmp_path_factory.mktemp("label_sae") / "sae"
    args = ["train", "--backbone", str(small_assets), "--layer", "1", "--latents", "48", "--k", "4"]
    args += ["--tokens", "12000", "--batch-size", "512", "--eval-tokens", "1024", "--buffer-tokens", "4096"]
    assert cli([*args, "--out", str(out)]) == 0
    return out


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


# ---- tiny random audio models (no downloads), shared by tests/audio and tests/autointerp --------------------
AST_LABELS = {0: "Speech", 1: "Laughter", 2: "Giggle", 3: "Male speech, man speaking"}


def _labelled(id2label: dict[int, str]) -> dict:
    return {"id2label": id2label, "label2id": {v: k for k, v in id2label.items()}}


def save_wav2vec2(path: Path, id2label: dict[int, str], attention_mask: bool = True) -> Path:
    """A random wav2vec2 audio classifier with a 2-layer conv front end (hop 40 samples), saved to `path`."""
    from transformers import Wav2Vec2Config, Wav2Vec2FeatureExtractor, Wav2Vec2ForSequenceClassification

    torch.manual_seed(0)
    config = Wav2Vec2Config(
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
        conv_dim=(16, 16),
        conv_kernel=(10, 4),
        conv_stride=(10, 4),
        num_feat_extract_layers=2,
        num_conv_pos_embeddings=16,
        num_conv_pos_embedding_groups=2,
        classifier_proj_size=16,
        feat_extract_norm="layer",
        do_stable_layer_norm=True,
        **_labelled(id2label),
    )
    Wav2Vec2ForSequenceClassification(config).save_pretrained(path)
    Wav2Vec2FeatureExtractor(return_attention_mask=attention_mask).save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def ast_dir(tmp_path_factory) -> Path:
    """A random AudioSet-style AST (labels AST_LABELS): 32 mel bins, 1-s window (100 frames)."""
    from transformers import ASTConfig, ASTFeatureExtractor, ASTForAudioClassification

    torch.manual_seed(0)
    config = ASTConfig(
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
        num_mel_bins=32,
        max_length=100,
        **_labelled(AST_LABELS),
    )
    path = tmp_path_factory.mktemp("ast")
    ASTForAudioClassification(config).save_pretrained(path)
    ASTFeatureExtractor(num_mel_bins=32, max_length=100).save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def gender_dir(tmp_path_factory) -> Path:
    """A random 2-class (female, male) wav2vec2 gender classifier."""
    return save_wav2vec2(tmp_path_factory.mktemp("gender"), {0: "female", 1: "male"})


@pytest.fixture(scope="session")
def whisper_checkpoint(tmp_path_factory) -> Path:
    """A random tiny whisper (2 text layers × 2 heads) in whisper's own .pt checkpoint format."""
    whisper = pytest.importorskip("whisper")
    from dataclasses import asdict

    dims = whisper.model.ModelDimensions(
        n_mels=80,
        n_audio_ctx=1500,
        n_audio_state=64,
        n_audio_head=2,
        n_audio_layer=1,
        n_vocab=51865,
        n_text_ctx=448,
        n_text_state=64,
        n_text_head=2,
        n_text_layer=2,
    )
    torch.manual_seed(0)
    model = whisper.model.Whisper(dims)
    torch.nn.init.normal_(model.decoder.positional_embedding, std=0.02)  # whisper leaves it torch.empty
    path = tmp_path_factory.mktemp("whisper") / "tiny-random.pt"
    torch.save({"dims": asdict(dims), "model_state_dict": model.state_dict()}, path)
    return path

"""Model sources: hooking a real transformers LM built locally, harvest caches, CE recovered."""

import json

import pytest
import torch
from safetensors import safe_open

from ttslens.sae.activations import SPECIAL, TEXT, CachedActivations
from ttslens.sae.base import SAEConfig
from ttslens.sae.commands import EvalConfig, HarvestConfig, run_eval, run_harvest
from ttslens.sae.hooks import layer_output, residual_layers
from ttslens.sae.lm.harvest import load_model
from ttslens.sae.training import TrainConfig, train


def test_layer_output_is_the_residual_stream(tiny_lm):
    model, tok = load_model(str(tiny_lm / "model"))
    enc = tok(["the cat sees a red box in the park ."], return_tensors="pt")
    # hidden_states[i + 1] is the stream after layer i (the last entry has the final norm applied)
    ref = model(**enc, output_hidden_states=True).hidden_states[1]
    torch.testing.assert_close(layer_output(model, 0, **enc), ref)
    assert len(residual_layers(model)) == 2
    with pytest.raises(ValueError, match=r"layer 5 out of range: the model has 2 layers \(0..1\)"):
        layer_output(model, 5, **enc)


def test_harvest_writes_resumable_shards(tiny_lm, tmp_path):
    base = dict(model=str(tiny_lm / "model"), dataset=str(tiny_lm / "corpus.txt"), layer=1, shard_tokens=500)
    out = run_harvest(HarvestConfig(**base, tokens=1200, out=str(tmp_path / "acts")))
    first = json.loads((out / "manifest.json").read_text())
    assert first["rows"] >= 1200 and len(first["shards"]) == 3
    mtimes = {p.name: p.stat().st_mtime_ns for p in out.glob("*.safetensors")}
    run_harvest(HarvestConfig(**base, tokens=2500, out=str(tmp_path / "acts")))  # continues, keeps old shards
    second = json.loads((out / "manifest.json").read_text())
    assert second["shards"][:3] == first["shards"] and second["rows"] >= 2500
    assert all((out / n).stat().st_mtime_ns == t for n, t in mtimes.items())
    src = CachedActivations(out)
    assert src.d == 48 and src.n_rows == second["rows"] and "modality" in src.meta_keys
    with safe_open(str(out / "shard_00000.safetensors"), "pt") as f:
        modality, ids = f.get_tensor("modality"), f.get_tensor("token_id")
    assert set(modality.unique().tolist()) == {TEXT, SPECIAL}
    assert torch.all((ids == 2) == (modality == SPECIAL))  # <bos> is the special position


def test_train_from_model_then_eval_with_ce(tiny_lm, tmp_path):
    cfg = TrainConfig(
        sae=SAEConfig(d_sae=128, k=8),
        model=str(tiny_lm / "model"),
        dataset=str(tiny_lm / "corpus.txt"),
        layer=1,
        context=32,
        tokens=40 * 256,
        batch_size=256,
        buffer_tokens=2048,
        lr=2e-3,
        eval_tokens=1024,
        out=str(tmp_path / "sae"),
    )
    res = train(cfg, progress=False)
    assert res.metrics["fvu"] < 0.5
    info = json.loads((tmp_path / "sae" / "cfg.json").read_text())
    assert info["metadata"]["model_name"] == str(tiny_lm / "model") and info["ttslens"]["layer"] == 1
    m = run_eval(EvalConfig(sae=str(tmp_path / "sae"), tokens=2048, ce_sequences=8))
    assert m["ce_zero"] > m["ce_sae"] >= m["ce_clean"] - 0.05
    assert 0.0 < m["ce_recovered"] <= 1.05
    assert m["by_modality"]["special"]["explained_variance"] is None  # constant <bos> rows: no variance


def test_eval_rejects_sae_of_another_width(tiny_lm, synthetic, tmp_path):
    path, _ = synthetic
    train(
        TrainConfig(
            sae=SAEConfig(d_sae=64, k=4), activations=str(path), tokens=2048, batch_size=512, out=str(tmp_path / "s")
        ),
        progress=False,
    )
    with pytest.raises(ValueError, match="d_in=32 does not match the hidden size"):
        run_eval(EvalConfig(sae=str(tmp_path / "s"), model=str(tiny_lm / "model"), dataset=str(tiny_lm / "corpus.txt")))


def test_harvest_resume_checks_model_layer_and_dataset(tiny_lm, tmp_path):
    from ttslens.sae.errors import BadInput

    base = dict(model=str(tiny_lm / "model"), dataset=str(tiny_lm / "corpus.txt"), layer=1, shard_tokens=500)
    run_harvest(HarvestConfig(**base, tokens=600, out=str(tmp_path / "acts")))
    other_data = tmp_path / "other.txt"
    other_data.write_text((tiny_lm / "corpus.txt").read_text())
    for change, named in [
        ({"layer": 0}, "layer=1"),
        ({"dataset": str(other_data)}, "dataset="),
        ({"context": 16}, "context="),
    ]:
        with pytest.raises(BadInput, match=rf"holds another harvest \({named}.*re-run with the original settings"):
            run_harvest(HarvestConfig(**{**base, **change}, tokens=1200, out=str(tmp_path / "acts")))
    manifest = json.loads((tmp_path / "acts" / "manifest.json").read_text())
    assert manifest["rows"] < 1200 and len(manifest["shards"]) == 2  # nothing was appended


def test_cached_activations_read_the_manifest_shards_only(tiny_lm, tmp_path):
    from safetensors.torch import save_file

    base = dict(model=str(tiny_lm / "model"), dataset=str(tiny_lm / "corpus.txt"), layer=1, shard_tokens=500)
    out = run_harvest(HarvestConfig(**base, tokens=900, out=str(tmp_path / "acts")))
    rows = json.loads((out / "manifest.json").read_text())["rows"]
    save_file({"activations": torch.zeros(7, 48)}, str(out / "shard_00002.safetensors"))  # left by a killed run
    (out / "stray.safetensors").write_bytes(b"\x00half-written")
    src = CachedActivations(out)
    assert src.n_rows == rows and [f.name for f in src.files] == ["shard_00000.safetensors", "shard_00001.safetensors"]
    (out / "shard_00001.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match=r"lists shards that are missing \(shard_00001.safetensors\)"):
        CachedActivations(out)

"""SAE directories: SAELens interop with the real `sae_lens` package, our own architectures, errors."""

import json

import pytest
import torch

from ttslens.sae.base import SAEConfig, make_sae
from ttslens.sae.files import load_sae, save_sae

sae_lens = pytest.importorskip("sae_lens")


def _random_sae(arch, d=24, F=96, k=6, **kw):
    torch.manual_seed(0)
    m = make_sae(SAEConfig(arch=arch, d_in=d, d_sae=F, k=k, **kw))
    with torch.no_grad():
        for p in m.parameters():
            p.add_(0.05 * torch.randn_like(p))
        if arch == "batchtopk":
            m.threshold.fill_(0.2)
    return m.eval()


@pytest.mark.parametrize("arch, saelens_arch", [("batchtopk", "jumprelu"), ("topk", "topk"), ("relu", "standard")])
def test_saelens_loads_our_directory_and_encodes_identically(tmp_path, arch, saelens_arch):
    ours = _random_sae(arch)
    save_sae(ours, tmp_path / arch, {"model_name": "tiny", "hook_name": "blocks.3.hook_resid_post", "layer": 3})
    theirs = sae_lens.SAE.load_from_disk(str(tmp_path / arch))
    assert theirs.cfg.architecture() == saelens_arch
    x = torch.randn(50, 24)
    with torch.no_grad():
        torch.testing.assert_close(theirs.encode(x), ours.encode(x), rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(theirs.decode(theirs.encode(x)), ours.reconstruct(x), rtol=1e-5, atol=1e-5)
    # and back: our loader reads it with the same outputs
    again = load_sae(tmp_path / arch)
    torch.testing.assert_close(again.encode(x), ours.encode(x))


def _saelens_dir(tmp_path, arch, **extra):
    name = {"standard": "StandardSAE", "topk": "TopKSAE", "jumprelu": "JumpReLUSAE"}[arch]
    cls, cfg_cls = getattr(sae_lens, name), getattr(sae_lens, name + "Config")
    sae = cls(cfg_cls(d_in=16, d_sae=64, **extra))
    with torch.no_grad():
        for name, p in sae.named_parameters():
            p.copy_(0.3 * torch.randn_like(p) + (0.1 if name == "threshold" else 0.0))
        if hasattr(sae, "threshold"):
            sae.threshold.abs_()
    sae.save_model(str(tmp_path / arch))
    return sae


@pytest.mark.parametrize("arch, extra", [("standard", {}), ("topk", {"k": 5}), ("jumprelu", {})])
def test_we_load_saelens_directories(tmp_path, arch, extra):
    theirs = _saelens_dir(tmp_path, arch, **extra)
    ours = load_sae(tmp_path / arch)
    x = torch.randn(40, 16)
    with torch.no_grad():
        torch.testing.assert_close(ours.encode(x), theirs.encode(x), rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(ours.reconstruct(x), theirs.decode(theirs.encode(x)), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("rescale", [False, True])
def test_saelens_batchtopk_training_checkpoint(tmp_path, rescale):
    """A SAELens BatchTopK training state (topk_threshold) loads as a JumpReLU with that threshold;
    with rescale_acts_by_decoder_norm the threshold applies to h * ||W_dec[i]||."""
    from safetensors.torch import save_file

    d, F = 16, 64
    W_enc, W_dec = torch.randn(d, F), torch.randn(F, d)
    tensors = {
        "W_enc": W_enc,
        "b_enc": torch.zeros(F),
        "W_dec": W_dec,
        "b_dec": torch.zeros(d),
        "topk_threshold": torch.tensor(0.7),
    }
    (tmp_path / "bt").mkdir()
    save_file(tensors, str(tmp_path / "bt" / "sae_weights.safetensors"))
    cfg = {
        "architecture": "batchtopk",
        "d_in": d,
        "d_sae": F,
        "k": 4,
        "dtype": "float32",
        "rescale_acts_by_decoder_norm": rescale,
        "metadata": {"sae_lens_version": "6.5.0"},
    }
    (tmp_path / "bt" / "cfg.json").write_text(json.dumps(cfg))
    ours = load_sae(tmp_path / "bt")
    x = torch.randn(10, d)
    pre = x @ W_enc * (W_dec.norm(dim=1) if rescale else 1)
    torch.testing.assert_close(ours.encode(x), pre * (pre > 0.7))
    z = pre * (pre > 0.7)
    recon = (z / W_dec.norm(dim=1) if rescale else z) @ W_dec
    torch.testing.assert_close(ours.reconstruct(x), recon, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("arch, kw", [("hierarchical", {}), ("kron", {"kron_m": 2, "kron_n": 4})])
def test_own_architectures_round_trip(tmp_path, arch, kw):
    ours = _random_sae(arch, **kw)
    save_sae(ours, tmp_path / arch)
    cfg = json.loads((tmp_path / arch / "cfg.json").read_text())
    assert cfg["architecture"] in ("hierarchical_topk", "kron")
    again = load_sae(tmp_path / arch)
    x = torch.randn(20, 24)
    torch.testing.assert_close(again.encode(x), ours.encode(x))


def test_load_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="cfg.json is missing"):
        load_sae(tmp_path / "nothing")
    ours = _random_sae("topk")
    save_sae(ours, tmp_path / "t")
    weights = tmp_path / "t" / "sae_weights.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(ValueError, match="corrupt or truncated"):
        load_sae(tmp_path / "t")
    (tmp_path / "t" / "cfg.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        load_sae(tmp_path / "t")
    save_sae(ours, tmp_path / "u")
    cfg = json.loads((tmp_path / "u" / "cfg.json").read_text())
    cfg["architecture"] = "gated"
    (tmp_path / "u" / "cfg.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="'gated' is not supported"):
        load_sae(tmp_path / "u")


def test_atomic_write_keeps_old_file_on_failure(tmp_path):
    from ttslens.sae.files import atomic_path

    target = tmp_path / "f.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("crash mid-write")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["f.txt"]


@pytest.mark.parametrize("apply_b_dec", [True, False])
def test_saelens_topk_rescaled_by_decoder_norm(tmp_path, apply_b_dec):
    """rescale_acts_by_decoder_norm=True: SAELens selects on h * ||W_dec[i]|| and decodes with unit rows;
    loaded here with the norms folded in, the latents and reconstructions are the same."""
    theirs = _saelens_dir(tmp_path, "topk", k=5, rescale_acts_by_decoder_norm=True, apply_b_dec_to_input=apply_b_dec)
    with torch.no_grad():
        theirs.W_dec.mul_(torch.linspace(0.2, 3.0, 64)[:, None])  # very unequal decoder norms
    theirs.save_model(str(tmp_path / "topk"))
    ours = load_sae(tmp_path / "topk")
    x = torch.randn(40, 16)
    with torch.no_grad():
        torch.testing.assert_close(ours.encode(x), theirs.encode(x), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(ours.reconstruct(x), theirs.decode(theirs.encode(x)), rtol=1e-5, atol=1e-5)
    save_sae(ours, tmp_path / "again")  # saved by us: the norms stay folded, the flag is off
    again = sae_lens.SAE.load_from_disk(str(tmp_path / "again"))
    assert again.cfg.rescale_acts_by_decoder_norm is False
    with torch.no_grad():
        torch.testing.assert_close(again.encode(x), theirs.encode(x), rtol=1e-5, atol=1e-5)


def test_rescale_flag_on_another_architecture_is_refused(tmp_path):
    _saelens_dir(tmp_path, "standard")
    cfg = json.loads((tmp_path / "standard" / "cfg.json").read_text())
    (tmp_path / "standard" / "cfg.json").write_text(json.dumps({**cfg, "rescale_acts_by_decoder_norm": True}))
    with pytest.raises(ValueError, match="rescale_acts_by_decoder_norm is only understood for topk"):
        load_sae(tmp_path / "standard")


def test_sae_lens_version_is_the_installed_one(tmp_path, monkeypatch):
    import importlib.metadata

    import ttslens.sae.files as files

    save_sae(_random_sae("topk"), tmp_path / "v")
    meta = json.loads((tmp_path / "v" / "cfg.json").read_text())["metadata"]
    assert meta["sae_lens_version"] == importlib.metadata.version("sae-lens")

    def not_installed(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(files.importlib.metadata, "version", not_installed)
    save_sae(_random_sae("topk"), tmp_path / "none")
    assert "sae_lens_version" not in json.loads((tmp_path / "none" / "cfg.json").read_text())["metadata"]
    torch.testing.assert_close(load_sae(tmp_path / "none").W_enc, _random_sae("topk").W_enc)


def test_saelens_loads_a_stitched_boost_sae(tmp_path):
    """base + residual (SAE Boost) saved as one SAE: SAELens reads it as jumprelu, with base + residual's output."""
    from ttslens.sae.boost import stitch

    base = _random_sae("batchtopk")
    residual = _random_sae("relu", F=32)
    with torch.no_grad():
        residual.b_dec.zero_()
    save_sae(
        stitch(base, residual),
        tmp_path / "stitched",
        {"model_name": "tiny", "hook_name": "blocks.3.hook_resid_post", "layer": 3},
    )
    theirs = sae_lens.SAE.load_from_disk(str(tmp_path / "stitched"))
    assert theirs.cfg.architecture() == "jumprelu" and theirs.cfg.d_sae == 96 + 32
    x = torch.randn(50, 24)
    with torch.no_grad():
        torch.testing.assert_close(
            theirs.decode(theirs.encode(x)), base.reconstruct(x) + residual.reconstruct(x), rtol=1e-4, atol=1e-4
        )

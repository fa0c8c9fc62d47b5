"""SAE Match: folding, linear-assignment matching, chains, layer skipping, and `ttslens match` end to end."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from ttslens.sae.base import SAEConfig, make_sae
from ttslens.sae.errors import BadInput
from ttslens.sae.match import (
    chain,
    fold,
    folded_sae,
    match_pair,
    persistence,
    skip_ce_edits,
    skip_reconstruction,
)


def _sae(arch: str = "batchtopk", d: int = 16, F: int = 48, seed: int = 0):
    torch.manual_seed(seed)
    sae = make_sae(SAEConfig(d_in=d, d_sae=F, k=4, arch=arch))
    with torch.no_grad():
        sae.b_enc.normal_(0, 0.1)
        sae.b_dec.normal_(0, 0.1)
        if hasattr(sae, "threshold"):
            sae.threshold.copy_(torch.rand(F) * 0.5 + 0.1)
    return sae


@pytest.mark.parametrize("arch", ["batchtopk", "relu"])
def test_folding_keeps_the_outputs(arch):
    sae = _sae(arch)
    if arch == "relu":
        with torch.no_grad():
            sae.W_dec.mul_(torch.rand(sae.cfg.d_sae, 1) * 3 + 0.2)  # decoder norms away from 1
    x = torch.randn(200, 16)
    folded = folded_sae(sae)
    torch.testing.assert_close(folded.reconstruct(x), sae.reconstruct(x), atol=1e-5, rtol=1e-5)
    f = fold(sae)
    assert f.kind == ("threshold" if arch == "batchtopk" else "decoder_norm")
    if arch == "batchtopk":
        assert torch.all(folded.threshold == 1)


def _shuffled(sae, seed: int = 1):
    """The same SAE with its features permuted and each rescaled (threshold and weights): identical outputs."""
    import copy

    g = torch.Generator().manual_seed(seed)
    F = sae.cfg.d_sae
    p = torch.randperm(F, generator=g)
    c = torch.rand(F, generator=g) * 2 + 0.5
    out = copy.deepcopy(sae)
    with torch.no_grad():
        out.W_enc.copy_(sae.W_enc[p] * c[:, None])
        out.b_enc.copy_(sae.b_enc[p] * c)
        out.W_dec.copy_(sae.W_dec[p] / c[:, None])
        out.threshold.copy_(sae.threshold[p] * c)
    return out, p


def test_matching_recovers_a_known_permutation_of_a_rescaled_sae():
    a = _sae()
    b, p = _shuffled(a)
    x = torch.randn(100, 16)
    torch.testing.assert_close(b.reconstruct(x), a.reconstruct(x), atol=1e-5, rtol=1e-5)  # the same SAE
    m = match_pair(a, b)
    want = torch.argsort(p).numpy()  # feature i of A sits at position want[i] of B
    assert np.array_equal(m.perm, want)
    assert np.allclose(m.cosine, 1, atol=1e-5) and np.allclose(m.cost, 0, atol=1e-6)
    torch.testing.assert_close(skip_reconstruction(a, b, m.perm, x), a.reconstruct(x), atol=1e-4, rtol=1e-4)


def test_an_sae_matched_to_itself_is_the_identity_and_chains_persist():
    a = _sae()
    m = match_pair(a, a)
    assert np.array_equal(m.perm, np.arange(a.cfg.d_sae))
    paths = chain([m.perm, m.perm])
    assert np.array_equal(paths, np.stack([np.arange(48)] * 3, 1))
    assert (persistence(paths, [m.cosine, m.cosine]) == 3).all()


def test_a_planted_feature_persists_and_the_rest_do_not():
    saes = [_sae(seed=s) for s in range(3)]
    v = torch.nn.functional.normalize(torch.randn(16), dim=0)
    with torch.no_grad():
        for s, at in zip(saes, (5, 17, 30), strict=True):
            s.threshold.fill_(1.0)
            s.W_dec[at] = v * 3  # the same direction, at another index in each layer
    m01, m12 = match_pair(saes[0], saes[1]), match_pair(saes[1], saes[2])
    assert m01.perm[5] == 17 and m12.perm[17] == 30
    paths = chain([m01.perm, m12.perm])
    lasting = persistence(paths, [m01.cosine, m12.cosine], min_cosine=0.9)
    assert paths[5].tolist() == [5, 17, 30] and lasting[5] == 3
    assert (np.delete(lasting, 5) < 3).all()  # random decoders never stay this aligned


def test_different_widths_match_into_the_larger_one():
    small, big = _sae(F=32), _sae(F=48, seed=3)
    m = match_pair(small, big)
    assert (m.perm >= 0).all() and len(set(m.perm.tolist())) == 32 and len(m.unmatched_b) == 16
    with pytest.raises(BadInput, match="different widths"):
        match_pair(small, _sae(d=8))


def test_layer_skip_edits_on_a_text_lm(tiny_lm):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from ttslens.sae.metrics import TextLMEvaluator

    model = AutoModelForCausalLM.from_pretrained(str(tiny_lm / "model")).eval()
    tok = AutoTokenizer.from_pretrained(str(tiny_lm / "model"))
    ids = tok(["the cat sat on the mat", "a dog ran"], return_tensors="pt", padding=True)
    ev = TextLMEvaluator(model, ids["input_ids"], ids["attention_mask"])
    d = model.config.hidden_size
    a, b = _sae(d=d, F=64), _sae(d=d, F=64, seed=2)
    acts = ev.acts([0, 1])
    assert acts[0].shape == (int(ids["attention_mask"].sum()), d)
    clean, skipped = ev.ce([]), ev.ce(skip_ce_edits(a, b, match_pair(a, b).perm, 0, 1))
    assert skipped != clean and np.isfinite(skipped)
    with pytest.raises(BadInput, match="forward"):
        skip_ce_edits(a, b, np.arange(64), 1, 1)


def test_match_command_end_to_end_on_the_demo(tmp_path):
    """Two SAEs on adjacent demo layers (trained briefly here) → matches.json, match.png, layer-skip CE."""
    from ttslens.app.cli import main

    dirs = []
    for layer in (2, 3):
        out = tmp_path / f"sae{layer}"
        args = [
            "train",
            "--backbone",
            "demo",
            "--layer",
            str(layer),
            "--latents",
            "128",
            "--k",
            "8",
            "--seed",
            str(layer),
        ]
        args += ["--tokens", "4096", "--batch-size", "1024", "--warmup-steps", "2", "--buffer-tokens", "4096"]
        assert main([*args, "--eval-tokens", "1024", "--calibration-tokens", "2048", "--out", str(out)]) == 0
        dirs += ["--sae", str(out)]
    assert main(["match", *dirs, "--items", "6", "--out", str(tmp_path / "m")]) == 0
    got = json.loads((tmp_path / "m" / "matches.json").read_text())
    (pair,) = got["pairs"]
    assert pair["layers"] == [2, 3] and sorted(pair["perm"]) == list(range(128))
    assert pair["ce_clean"] < pair["ce_skip"] and -1 < pair["ev_skip"] <= 1
    assert (tmp_path / "m" / "match.png").stat().st_size > 1000
    backwards = ["--sae", dirs[3], "--sae", dirs[1]]
    assert main(["match", *backwards, "--items", "0", "--out", str(tmp_path / "x")]) == 2  # layers out of order


def test_match_and_flow_on_a_text_lm(tiny_lm, tmp_path):
    """The same pipeline on a tiny text LM: SAEs on both its layers → `ttslens match` (layer skipping on the LM's
    own next-token CE) → `ttslens flow`."""
    from ttslens.app.cli import main
    from ttslens.sae.training import TrainConfig, train

    dirs = []
    for layer in range(2):
        out = tmp_path / "saes" / f"resid_{layer}"
        cfg = TrainConfig(
            sae=SAEConfig(d_sae=64, k=4), model=str(tiny_lm / "model"), dataset=str(tiny_lm / "corpus.txt"),
            layer=layer, context=32, tokens=12 * 256, batch_size=256, buffer_tokens=2048, lr=2e-3, eval_tokens=512,
            seed=layer, out=str(out),
        )  # fmt: skip
        train(cfg, progress=False)
        dirs += ["--sae", str(out)]
    assert main(["match", *dirs, "--items", "8", "--out", str(tmp_path / "m")]) == 0
    pairs = json.loads((tmp_path / "m" / "matches.json").read_text())["pairs"]
    assert [p["layers"] for p in pairs] == [[0, 1]]
    assert all(p["ce_skip"] > 0 and p["ce_clean"] > 0 for p in pairs)
    assert main(["flow", "--sae-dir", str(tmp_path / "saes"), "--feature", "1/3", "--out", str(tmp_path / "f")]) == 0
    assert (tmp_path / "f" / "resid_1_3.json").exists()

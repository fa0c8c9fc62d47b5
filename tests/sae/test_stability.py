"""Feature stability across seeds (`ttslens.sae.stability`, `ttslens stability`): identical seeds are stable
everywhere, a shuffled copy is matched exactly, the pooled SAE holds no duplicates, trained seeds on data with a
known dictionary find the true features stable, and the results reach labels and the feature browser."""

import json

import numpy as np
import pytest
import torch

from ttslens.app.cli import main as cli
from ttslens.autointerp.browse import FeatureIndex
from ttslens.sae.base import SAEConfig, make_sae
from ttslens.sae.files import load_sae, save_sae
from ttslens.sae.stability import match_seeds, pooled_sae, stability, unit
from ttslens.sae.synthetic import make_superposition, write_synthetic


def _random(d: int, F: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    sae = make_sae(SAEConfig(d_in=d, d_sae=F, k=4))
    with torch.no_grad():
        sae.W_dec.copy_(torch.randn(F, d, generator=g))
        sae.W_enc.copy_(torch.randn(F, d, generator=g))
        sae.b_dec.copy_(torch.randn(d, generator=g))
        sae.threshold.copy_(torch.rand(F, generator=g))
    return sae.eval()


def _permuted(sae, perm):
    out = make_sae(sae.cfg)
    out.load_state_dict(
        {k: v[perm] if v.dim() and v.shape[0] == sae.cfg.d_sae else v for k, v in sae.state_dict().items()}
    )
    return out.eval()


def test_identical_seeds_are_stable_and_a_shuffled_copy_is_matched_exactly():
    a = _random(32, 96, 0)
    stab, cos = stability([a, a, a])
    assert (stab == 1).all() and np.allclose(cos, 1)
    perm = torch.randperm(96, generator=torch.Generator().manual_seed(1))
    m = match_seeds(a, _permuted(a, perm))
    assert (perm[torch.from_numpy(m.perm)] == torch.arange(96)).all() and np.allclose(m.cosine, 1)
    stab, _ = stability([a, _random(32, 96, 5)])
    assert stab.mean() < 0.05  # independent random dictionaries: nothing matches at 0.7


def test_pooled_sae_has_no_duplicates_and_reconstructs_like_its_sources():
    a = _random(32, 64, 0)
    noisy = _permuted(a, torch.randperm(64, generator=torch.Generator().manual_seed(2)))
    with torch.no_grad():
        noisy.W_dec.add_(0.05 * torch.randn(noisy.W_dec.shape, generator=torch.Generator().manual_seed(3)))
    b = _random(32, 64, 4)
    s = [stability([x, *[y for y in (a, noisy, b) if y is not x]])[0] for x in (a, noisy, b)]
    pooled, kept = pooled_sae([a, noisy, b], s, 0.7)
    W = unit(pooled.W_dec)
    sim = W @ W.T - 2 * torch.eye(len(W))
    assert float(sim.max()) < 0.7 and len(kept) == 64
    assert sum(i == 0 for i, _ in kept) + sum(i == 1 for i, _ in kept) <= 64  # a's twins are one feature each
    # a pooled SAE of one SAE's own features is that SAE
    same, kept = pooled_sae([a], [np.ones(64)], 0.7)
    x = torch.randn(200, 32)
    torch.testing.assert_close(same.reconstruct(x), a.reconstruct(x), rtol=1e-5, atol=1e-4)


def test_stability_command_finds_the_true_features_and_feeds_labels_and_the_browser(tmp_path):
    """3 seeds on data with a known dictionary (its generator seed is none of theirs: an SAE seeded like the data
    would start at the true dictionary): the features stable across seeds are the ones close to a true feature."""
    syn = make_superposition(60_000, 64, 128, 4, seed=7)
    path = write_synthetic(tmp_path / "acts.safetensors", syn)
    out = tmp_path / "stab"
    args = ["stability", "--train-seeds", "3", "--seed", "1", "--activations", str(path), "--latents", "128"]
    args += [
        "--k",
        "4",
        "--tokens",
        "150000",
        "--batch-size",
        "1024",
        "--eval-tokens",
        "4096",
        "--buffer-tokens",
        "16384",
    ]
    assert cli([*args, "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    recs = [json.loads(x) for x in (out / "stability.jsonl").read_text().splitlines()]
    assert len(recs) == 128 and all(0 <= r["stability"] <= 1 and len(r["cosines"]) == 2 for r in recs)
    first = load_sae(out / "seed_1")
    truth = (unit(first.W_dec) @ unit(syn.dictionary).T).max(1).values.numpy()
    stab = np.array([r["stability"] for r in recs])
    assert truth[stab == 1].mean() > truth[stab == 0].mean() + 0.1, (truth[stab == 1].mean(), truth[stab == 0].mean())
    assert summary["spearman_stability_delta_fvu"] is not None and len(summary["ev"]) == 3
    pooled = summary["pooled"]
    assert pooled["d_sae"] <= 128 and (out / "pooled" / "cfg.json").exists() and pooled["ev"]["pooled"] > 0
    assert (out / "stability.png").exists()
    # the first SAE now carries its stability: labels written later include it, and the browser shows it
    (out / "seed_1" / "labels").mkdir()
    (out / "seed_1" / "labels" / "labels.jsonl").write_text(json.dumps({"feature": 3, "label": "x"}) + "\n")
    assert (
        cli(["stability", "--sae", str(out / "seed_1"), "--sae", str(out / "seed_2"), "--out", str(tmp_path / "s2")])
        == 0
    )
    lab = json.loads((out / "seed_1" / "labels" / "labels.jsonl").read_text())
    two = [json.loads(x)["stability"] for x in (tmp_path / "s2" / "stability.jsonl").read_text().splitlines()]
    assert lab["stability"] == two[3]
    idx = FeatureIndex.load(out / "seed_1")
    assert idx.filter()[0]["stability"] == two[3] and idx.card(3)["stability"] == two[3]


def test_stability_refuses_bad_input_in_one_line(tmp_path, capsys):
    a = save_sae(_random(32, 64, 0), tmp_path / "a", {"layer": 0, "hook_name": "layers.0"})
    b = save_sae(_random(16, 64, 0), tmp_path / "b", {"layer": 0, "hook_name": "layers.0"})
    c = save_sae(_random(32, 64, 1), tmp_path / "c", {"layer": 2, "hook_name": "layers.2"})
    cases = [
        (["--sae", str(a)], "at least 2 SAEs"),
        (["--sae", str(a), str(b)], "different widths"),
        (["--sae", str(a), str(c)], "different models or layers"),
        (["--sae", str(a), str(a), "--threshold", "1.5"], "(0, 1]"),
        (["--sae", str(a), str(a), "--train-seeds", "2"], "not both"),
        ([], "--train-seeds"),
    ]
    for extra, message in cases:
        assert cli(["stability", *extra, "--out", str(tmp_path / "o")]) == 2, extra
        err = capsys.readouterr().err.strip().splitlines()
        assert message in err[-1], (extra, err)
    with pytest.raises(ValueError, match="at least 2"):
        stability([_random(8, 8, 0)])

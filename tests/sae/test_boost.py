"""SAE Boost (`ttslens.sae.boost`, `ttslens boost`): the stitched SAE is base + residual exactly, boosts stack,
nothing to learn changes nothing, a missing part of a dictionary is learned while the general data keep their
EV; bad input is refused in one line."""

import json

import pytest
import torch

from ttslens.app.cli import main as cli
from ttslens.sae.base import SAEConfig, make_sae
from ttslens.sae.boost import calibrate_retention, stitch
from ttslens.sae.files import load_sae, save_sae
from ttslens.sae.synthetic import Synthetic, write_synthetic


def _random(arch: str, d: int, F: int, seed: int, bias: bool = True):
    g = torch.Generator().manual_seed(seed)
    sae = make_sae(SAEConfig(arch=arch, d_in=d, d_sae=F, k=4))
    with torch.no_grad():
        for p in (sae.W_enc, sae.W_dec):
            p.copy_(torch.randn(p.shape, generator=g))
        sae.b_enc.copy_(0.1 * torch.randn(F, generator=g))
        sae.b_dec.copy_(torch.randn(d, generator=g) if bias else torch.zeros(d))
        if arch == "batchtopk":
            sae.threshold.copy_(torch.rand(F, generator=g))
    return sae.eval()


@pytest.mark.parametrize("base_arch", ["batchtopk", "relu"])
def test_stitched_output_is_base_plus_residual_and_boosts_stack(base_arch):
    x = torch.randn(300, 16)
    base = _random(base_arch, 16, 40, 0)
    r1, r2 = _random("batchtopk", 16, 12, 1, bias=False), _random("relu", 16, 8, 2, bias=False)
    one = stitch(base, r1)
    assert one.cfg.d_sae == 52
    torch.testing.assert_close(one.reconstruct(x), base.reconstruct(x) + r1.reconstruct(x), rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(one.encode(x)[:, :40], base.encode(x), rtol=1e-5, atol=1e-4)
    two = stitch(base, r1, r2)
    want = base.reconstruct(x) + r1.reconstruct(x) + r2.reconstruct(x)
    torch.testing.assert_close(two.reconstruct(x), want, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(stitch(one, r2).reconstruct(x), want, rtol=1e-5, atol=1e-4)  # stacking = stitching
    with pytest.raises(ValueError, match="cannot be stitched"):
        stitch(_random("topk", 16, 40, 0), r1)
    with pytest.raises(ValueError, match="no decoder bias"):
        stitch(base, _random("batchtopk", 16, 12, 1))


def test_retention_calibration_silences_a_boost_latent_only_where_it_hurts():
    """Base: 4 exact directions (general rows are reconstructed exactly). Boost latent A reads e4 + 0.5 e0 and
    writes e4: it fires on general rows too (pre-activation 0.5 x0 ≤ 0.5) and spoils them, while on domain rows
    (e4 component 2–3) it carries the missing direction. Latent B never fires. Calibration must lift A's threshold
    above every general pre-activation and below every domain one, and leave B alone."""
    g = torch.Generator().manual_seed(0)
    eye = torch.eye(8)
    base = make_sae(SAEConfig(arch="relu", d_in=8, d_sae=4))
    boost = make_sae(SAEConfig(arch="relu", d_in=8, d_sae=2))
    with torch.no_grad():
        for sae in (base, boost):
            sae.b_enc.zero_()
            sae.b_dec.zero_()
        base.W_enc.copy_(eye[:4])
        base.W_dec.copy_(eye[:4])
        boost.W_enc.copy_(torch.stack([eye[4] + 0.5 * eye[0], eye[5]]))
        boost.W_dec.copy_(eye[4:6])
    stitched = stitch(base.eval(), boost.eval())
    general = torch.cat([torch.rand(2000, 4, generator=g), torch.zeros(2000, 4)], 1)
    domain = general.clone()
    domain[:, 4] = 2 + torch.rand(2000, generator=g)

    def ev(x):
        r = stitched.reconstruct(x).detach()
        return float(1 - ((x - r) ** 2).sum() / ((x - x.mean(0)) ** 2).sum())

    assert ev(general) < 0.99
    domain_before = ev(domain)
    info = calibrate_retention(stitched, 4, [(domain, {})], [(general, {})], weight=0.0)
    assert info["latents_raised"] == 0 and float(stitched.threshold[4:].max()) == 0
    info = calibrate_retention(stitched, 4, [(domain, {})], [(general, {})], weight=1.0)
    assert info["latents_raised"] == 1, info
    theta = float(stitched.threshold[4])
    assert 0.5 * float(general[:, 0].max()) <= theta < 2.0, theta
    assert float(stitched.threshold[5]) == 0 and float(stitched.threshold[:4].max()) == 0
    assert ev(general) > 0.9999
    assert abs(ev(domain) - domain_before) < 1e-6


def _write(path, x):
    return write_synthetic(path, Synthetic(x, torch.zeros(1, x.shape[1]), torch.tensor(0.0)))


def _dictionary(n: int, d: int, seed: int) -> torch.Tensor:
    D = torch.randn(n, d, generator=torch.Generator().manual_seed(seed))
    return D / D.norm(dim=1, keepdim=True)


def _codes(n: int, F: int, k: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    active = torch.rand(n, F, generator=g) < k / F
    return active * (1 + 0.25 * torch.randn(n, F, generator=g)).abs()


TRAIN = ["--batch-size", "1024", "--eval-tokens", "4096", "--buffer-tokens", "16384", "--log-every", "50"]


def test_boost_learns_what_the_base_misses_and_keeps_the_general_data(tmp_path):
    """The base sees features 0..47 only; the domain also uses 48..63, which the base cannot reconstruct."""
    D = _dictionary(64, 32, 0)
    general = _write(tmp_path / "general.safetensors", _codes(40_000, 48, 4, 1) @ D[:48])
    domain_codes = torch.cat([_codes(40_000, 48, 3, 2), _codes(40_000, 16, 2, 3)], dim=1)
    domain = _write(tmp_path / "domain.safetensors", domain_codes @ D)
    base = tmp_path / "base"
    args = ["train", "--activations", str(general), "--latents", "128", "--k", "4", "--tokens", "200000"]
    assert cli([*args, *TRAIN, "--out", str(base)]) == 0
    out = tmp_path / "boosted"
    args = ["boost", "--base", str(base), "--activations", str(domain), "--general", str(general)]
    args += ["--latents", "64", "--k", "2", "--tokens", "120000", *TRAIN, "--out", str(out)]
    assert cli(args) == 0
    rep = json.loads((out / "boost.json").read_text())
    dom, gen = rep["domain"], rep["general"]
    assert dom["stitched"]["explained_variance"] > dom["base"]["explained_variance"] + 0.1, dom
    assert rep["general_retention"] >= 0.99, rep
    cal = rep["retention_calibration"]
    assert cal["weight"] == 1.0 and rep["general_retention"] >= cal["before"]["general_retention"] - 1e-6, cal
    stitched, residual = load_sae(out), load_sae(out / "residual")
    base_sae = load_sae(base)
    assert bool((stitched.threshold[128:] >= residual.threshold).all())  # calibration only raises them
    with torch.no_grad():  # the stitched SAE is base + the residual SAE under its calibrated thresholds
        residual.threshold.copy_(stitched.threshold[128:])
    rows = (domain_codes @ D)[:500]
    with torch.no_grad():  # rows with a latent within float rounding of its threshold can fire in one form only
        clear = ((stitched.preacts(rows) - stitched.threshold).abs() > 1e-3).all(1)
    assert clear.sum() >= 450, int(clear.sum())
    rows = rows[clear]
    torch.testing.assert_close(
        stitched.reconstruct(rows), base_sae.reconstruct(rows) + residual.reconstruct(rows), rtol=0, atol=1e-4
    )
    assert float(residual.b_dec.detach().abs().max()) == 0
    assert gen["stitched"]["tokens"] == gen["base"]["tokens"] > 0
    # the stitched directory is an SAE like any other
    assert cli(["eval", "--sae", str(out), "--activations", str(domain), "--tokens", "4096"]) == 0
    # a second run into the finished directory is refused; --overwrite redoes it
    assert cli(args) == 2


def test_boost_on_data_the_base_reconstructs_changes_nothing(tmp_path):
    """Data inside the base's exact reconstruction (non-negative combinations of orthonormal decoder rows of a
    tied ReLU SAE): the error is 0, and so is what the boost adds."""
    d, F = 24, 12
    Q, _ = torch.linalg.qr(torch.randn(d, F, generator=torch.Generator().manual_seed(0)))
    base = make_sae(SAEConfig(arch="relu", d_in=d, d_sae=F))
    with torch.no_grad():
        base.W_dec.copy_(Q.T)
        base.W_enc.copy_(Q.T)
        base.b_enc.zero_()
        base.b_dec.zero_()
    base_dir = save_sae(base, tmp_path / "base", {"layer": 0, "hook_name": "layers.0"})
    x = _codes(30_000, F, 3, 1) @ Q.T
    torch.testing.assert_close(base.reconstruct(x), x, rtol=1e-5, atol=1e-4)
    acts = _write(tmp_path / "acts.safetensors", x)
    out = tmp_path / "boosted"
    args = ["boost", "--base", str(base_dir), "--activations", str(acts), "--latents", "32", "--k", "2"]
    assert cli([*args, "--tokens", "60000", *TRAIN, "--out", str(out)]) == 0
    rep = json.loads((out / "boost.json").read_text())
    b, s = rep["domain"]["base"]["explained_variance"], rep["domain"]["stitched"]["explained_variance"]
    assert b > 0.9999 and abs(s - b) < 1e-3, (b, s)


def test_boost_refuses_bad_input_in_one_line(tmp_path, capsys, synthetic):
    path, _syn = synthetic
    base = save_sae(_random("batchtopk", 16, 40, 0), tmp_path / "base16", {"layer": 0, "hook_name": "layers.0"})
    topk = save_sae(_random("topk", 32, 40, 0), tmp_path / "topk", {"layer": 0, "hook_name": "layers.0"})
    ok = save_sae(_random("batchtopk", 32, 40, 0), tmp_path / "base32", {"layer": 0, "hook_name": "layers.0"})
    other = tmp_path / "busy"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    common = ["--activations", str(path), "--tokens", "8192", *TRAIN]
    cases = [
        (["--base", str(base)], "width 16 but the data has width 32"),
        (["--base", str(topk)], "cannot be stitched"),
        (["--base", str(ok), "--arch", "topk"], "cannot be stitched"),
        (["--base", str(ok), "--layer", "3"], "drop --layer"),
        (["--base", str(ok), "--out", str(other)], "holds another run"),
        (["--base", str(ok), "--retain", "-1"], "--retain -1.0: give a weight ≥ 0"),
        ([], "--base"),
    ]
    for extra, message in cases:
        out = [] if "--out" in extra else ["--out", str(tmp_path / "o")]
        assert cli(["boost", *common, *extra, *out]) == 2, extra
        err = capsys.readouterr().err.strip().splitlines()
        assert message in err[-1], (extra, err)
    assert (other / "notes.txt").read_text() == "mine"

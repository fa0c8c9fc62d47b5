"""Steering edits on one layer: the exact math of each op, and the shared steering strings."""

import warnings

import pytest
import torch

from ttslens.sae import SAEConfig
from ttslens.sae.base import make_sae
from ttslens.sae.notes import collect
from ttslens.sae.steering import (
    ALPHA_LIMIT,
    STRENGTHS,
    FeatureEdit,
    LayerSteer,
    ResolvedEdit,
    SteerRequest,
    clipped,
    is_steer_spec,
    parse_steer,
    parse_steers,
)


@pytest.fixture(scope="module")
def sae():
    torch.manual_seed(0)
    s = make_sae(SAEConfig(arch="topk", d_in=16, d_sae=64, k=4))
    with torch.no_grad():  # decoder rows of several norms, a bias: nothing in the math may assume unit rows
        s.W_dec.mul_(torch.rand(64, 1) * 3 + 0.5)
        s.b_dec.normal_()
        s.b_enc.normal_(0, 0.1)
    return s.eval()


@pytest.fixture(scope="module")
def h():
    return torch.randn(20, 16, generator=torch.Generator().manual_seed(1)) * 3


def test_zero_strength_is_a_bit_for_bit_no_op(sae, h):
    edits = [FeatureEdit(3, "add", 0.0, 2.5), FeatureEdit(7, "direction", 0.0, units="unit")]
    assert torch.equal(LayerSteer(sae, edits)(h), h)


def test_add_moves_only_that_latents_contribution(sae, h):
    out = LayerSteer(sae, [FeatureEdit(5, "add", 4.0, 2.5)])(h)
    torch.testing.assert_close(out - h, (4.0 * 2.5 * sae.W_dec[5]).expand_as(h))
    # in SAE terms: h = W_dec z + b_dec + err; the edit keeps err and every other latent
    z, z2 = sae.encode(h), sae.encode(out)
    err, err2 = h - sae.decode(z), out - sae.decode(z + 10.0 * torch.eye(64)[5])
    torch.testing.assert_close(err2, err)
    assert z2.shape == z.shape


def test_clamp_and_ablate_change_only_the_edited_latents(sae, h):
    z = sae.encode(h)
    f = int(z.sum(0).argmax())  # a latent that fires
    clamp = LayerSteer(sae, [FeatureEdit(f, "clamp", 7.0)])(h)
    torch.testing.assert_close(clamp - h, (7.0 - z[:, f : f + 1]) * sae.W_dec[f])
    ablate = LayerSteer(sae, [FeatureEdit(f, "ablate")])(h)
    torch.testing.assert_close(ablate - h, -z[:, f : f + 1] * sae.W_dec[f])
    assert (z[:, f] > 0).any() and not torch.equal(ablate, h)


def test_replace_is_the_reconstruction_of_the_edited_code(sae, h):
    z = sae.encode(h)
    torch.testing.assert_close(LayerSteer(sae, [FeatureEdit(2, "add", 0.0)], replace=True)(h), sae.decode(z))
    dz = torch.zeros(64)
    dz[2] = 3.0 * 1.5
    out = LayerSteer(sae, [FeatureEdit(2, "add", 3.0, 1.5)], replace=True)(h)
    torch.testing.assert_close(out, sae.decode(z + dz))


def test_direction_units_and_several_features_add_up(sae, h):
    row = sae.W_dec[9]
    raw = LayerSteer(sae, [FeatureEdit(9, "direction", 2.0, units="raw")])(h) - h
    unit = LayerSteer(sae, [FeatureEdit(9, "direction", 2.0, units="unit")])(h) - h
    norm = LayerSteer(sae, [FeatureEdit(9, "direction", 2.0, units="norm")], typical_norm=10.0)(h) - h
    torch.testing.assert_close(raw[0], 2.0 * row)
    torch.testing.assert_close(unit[0].norm(), torch.tensor(2.0))
    torch.testing.assert_close(norm[0].norm(), torch.tensor(20.0))
    with pytest.raises(ValueError, match="typical residual norm"):
        LayerSteer(sae, [FeatureEdit(9, "direction", 2.0, units="norm")])(h)
    both = LayerSteer(sae, [FeatureEdit(1, "add", 1.0, 2.0), FeatureEdit(4, "add", -2.0, 0.5)])(h) - h
    torch.testing.assert_close(both[0], 2.0 * sae.W_dec[1] - 1.0 * sae.W_dec[4])


def test_absurd_strength_is_clipped_with_a_note_and_stays_finite(sae, h):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a note, not a Python warning
        with collect() as notes:
            steer = LayerSteer(sae, [FeatureEdit(0, "add", 1e12, 1.0), FeatureEdit(1, "clamp", -2e3)])
    assert notes == [
        f"feature 0's strength 1e+12 clipped to 1000 ({STRENGTHS})",
        f"feature 1's strength -2000 clipped to -1000 ({STRENGTHS})",
    ]
    assert steer.edits[0].alpha == ALPHA_LIMIT and steer.edits[1].alpha == -ALPHA_LIMIT
    assert torch.isfinite(steer(h)).all()
    with pytest.raises(ValueError, match="finite"):
        FeatureEdit(0, "add", float("nan"))
    with pytest.raises(ValueError, match="out of range"):
        LayerSteer(sae, [FeatureEdit(64, "add", 1.0)])


def test_steering_strings():
    assert parse_steer("laughter=40") == ("laughter", "add", 40.0, None)
    assert parse_steer("361:clamp=5") == ("361", "clamp", 5.0, None)
    assert parse_steer("361:ablate") == ("361", "ablate", 0.0, None)
    assert parse_steer("3/361:direction=-0.5") == ("361", "direction", -0.5, 3)
    assert parse_steer(" Female Voice = -30 ") == ("female voice", "add", -30.0, None)
    assert parse_steer(("gender", -2)).alpha == -2.0 and parse_steer("12=1").feature == 12
    assert [r.target for r in parse_steers("laughter=1, rate=-2")] == ["laughter", "rate"]
    assert [r.target for r in parse_steers({"laughter": 1, "361:ablate": None})] == ["laughter", "361"]
    for bad, msg in (("laughter", "no strength"), ("5=abc", "not a number"), ("5:boost=1", "unknown steering op")):
        with pytest.raises(ValueError, match=msg):
            parse_steer(bad)
    with pytest.raises(ValueError, match="finite"):
        parse_steer("5=inf")


def test_missing_strength_hints_write_the_right_form():
    for spec, form in (("gender", "gender"), ("361:clamp", "361:clamp"), ("3/361:direction", "3/361:direction")):
        with pytest.raises(ValueError) as e:
            parse_steer(spec)
        assert str(e.value) == f"steering {spec!r} has no strength: write {form}=ALPHA ({STRENGTHS})"
    assert parse_steer("361:ablate").alpha == 0.0  # ablate takes none


def test_what_looks_like_an_edit():
    """How the CLI tells edits from the text after --steer: the form, right or wrong in its details."""
    for edit in ("laughter=1", "361:clamp=5", "361:clamp", "361:ablate", "3/361=-2", "female voice=-2", "x:add=1e9"):
        assert is_steer_spec(edit), edit
    for text in ("some text", "hello.", "gender", "note: hello there", "x=y", "5:boost=1", ""):
        assert not is_steer_spec(text), text


def test_resolved_strengths_beyond_the_limit_are_clipped_once_with_what_was_asked():
    edits = [ResolvedEdit(3, FeatureEdit(f, "add", a, 1.0), "preset gender", "") for f, a in ((1, 5e3), (2, 2.0))]
    with collect() as notes:
        out = clipped(edits, SteerRequest("gender", "add", 5e3, None))
        assert clipped(edits[1:], SteerRequest("gender", "add", 2.0, None)) == edits[1:]  # nothing to say
    assert [e.edit.alpha for e in out] == [ALPHA_LIMIT, 2.0] and [e.requested for e in out] == [5e3, None]
    assert notes == [f"steering gender: strength 5000 clipped to 1000 ({STRENGTHS})"]

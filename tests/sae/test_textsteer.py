"""Steering a text LM through SAE features: reproducibility, KV-cache exactness, scopes, labels, errors."""

import json

import pytest
import torch

from ttslens.sae.base import SAEConfig, make_sae
from ttslens.sae.files import save_sae
from ttslens.sae.hooks import layer_output, residual_layers
from ttslens.sae.lm.steer import TextSteerer
from ttslens.sae.steering import FeatureEdit, LayerSteer
from ttslens.sae.training import TrainConfig, train

PROMPT = "the cat sees"
LABELS = [
    {"feature": 3, "label": "the word cat", "scores": {"detection_auroc": 0.71}, "mean_act": 0.8},
    {"feature": 7, "label": "cat and dog nouns", "scores": {"detection_auroc": 0.93}, "mean_act": 0.5},
    {"feature": 9, "label": "unclear cat stuff", "scores": {"detection_auroc": 0.99}, "mean_act": 2.0},
    {"feature": 11, "label": "dog", "scores": {"detection_auroc": 0.95}, "mean_act": 1.5},
]


def _random_sae_dir(path, model: str, layer: int, d: int = 48, F: int = 64, labels: list | None = None):
    torch.manual_seed(0)
    sae = make_sae(SAEConfig(arch="topk", d_in=d, d_sae=F, k=4)).eval()
    save_sae(sae, path, {"model_name": model, "layer": layer})
    if labels:
        (path / "labels").mkdir()
        (path / "labels" / "labels.jsonl").write_text("\n".join(json.dumps(r) for r in labels) + "\n")
    return path


@pytest.fixture(scope="module")
def model_dir(tiny_lm):
    return str(tiny_lm / "model")


@pytest.fixture(scope="module")
def ts(model_dir, tmp_path_factory):
    """A random (untrained) SAE at layer 0, with a small labels.jsonl."""
    d = _random_sae_dir(tmp_path_factory.mktemp("rand") / "sae", model_dir, 0, labels=LABELS)
    return TextSteerer.load(model_dir, str(d))


@pytest.fixture(scope="module")
def trained(tiny_lm, model_dir, tmp_path_factory):
    """An SAE trained briefly on layer 1 of the tiny LM (records its model, layer, dataset, scale)."""
    out = tmp_path_factory.mktemp("trained") / "sae"
    cfg = TrainConfig(
        sae=SAEConfig(d_sae=96, k=6),
        model=model_dir,
        dataset=str(tiny_lm / "corpus.txt"),
        layer=1,
        context=32,
        tokens=24 * 256,
        batch_size=256,
        buffer_tokens=2048,
        lr=2e-3,
        eval_tokens=512,
        out=str(out),
    )
    train(cfg, progress=False)
    return TextSteerer.load(model_dir, str(out))


def _capture_logits(model):
    """Last-row logits of every forward through the LM head, in call order."""
    rows = []
    handle = model.get_output_embeddings().register_forward_hook(lambda _m, _i, out: rows.append(out[0, -1]))
    return rows, handle


def test_zero_strength_and_seed_reproduce_the_default(ts):
    default = ts.generate(PROMPT, seed=3, max_new_tokens=20)
    assert len(default.tokens) > 0 and not default.steered.any()
    assert torch.equal(ts.generate(PROMPT, seed=3, max_new_tokens=20).tokens, default.tokens)
    for zero in ({"5": 0.0}, "5:direction=0", ["cat=0"]):
        g = ts.generate(PROMPT, zero, seed=3, max_new_tokens=20)
        assert torch.equal(g.tokens, default.tokens) and g.text == default.text
        assert g.steered[: len(g.sequence) - 1].all()  # scope "all": every position run through the model
    assert not torch.equal(ts.generate(PROMPT, seed=4, max_new_tokens=20).tokens, default.tokens)


def test_strong_add_changes_the_output(ts):
    default, steered = ts.compare(PROMPT, {"5": 60}, seed=0, temperature=0, max_new_tokens=12)
    assert default != steered
    assert ts.compare(PROMPT, {"5": 60}, seed=0, temperature=0, max_new_tokens=12) == (default, steered)


@pytest.mark.parametrize("scope", ["all", "generated"])
def test_cached_steered_logits_equal_one_full_forward(trained, scope):
    """The KV-cache loop's logits equal a single uncached pass over the whole sequence with the edit
    applied (by an independent hook here) at the in-scope positions."""
    steer = ["1:clamp=4", "2=3", "0:ablate"]
    rows, handle = _capture_logits(trained.model)
    try:
        g = trained.generate(PROMPT, steer, seed=1, max_new_tokens=12, scope=scope)
    finally:
        handle.remove()
    cached_TV = torch.stack(rows)
    assert len(g.tokens) >= 3 and len(rows) == len(g.tokens) + int(g.stopped)

    P, s = len(trained.encode(PROMPT)), trained.saes[0]
    edit = LayerSteer(s.sae, [e.edit for e in g.edits], typical_norm=trained.typical_norm(s))
    first = 0 if scope == "all" else P

    def hook(_m, _i, out):
        h = (out[0] if isinstance(out, tuple) else out).clone()
        h[0, first:] = edit(h[0, first:])
        return (h, *out[1:]) if isinstance(out, tuple) else h

    handle = residual_layers(trained.model)[s.layer].register_forward_hook(hook)
    try:
        with torch.no_grad():
            full_NV = trained.model(input_ids=g.sequence[None]).logits[0]
    finally:
        handle.remove()
    torch.testing.assert_close(cached_TV, full_NV[P - 1 : P - 1 + len(rows)], atol=1e-4, rtol=1e-4)
    with torch.no_grad():
        plain_NV = trained.model(input_ids=g.sequence[None]).logits[0]
    assert (plain_NV[P:] - full_NV[P:]).abs().max() > 1e-2  # the edit did act


def test_scope_generated_leaves_prompt_states_untouched(ts):
    """SAE at layer 0: the input of layer 1 is the (edited) stream; in scope "generated" the prefill's
    prompt rows match the default run exactly, later rows differ."""
    layer1 = residual_layers(ts.model)[1]
    P = len(ts.encode(PROMPT))

    def run(steer, scope):
        chunks = []
        handle = layer1.register_forward_pre_hook(lambda _m, args: chunks.append(args[0][0].clone()))
        try:
            g = ts.generate(PROMPT, steer, seed=2, max_new_tokens=8, scope=scope)
        finally:
            handle.remove()
        return g, chunks

    default, h0 = run(None, "all")
    gen, h_gen = run({"5": 60}, "generated")
    every, h_all = run({"5": 60}, "all")
    assert torch.equal(h_gen[0], h0[0]) and h_gen[0].shape[0] == P  # prefill = the prompt rows
    assert not torch.allclose(h_all[0], h0[0])
    assert gen.tokens[0] == default.tokens[0]  # drawn from unsteered prompt logits
    assert not torch.allclose(h_gen[1], h0[1])  # the first generated position is edited
    assert not gen.steered[:P].any() and gen.steered[P : len(gen.sequence) - 1].all()
    prompt_only = ts.generate(PROMPT, {"5": 60}, seed=2, max_new_tokens=8, scope="prompt")
    assert prompt_only.steered[:P].all() and not prompt_only.steered[P:].any()


def test_label_search_picks_the_best_auroc_match(ts):
    (e,) = ts.resolve("cat=2")  # 7 (0.93) beats 3 (0.71); the "unclear" 9 is never chosen
    assert (e.edit.feature, e.edit.mean_act, e.label) == (7, 0.5, "cat and dog nouns")
    assert ts.resolve({"dog": -1})[0].edit.feature == 11
    assert ts.resolve("the word cat:clamp=5")[0].edit == FeatureEdit(3, "clamp", 5.0, 1.0, "unit")
    assert ts.resolve("40=2")[0].edit.mean_act == 1.0  # unlabelled, no local dataset: Z = 1
    choices = ts.choices()
    assert choices[:3] == [
        ("11 · dog (AUROC 0.95)", "11"),
        ("7 · cat and dog nouns (AUROC 0.93)", "7"),
        ("3 · the word cat (AUROC 0.71)", "3"),
    ]
    assert len(choices) == 64 and ("9", "9") in choices and ("0", "0") == choices[3]


def test_trained_sae_calibrates_mean_activation(trained, tiny_lm):
    """Unlabelled `add`: Z is the feature's mean activation when active over the first corpus documents
    (computed here one unpadded document at a time)."""
    s = trained.saes[0]
    docs = (tiny_lm / "corpus.txt").read_text().splitlines()[:32]
    with torch.no_grad():
        h_ND = torch.cat([layer_output(trained.model, 1, **trained.tok(t, return_tensors="pt"))[0] for t in docs])
        z_NF = s.sae.encode(h_ND)
    f = int((z_NF > 0).sum(0).argmax())
    expected = float(z_NF[:, f][z_NF[:, f] > 0].mean())
    (e,) = trained.resolve({str(f): 3})
    assert e.edit.mean_act == pytest.approx(expected, rel=1e-4) and expected != 1.0
    default, steered = trained.compare(PROMPT, {str(f): 8}, temperature=0, max_new_tokens=10)
    assert default != steered


@pytest.mark.parametrize(
    "prompt, steer, kw, match",
    [
        ("", None, {}, "empty prompt"),
        ("   ", None, {}, "empty prompt"),
        (PROMPT, "64=1", {}, r"feature 64 out of range: the SAE at layer 0 has 0..63"),
        (PROMPT, "zebra=1", {}, "unknown steering target 'zebra'"),
        (PROMPT, "laughter=40", {}, "TTS-only"),
        (PROMPT, "3/5=1", {}, "no SAE loaded for layer 3"),
        (PROMPT, "5=1e999", {}, "must be finite"),
        (PROMPT, None, {"scope": "speech"}, "unknown steering scope"),
    ],
)
def test_bad_generation_input(ts, prompt, steer, kw, match):
    with pytest.raises(ValueError, match=match) as err:
        ts.generate(prompt, steer, **kw)
    assert "\n" not in str(err.value)


def test_load_checks_width_layer_and_duplicates(model_dir, tmp_path):
    wide = _random_sae_dir(tmp_path / "wide", model_dir, 0, d=32)
    deep = _random_sae_dir(tmp_path / "deep", model_dir, 5)
    a, b = _random_sae_dir(tmp_path / "a", model_dir, 1), _random_sae_dir(tmp_path / "b", model_dir, 1)
    for sae, match in [
        (str(wide), "width 32 but .* has width 48: .*use an SAE trained on this one"),
        (str(deep), "layer 5 but .* has layers 0..1"),
        ([str(a), str(b)], "two SAEs for the same layer"),
    ]:
        with pytest.raises(ValueError, match=match) as err:
            TextSteerer.load(model_dir, sae)
        assert "\n" not in str(err.value)
    two = TextSteerer.load(model_dir, [str(_random_sae_dir(tmp_path / "z", model_dir, 0)), str(a)])
    assert two.resolve("1/5=2")[0].layer == 1 and two.choices()[0] == ("0/0", "0/0")

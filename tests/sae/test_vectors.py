"""Trained steering vectors (`ttslens.sae.vectors`, `ttslens vectors ...`) on a tiny text LM built here: weights stay
bit-identical, zeros are a no-op, likelihood training lowers the target NLL, RL raises a reward and the rewarded
token's probability, the logit lens is the hand computation, files round-trip, a resumed run repeats the
uninterrupted one; bad input gets one line."""

import json

import pytest
import torch

from ttslens.app.cli import main as cli
from ttslens.sae.hooks import Hooks
from ttslens.sae.lm.harvest import load_model
from ttslens.sae.vectors import train as vtrain
from ttslens.sae.vectors.lm import TextPolicy
from ttslens.sae.vectors.readout import logit_lens
from ttslens.sae.vectors.train import Item, VectorConfig, group_advantages, train_vectors
from ttslens.sae.vectors.vectors import SteeringVectors, load_vectors, save_vectors

PROMPTS = ["the cat", "a dog", "my friend", "the teacher", "she"]


@pytest.fixture(scope="module")
def policy(tiny_lm):
    model, tok = load_model(str(tiny_lm / "model"))
    return TextPolicy(model, tok)


def _cfg(tmp_path, **kw):
    base = dict(layers=[0], steps=6, prompts_per_step=3, samples=6, max_new_tokens=8, eval_samples=0,
                checkpoint_every=3, out=str(tmp_path / "v"))  # fmt: skip
    return VectorConfig(**(base | kw))


def test_zero_vector_is_a_no_op_and_edits_are_differentiable(policy):
    vec = SteeringVectors(policy.d, [0, 1])
    comps = policy.sample("the cat", 3, [1, 2, 3], [], max_new_tokens=6)
    again = policy.sample("the cat", 3, [1, 2, 3], policy.edits(vec, "all"), max_new_tokens=6)
    assert [c.ids.tolist() for c in comps] == [c.ids.tolist() for c in again]
    lp0, m0 = policy.token_logprobs(comps, [])
    lp1, m1 = policy.token_logprobs(comps, policy.edits(vec, "generated"))
    assert torch.equal(m0, m1)
    torch.testing.assert_close(lp0, lp1, rtol=0, atol=1e-6)
    lp1[m1].sum().backward()
    assert vec.vector(0).grad is not None and float(vec.vector(0).grad.abs().sum()) > 0


def test_group_advantages_grpo_and_rloo_by_hand():
    r = torch.tensor([[1.0, 0.0, 0.0, 3.0], [2.0, 2.0, 5.0, 0.0]])
    valid = torch.tensor([[True, True, True, True], [True, True, False, False]])
    grpo = group_advantages(r, valid, "grpo")
    torch.testing.assert_close(grpo, torch.tensor([[0.0, -1.0, -1.0, 2.0], [0.0, 0.0, 0.0, 0.0]]))
    rloo = group_advantages(r, valid, "rloo")  # r_i - mean of the other valid ones
    torch.testing.assert_close(rloo, torch.tensor([[0.0, -4 / 3, -4 / 3, 8 / 3], [0.0, 0.0, 0.0, 0.0]]))
    one = group_advantages(torch.tensor([[1.0, 0.0]]), torch.tensor([[True, False]]), "grpo")
    assert float(one.abs().sum()) == 0  # a group with one valid sample teaches nothing


def test_likelihood_lowers_target_nll_weights_untouched_and_file_round_trips(policy, tiny_lm, tmp_path):
    prompts = tmp_path / "pairs.jsonl"
    rows = [{"prompt": p, "target": "finds a green hat ."} for p in PROMPTS]
    prompts.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    before = {k: v.clone() for k, v in policy.model.state_dict().items()}
    cfg = _cfg(tmp_path, objective="likelihood", prompts=str(prompts), steps=20, layers=[0, 1])
    s = train_vectors(cfg, policy, vtrain.load_prompts(str(prompts)), progress=False)
    for k, v in policy.model.state_dict().items():
        assert torch.equal(before[k], v), k  # every base weight bit-identical
    nll = s["eval"]["target_nll"]
    assert nll["vectors"] < nll["base"] - 0.3, nll
    vec, meta = load_vectors(tmp_path / "v")
    assert vec.layers == [0, 1] and meta["objective"] == "likelihood" and meta["steps"] == 20
    from safetensors import safe_open

    with safe_open(str(tmp_path / "v" / "vectors.safetensors"), "pt") as f:
        assert sorted(f.keys()) == ["layer.0", "layer.1"] and f.get_tensor("layer.0").shape == (policy.d,)
    save_vectors(vec, tmp_path / "copy", meta)
    again, _ = load_vectors(tmp_path / "copy")
    assert torch.equal(again.vector(1), vec.vector(1))


def test_rl_raises_the_reward_and_the_rewarded_tokens_probability(policy, tmp_path):
    hat = policy.tok.convert_tokens_to_ids("hat")
    items = [Item(p) for p in PROMPTS]

    def p_hat(vec):
        comps = policy.sample("the cat", 16, list(range(16)), [], max_new_tokens=8)
        edits = [] if vec is None else policy.edits(vec, "all")
        with torch.no_grad(), Hooks(policy.layers(), edits=edits) as hooks:
            ids = torch.stack([torch.cat([c.prompt_ids, c.ids[:3]]) for c in comps if len(c.ids) >= 3])
            hooks.context = torch.ones(ids.shape, dtype=torch.bool)
            probs = policy.model(input_ids=ids).logits.softmax(-1)[..., hat]
        return float(probs.mean())

    cfg = _cfg(tmp_path, reward=r"regex:\bhat\b", layers=[1], steps=25, prompts_per_step=4, samples=8)
    cfg.max_new_tokens, cfg.eval_samples, cfg.kl = 12, 8, 0.0
    s = train_vectors(cfg, policy, items, progress=False)
    vec, _ = load_vectors(tmp_path / "v")
    ev = s["eval"]
    assert ev["vectors"]["reward"] > ev["base"]["reward"] + 0.3, ev
    assert p_hat(vec) > 2 * p_hat(None)
    log = [json.loads(x) for x in (tmp_path / "v" / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == list(range(1, 26)) and all("reward" in r for r in log)


def test_resume_repeats_the_uninterrupted_run(policy, tmp_path, monkeypatch):
    items = [Item(p) for p in PROMPTS]
    ref = train_vectors(_cfg(tmp_path / "ref", reward=r"regex:\bhat\b", epochs=2), policy, items, progress=False)
    real, calls = vtrain.atomic_torch_save, []

    def save_then_die(path, state):
        real(path, state)
        calls.append(state["step"])

    def die_at_step_6(*a, **k):  # killed after step 5 was logged, two steps past the checkpoint at step 3
        log = tmp_path / "run" / "v" / "train_log.jsonl"
        if log.exists() and len(log.read_text().splitlines()) == 5:
            raise KeyboardInterrupt
        return real_score(*a, **k)

    real_score = vtrain._score
    monkeypatch.setattr(vtrain, "_score", die_at_step_6)
    monkeypatch.setattr(vtrain, "atomic_torch_save", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        train_vectors(_cfg(tmp_path / "run", reward=r"regex:\bhat\b", epochs=2), policy, items, progress=False)
    monkeypatch.setattr(vtrain, "atomic_torch_save", real)
    monkeypatch.setattr(vtrain, "_score", real_score)
    assert calls == [3]
    cfg = _cfg(tmp_path / "run", reward=r"regex:\bhat\b", epochs=2, resume=True)
    train_vectors(cfg, policy, items, progress=False)
    a, _ = load_vectors(ref["out"])
    b, _ = load_vectors(tmp_path / "run" / "v")
    assert torch.equal(a.vector(0), b.vector(0))
    steps = [json.loads(x)["step"] for x in (tmp_path / "run" / "v" / "train_log.jsonl").read_text().splitlines()]
    assert steps == list(range(1, 7))


def test_logit_lens_is_the_hand_computation(policy):
    g = torch.Generator().manual_seed(0)
    u = torch.randn(policy.d, generator=g)
    norm, W_U, names = policy.lens()
    got = logit_lens(u, norm, W_U, names, k=5)
    w, eps = norm.weight.detach(), norm.variance_epsilon
    hand = (w * u / torch.sqrt(u.pow(2).mean() + eps)) @ W_U.detach().T
    top = hand.topk(5)
    assert [r["id"] for r in got["boosted"]] == top.indices.tolist()
    assert [r["logit"] for r in got["boosted"]] == pytest.approx(top.values.tolist(), abs=1e-3)
    assert got["suppressed"][0]["id"] == int(hand.argmin())
    assert got["boosted"][0]["token"] == policy.tok.decode([top.indices[0]])


def test_rewards_that_fail_are_skipped_and_counted(policy, tmp_path):
    mod = tmp_path / "my_rewards.py"
    mod.write_text(
        "import math\n"
        "def flaky(prompt, completion, **_):\n"
        "    if 'cat' in prompt:\n        raise RuntimeError('boom')\n"
        "    if 'dog' in prompt:\n        return math.nan\n"
        "    if 'friend' in prompt:\n        return [1, 2]\n"
        "    return float(len(completion) % 3)\n"
    )
    s = train_vectors(_cfg(tmp_path, reward=f"{mod}:flaky", steps=4), policy, [Item(p) for p in PROMPTS], False)
    assert s["reward_failures"] > 0
    log = [json.loads(x) for x in (tmp_path / "v" / "train_log.jsonl").read_text().splitlines()]
    assert len(log) == 4 and sum(r["skipped"] for r in log) == s["reward_failures"]


def test_vectors_cli_train_readout_apply(tiny_lm, tmp_path, capsys):
    prompts = tmp_path / "p.txt"
    prompts.write_text("\n".join(PROMPTS) + "\n")
    model, out = str(tiny_lm / "model"), str(tmp_path / "cli")
    args = ["vectors", "train", "--model", model, "--prompts", str(prompts), "--reward", r"regex:\bhat\b"]
    args += ["--layers", "1", "--steps", "3", "--samples", "4", "--max-new-tokens", "6", "--eval-samples", "2"]
    assert cli([*args, "--out", out]) == 0
    assert cli([*args, "--out", out]) == 2  # a finished run is not overwritten
    assert "--resume" in capsys.readouterr().err
    assert cli(["vectors", "readout", "--vectors", out, "--top", "3"]) == 0
    rep = json.loads((tmp_path / "cli" / "readout.json").read_text())
    assert len(rep["directions"]["layer.1"]["logit_lens"]["boosted"]) == 3
    capsys.readouterr()
    assert cli(["vectors", "apply", "--vectors", out, "--prompt", "the cat", "--strength", "0"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["outputs"][0]["base"] == res["outputs"][0]["steered"]  # strength 0 is the model itself
    # the text-steering API takes the vectors like any other edit
    from ttslens.sae.lm.steer import TextSteerer

    lm, tok = load_model(model)
    ts = TextSteerer(lm, tok)
    plain = ts.generate("the cat", seed=3, max_new_tokens=6)
    off = ts.generate("the cat", seed=3, max_new_tokens=6, vectors=f"{out}=0")
    on = ts.generate("the cat", seed=3, max_new_tokens=6, vectors=[(out, 1.0)])
    assert off.text == plain.text and not plain.steered.any()
    read = len(on.sequence) - (0 if on.stopped else 1)  # an unfed last token was never read
    assert on.steered[:read].all()  # trained at every position (the default scope)


def test_vectors_bad_input_in_one_line(tiny_lm, tmp_path, capsys):
    model = str(tiny_lm / "model")
    prompts = tmp_path / "p.txt"
    prompts.write_text("the cat\n")
    (tmp_path / "empty.txt").write_text("\n\n")
    common = ["vectors", "train", "--model", model, "--steps", "1", "--samples", "2", "--out", str(tmp_path / "o")]
    cases = [
        (["--prompts", str(prompts), "--reward", "regex:x", "--layers", "9"], "layer 9 out of range"),
        (["--prompts", str(tmp_path / "empty.txt"), "--reward", "regex:x"], "holds no prompts"),
        (["--prompts", str(prompts), "--reward", "no_such_module:fn"], "cannot import no_such_module"),
        (["--prompts", str(prompts), "--reward", "loudness"], "unknown reward 'loudness'"),
        (["--prompts", str(prompts)], "give a reward"),
        (["--prompts", str(prompts), "--objective", "likelihood"], "needs a `target`"),
    ]
    for extra, message in cases:
        assert cli([*common, *extra]) == 2, extra
        err = capsys.readouterr().err.strip().splitlines()
        assert message in err[-1], (extra, err)
    wide = SteeringVectors(7, [0])
    save_vectors(wide, tmp_path / "wide", {"model": "elsewhere"})
    assert cli(["vectors", "apply", "--vectors", str(tmp_path / "wide"), "--model", model, "--prompt", "a"]) == 2
    assert "7-wide (trained on elsewhere)" in capsys.readouterr().err
    assert cli(["vectors", "readout", "--vectors", str(tmp_path / "nothing"), "--model", model]) == 2
    assert "no steering vectors" in capsys.readouterr().err


def test_path_patching_attention_and_first_token(policy):
    from ttslens.sae.vectors.analysis import attention_change, first_token, path_patching

    comps = policy.sample("the cat", 4, [1, 2, 3, 4], [], max_new_tokens=6)
    zero = SteeringVectors(policy.d, [0])
    p = path_patching(policy, zero, "all", comps)
    assert p["total"] == 0 and all(v == 0 for k, v in p["layers"][0].items() if k != "shares")
    assert all(x == 0 for xs in attention_change(policy, zero, "all", comps).values() for x in xs)
    last = policy.n_layers - 1
    vec = SteeringVectors(policy.d, [last])
    with torch.no_grad():
        vec.vector(last).normal_(generator=torch.Generator().manual_seed(0))
    p = path_patching(policy, vec, "all", comps)
    rec = p["layers"][last]
    assert set(rec) == {"direct", "vector_alone", "shares"}  # nothing after the last layer reads it but the norm
    assert rec["direct"] == pytest.approx(p["total"], abs=1e-5) and p["total"] != 0
    early = SteeringVectors(policy.d, [0])
    with torch.no_grad():
        early.vector(0).normal_(generator=torch.Generator().manual_seed(1)).mul_(3)
    rec = path_patching(policy, early, "all", comps)["layers"][0]
    assert {"direct", "attn", "mlp"} <= set(rec) and all(rec[k] != 0 for k in ("direct", "attn", "mlp"))
    change = attention_change(policy, early, "all", comps)
    assert set(change) == set(range(1, policy.n_layers)) and max(max(v) for v in change.values()) > 0
    ft = first_token(policy, early, "all", ["the cat", "a dog"])
    assert ft["kl"] > 0 and len(ft["gained"]) == 5
    assert first_token(policy, early, "generated", ["the cat"])["kl"] == pytest.approx(0, abs=1e-9)


def test_readout_sae_view_and_feature_direction(policy, tiny_lm, tmp_path, capsys):
    from ttslens.sae.base import SAEConfig, make_sae
    from ttslens.sae.files import save_sae

    sae = make_sae(SAEConfig(arch="topk", d_in=policy.d, d_sae=32, k=4))
    sae_dir = save_sae(sae, tmp_path / "sae", {"layer": 1, "hook_name": "layers.1"})
    (sae_dir / "labels").mkdir()
    (sae_dir / "labels" / "labels.jsonl").write_text(json.dumps({"feature": 7, "label": "the word hat"}) + "\n")
    vec = SteeringVectors(policy.d, [1])
    with torch.no_grad():
        vec.vector(1).copy_(2 * sae.W_dec[7])
    save_vectors(vec, tmp_path / "v", {"model": str(tiny_lm / "model"), "scope": "all"})
    assert cli(["vectors", "readout", "--vectors", str(tmp_path / "v"), "--sae", str(sae_dir), "--top", "3"]) == 0
    top = json.loads((tmp_path / "v" / "readout.json").read_text())["directions"]["layer.1"]["sae"]["features"][0]
    assert top["feature"] == 7 and top["cosine"] == pytest.approx(1, abs=1e-4)
    assert top["projection"] == pytest.approx(2, abs=1e-3) and top["label"] == "the word hat"
    capsys.readouterr()
    args = ["vectors", "readout", "--model", str(tiny_lm / "model"), "--sae", str(sae_dir), "--feature", "1/7"]
    assert cli([*args, "--out", str(tmp_path / "f.json")]) == 0
    rep = json.loads((tmp_path / "f.json").read_text())
    lens = rep["directions"]["1/7"]["logit_lens"]
    norm, W_U, names = policy.lens()
    assert lens == logit_lens(sae.W_dec[7], norm, W_U, names, 10) and rep["feature_label"] == "the word hat"
    assert cli([*args[:-1], "1/99"]) == 2 and "out of range" in capsys.readouterr().err


def test_adaptive_scaling_trains_saves_and_starts_as_a_no_op(policy, tmp_path):
    vec = SteeringVectors(policy.d, [1], adaptive=True)
    rows = torch.randn(5, policy.d)
    assert torch.equal(vec.scale(1, rows), torch.ones(5, 1))  # 2·sigmoid(0) = 1 at initialisation
    items = [Item(p, "finds a green hat .") for p in PROMPTS]
    s = train_vectors(_cfg(tmp_path, objective="likelihood", layers=[1], steps=10, adaptive=True), policy, items, False)
    assert s["eval"]["target_nll"]["vectors"] < s["eval"]["target_nll"]["base"]
    loaded, meta = load_vectors(tmp_path / "v")
    assert loaded.adaptive and meta["adaptive"] is True
    assert float(loaded.scale_w["1"].abs().sum()) > 0  # the per-position scale was learned
    scale = loaded.scale(1, rows)
    assert scale.shape == (5, 1) and bool(((scale > 0) & (scale < 2)).all())

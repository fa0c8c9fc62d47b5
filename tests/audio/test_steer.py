"""Controlled synthesis on the shipped demo backbone: scopes, the KV cache, presets, the API, the CLI,
steer-eval, and bad input."""

import json

import numpy as np
import pytest
import torch

from ttslens.app.cli import main as cli
from ttslens.audio.backbones.base import Intervention, Positions
from ttslens.audio.steering.api import SteerableTTS
from ttslens.audio.steering.presets import FILE, preset_edits, read_presets
from ttslens.sae.activations import SPEECH, TEXT
from ttslens.sae.notes import collect
from ttslens.sae.steering import ALPHA_LIMIT, STRENGTHS, FeatureEdit, LayerSteer

TEXT_ = "we will meet at the station after lunch."


@pytest.fixture(scope="module")
def tts(steer_sae):
    return SteerableTTS.load("demo", steer_sae)


def test_speech_scope_leaves_the_text_prefix_untouched(tts):
    plain = tts.bb.generate(TEXT_, seed=1, record=[3, 5], max_tokens=40)
    iv = tts.interventions(tts.resolve({"laughter": 3}))
    steered = tts.bb.generate(TEXT_, seed=1, record=[3, 5], max_tokens=40, interventions=iv)
    prefix = len(tts.bb.sequence(TEXT_))
    for layer in (3, 5):
        assert torch.equal(steered.hidden[layer][:prefix], plain.hidden[layer][:prefix])
    assert torch.equal(steered.tokens[0], plain.tokens[0])  # predicted from the (unsteered) last prefix position
    assert not torch.equal(steered.tokens, plain.tokens)


def test_text_scope_edits_only_text_positions():
    mod = torch.tensor([2, 0, 0, 0, 2, 1, 1], dtype=torch.int8)
    prompt = torch.tensor([0, 0, 0, 0, 0, 1, 0], dtype=torch.bool)
    ctx = Positions(mod, prompt, torch.full(mod.shape, float("nan")))
    iv = lambda scope, **kw: Intervention(0, lambda h: h, scope, **kw).mask(ctx).tolist()  # noqa: E731
    assert iv("text") == [False, True, True, True, False, False, False]
    assert iv("speech") == [False] * 6 + [True]
    assert iv("speech", include_prompt=True) == [False] * 5 + [True, True]
    assert iv("generated", include_prompt=True) == [False] * 6 + [True]
    assert iv("all") == [True] * 5 + [False, True] and iv("all", include_prompt=True) == [True] * 7


def test_steered_generation_under_the_kv_cache_matches_one_full_pass(tts, steer_sae):
    """Step by step (each step one new position through the hooks) = teacher forcing with the same edits."""
    ivs = tts.interventions(tts.resolve({"gender": -2, "7:clamp": 3.0}))
    g = tts.bb.generate(TEXT_, seed=2, record=[3, 5], max_tokens=50, interventions=ivs)
    tf = tts.bb.teacher_forced(TEXT_, g.tokens, layers=[3, 5], interventions=ivs)
    for layer in (3, 5):
        torch.testing.assert_close(g.hidden[layer], tf.hidden[layer][: len(g.sequence)], atol=2e-4, rtol=1e-4)
    clean = tts.bb.teacher_forced(TEXT_, g.tokens, layers=[5])
    assert (clean.hidden[5] - tf.hidden[5]).abs().max() > 1e-2  # the edits did something


def test_api_is_reproducible_and_zero_strength_is_unsteered(tts):
    a = tts.synthesize(TEXT_, {"laughter": 2.5}, seed=4, record=True)
    b = tts.synthesize(TEXT_, "laughter=2.5", seed=4)
    assert torch.equal(a.tokens, b.tokens) and np.array_equal(a.wave, b.wave)
    zero = tts.synthesize(TEXT_, {"laughter": 0, "gender": 0.0}, seed=4)
    plain = tts.synthesize(TEXT_, seed=4)
    assert torch.equal(zero.tokens, plain.tokens) and np.array_equal(zero.wave, plain.wave)
    assert a.sample_rate == tts.bb.sample_rate and a.wave.dtype == np.float32 and len(a.wave) > 0
    speech = (a.sequence.modality == SPEECH) & ~a.sequence.prompt
    assert torch.equal(a.steered, speech) and not a.steered[a.sequence.modality == TEXT].any()
    (acts,) = a.activations.values()
    assert acts.shape == (len(a.sequence), 256) and (acts >= 0).all()
    batch = tts.synthesize_batch([TEXT_, "hello there."], {"laughter": 2.5}, seeds=[4, 5])
    assert torch.equal(batch[0].tokens, a.tokens) and len(batch) == 2


def test_presets_are_saved_with_the_sae_and_resolve(tts, steer_sae, tmp_path):
    saved = read_presets(steer_sae)
    assert saved["source"] == "probe" and saved["layer"] == 3 and len(saved["mean_act"]) == 256
    p = saved["presets"]
    assert p["laughter"]["plus"] and not p["laughter"]["minus"]
    for name in ("gender", "rate"):
        plus, minus = {f["feature"] for f in p[name]["plus"]}, {f["feature"] for f in p[name]["minus"]}
        assert plus and minus and not plus & minus
        assert all(f["coef"] > 0 for f in p[name]["plus"]) and all(f["coef"] < 0 for f in p[name]["minus"])
    # gender from this small SAE's latents: 0.67 on demo v2 (0.8+ on v1, whose tokens were pitch bins)
    assert p["laughter"]["probe_accuracy"] > 0.9 and p["gender"]["probe_accuracy"] > 0.6
    # + pushes plus; - pushes minus by |alpha|; a preset without a minus side pulls plus back
    g = p["gender"]
    assert [f for f, _, _ in preset_edits(g, -2)] == [f["feature"] for f in g["minus"]]
    assert all(a == 2 for _, a, _ in preset_edits(g, -2))
    assert all(a == -1 for _, a, _ in preset_edits(p["laughter"], -1))
    edits = tts.resolve({"laughter": 2})
    assert [e.edit.feature for e in edits] == [f["feature"] for f in p["laughter"]["plus"]]
    assert all(e.source == "preset laughter" and e.edit.mean_act > 0 for e in edits)
    # feature ids take Z from the labels; label searches find the best-scored match
    labels = tts.labels(tts.saes[0])
    f, rec = next((f, r) for f, r in labels.items() if not r["label"].lower().startswith("unclear"))
    (e,) = tts.resolve({str(f): 1.5})
    assert e.edit.mean_act == pytest.approx(rec["mean_act"]) and e.label == rec["label"]
    word = rec["label"].split()[0].lower()
    (e,) = tts.resolve({word: 1})
    assert word in e.label.lower()


def test_presets_from_labels_and_staleness(steer_sae, tmp_path):
    import shutil

    from ttslens.audio.steering.presets import label_presets

    sae = tmp_path / "sae"
    shutil.copytree(steer_sae, sae)
    labels = tmp_path / "labels.jsonl"
    recs = [
        {
            "feature": 1,
            "modality": "speech",
            "hypothesis": "speech:measure:laughter:+",
            "mean_act": 2.0,
            "scores": {"detection_auroc": 0.9},
        },
        {
            "feature": 2,
            "modality": "speech",
            "hypothesis": "speech:token:<s1>:+",
            "mean_act": 1.0,
            "alternatives": [["speech:measure:p_male:+", 0.8]],
        },
        {
            "feature": 3,
            "modality": "speech",
            "hypothesis": "speech:measure:p_male:-",
            "mean_act": 1.5,
            "selection_auroc": 0.8,
        },
        {
            "feature": 6,
            "modality": "speech",
            "hypothesis": "speech:measure:p_male:-",
            "mean_act": 1.5,
            "selection_auroc": 0.7,
            "confident": False,
        },
        {"feature": 4, "modality": "text", "hypothesis": "speech:measure:laughter:+", "mean_act": 1.5},
        {
            "feature": 5,
            "modality": "speech",
            "hypothesis": "speech:measure:syllable_rate:+",
            "mean_act": 1.0,
            "scores": {"detection_auroc": 0.8},
        },
    ]
    labels.write_text("\n".join(json.dumps(r) for r in recs))
    p = label_presets(labels, 3)
    assert [f["feature"] for f in p["laughter"]["plus"]] == [1]
    assert [f["feature"] for f in p["gender"]["plus"]] == [2] and [f["feature"] for f in p["gender"]["minus"]] == [3]
    assert cli(["presets", "--sae", str(sae), "--source", "labels", "--labels", str(labels), "--force"]) == 0
    assert read_presets(sae)["source"] == "labels"
    w = sae / "sae_weights.safetensors"
    w.write_bytes(w.read_bytes()[:-4] + b"\0\0\0\0")  # other weights: the saved presets are stale
    assert read_presets(sae) is None and (sae / FILE).exists()


def test_cli_synthesize_with_steering(steer_sae, tmp_path, capsys):
    out = tmp_path / "laugh.wav"
    args = ["synthesize", TEXT_, "--sae", str(steer_sae), "--steer", "laughter=3", "gender=-2", "--out", str(out)]
    assert cli(args) == 0
    res = json.loads(capsys.readouterr().out)
    assert out.stat().st_size > 1000 and res["steered_positions"] > 0
    assert {e["from"] for e in res["steered"]} == {"preset laughter", "preset gender"}
    # options first, the text last (what people type): the same synthesis
    first = tmp_path / "first.wav"
    assert (
        cli(["synthesize", "--sae", str(steer_sae), "--steer", "laughter=3", "gender=-2", TEXT_, "--out", str(first)])
        == 0
    )
    assert json.loads(capsys.readouterr().out)["steered"] == res["steered"]
    assert first.read_bytes() == out.read_bytes()


def test_cli_reports_the_clipped_strength_it_used(steer_sae, tmp_path, capsys):
    args = ["synthesize", "hello.", "--sae", str(steer_sae), "--steer", "laughter=-5000", "7=2", "--max-seconds", "1"]
    assert cli([*args, "--out", str(tmp_path / "c.wav")]) == 0
    cap = capsys.readouterr()
    assert cap.err.splitlines() == [
        f"ttslens synthesize: note: steering laughter: strength -5000 clipped to -1000 ({STRENGTHS})"
    ]
    edits = json.loads(cap.out)["steered"]
    laugh = [e for e in edits if e["from"] == "preset laughter"]
    assert laugh and all(e["alpha"] == -ALPHA_LIMIT and e["requested"] == -5000 for e in laugh)
    (f7,) = [e for e in edits if e["from"] == "feature 7"]
    assert f7["alpha"] == 2 and "requested" not in f7


@pytest.mark.parametrize(
    "args, msg",
    [
        (["--steer", "giggles=3"], "unknown steering target 'giggles'"),
        (["--steer", "9999=1"], "out of range"),
        (["--steer", "laughter:clamp=1"], "takes a strength only"),
        (["--scope", "nowhere", "--steer", "laughter=1"], "unknown steering scope"),
    ],
)
def test_cli_bad_steering_is_one_line(steer_sae, tmp_path, capsys, args, msg):
    assert cli(["synthesize", TEXT_, "--sae", str(steer_sae), "--out", str(tmp_path / "x.wav"), *args]) == 2
    err = capsys.readouterr().err.strip()
    assert msg in err and "\n" not in err and not (tmp_path / "x.wav").exists()


def test_bad_input(tts, steer_sae, small_assets, tmp_path, capsys):
    with pytest.raises(ValueError, match="empty text"):
        tts.synthesize("  ", {"laughter": 1})
    with collect() as notes:
        out = tts.synthesize("hello.", {"laughter": 1e9}, seed=0, max_seconds=2)
    assert np.isfinite(out.wave).all()
    assert notes == [f"steering laughter: strength 1e+09 clipped to 1000 ({STRENGTHS})"]
    assert all(e.edit.alpha == ALPHA_LIMIT and e.requested == 1e9 for e in out.edits)
    with pytest.raises(ValueError, match="width"):  # an SAE for another backbone
        SteerableTTS.load(str(small_assets), steer_sae)
    assert cli(["synthesize", "hello.", "--steer", "laughter=1", "--out", str(tmp_path / "y.wav")]) == 2
    assert "needs an SAE" in capsys.readouterr().err


def test_steer_eval_writes_curves_and_resumes(steer_sae, tmp_path, capsys):
    out = tmp_path / "eval"
    args = ["steer-eval", "--sae", str(steer_sae), "--attribute", "gender", "--alphas", "-2", "2", "--voices", "2"]
    args += ["--texts", "2", "--asr", "", "--out", str(out), "--no-progress"]
    assert cli(args) == 0
    res = json.loads(capsys.readouterr().out)
    assert [r["alpha"] for r in res["rows"]] == [-2.0, 0.0, 2.0] and all(r["n"] == 4 for r in res["rows"])
    zero = res["rows"][1]
    assert zero["content"] == pytest.approx(1.0) and zero["text_match"] == pytest.approx(1.0)
    assert all(0 <= r["mean"] <= 1 and r["ci_lo"] <= r["mean"] <= r["ci_hi"] for r in res["rows"])
    rows = {r["alpha"]: r for r in res["rows"]}  # like for like: the sweep's own steered vs unsteered rows
    assert res["ms_per_token"] == {
        "unsteered": rows[0.0]["ms_per_token"],
        "steered": rows[-2.0]["ms_per_token"],
        "alpha": -2.0,
    }
    assert res["time_ratio"] == pytest.approx(rows[-2.0]["ms_per_token"] / rows[0.0]["ms_per_token"], abs=1e-4)
    recs = [json.loads(r) for r in (out / "samples.jsonl").read_text().splitlines()]
    ms = (
        1000
        * sum(r["seconds"] for r in recs if r["alpha"] == 2.0)
        / sum(r["tokens"] + 1 for r in recs if r["alpha"] == 2.0)
    )
    assert rows[2.0]["ms_per_token"] == pytest.approx(ms, rel=1e-3)
    for f in ("dose_response.png", "dose_response.csv", "dose_response.json", "audio/alpha+2.wav"):
        assert (out / f).stat().st_size > 0
    n = len((out / "samples.jsonl").read_text().splitlines())
    assert n == 12 + 4  # alphas x texts x voices, + one same-voice re-sample per (text, voice): the baseline
    assert cli(args) == 0  # everything is there: nothing is synthesized again
    assert json.loads(capsys.readouterr().out)["rows"] == res["rows"]
    assert len((out / "samples.jsonl").read_text().splitlines()) == n
    assert cli([*args, "--seed", "5"]) == 2  # other settings into the same directory: refused
    assert "other settings" in capsys.readouterr().err


def test_layer_steer_applies_through_the_backbone_hooks(tts):
    """The Intervention the API builds is exactly LayerSteer on the scoped rows."""
    (s,) = tts.saes
    steer = LayerSteer(s.sae, [FeatureEdit(11, "add", 2.0, 1.0)])
    iv = Intervention(3, steer)
    g = tts.bb.generate(TEXT_, seed=3, max_tokens=10, record=[3])
    tf_plain = tts.bb.teacher_forced(TEXT_, g.tokens, layers=[3])
    tf = tts.bb.teacher_forced(TEXT_, g.tokens, layers=[3], interventions=[iv])
    speech = tf.sequence.modality == SPEECH
    torch.testing.assert_close(tf.hidden[3][speech], steer(tf_plain.hidden[3][speech]))
    assert torch.equal(tf.hidden[3][~speech], tf_plain.hidden[3][~speech])


def test_presets_auto_takes_labels_where_there_are_and_the_probe_for_the_rest(steer_sae, tmp_path, capsys):
    """Right after a partial `ttslens label` run: laughter is labelled, gender and rate are not."""
    import shutil

    sae = tmp_path / "sae"
    shutil.copytree(steer_sae, sae)
    laugh = {"modality": "speech", "hypothesis": "speech:measure:laughter:+", "mean_act": 2.0}
    (sae / "labels" / "labels.jsonl").write_text(
        json.dumps({"feature": 9, **laugh, "scores": {"detection_auroc": 0.9}})
    )
    args = ["presets", "--sae", str(sae), "--force", "--items", "120", "--no-progress"]
    assert cli(args) == 0
    cap = capsys.readouterr()
    res = json.loads(cap.out)
    assert res["sources"] == {"laughter": "labels", "gender": "probe", "rate": "probe"}
    assert (
        "ttslens presets: note: no feature in" in cap.err and "labelled as gender, rate: fitting the probe" in cap.err
    )
    assert res["source"] == "labels+probe" and res["presets"]["laughter"]["plus"] == [9]
    saved = read_presets(sae)
    assert saved["presets"]["gender"]["plus"] and saved["presets"]["gender"]["source"] == "probe"
    assert len(saved["mean_act"]) == 256  # the probe pass ran (for gender and rate)
    assert cli([*args, "--source", "labels"]) == 2  # labels only: say which attributes have none
    assert "labelled as gender, rate: use --source auto" in capsys.readouterr().err


def test_the_probe_is_l1_on_this_scikit_learn(steer_sae):
    """An L1 probe zeroes most coefficients: below scikit-learn 1.8 `l1_ratio` alone would fit L2."""
    from ttslens.audio.steering.presets import l1_logistic

    rng = np.random.default_rng(0)
    X = rng.normal(size=(600, 200))
    y = (X[:, 0] - X[:, 1] + 0.3 * rng.normal(size=600) > 0).astype(int)
    clf = l1_logistic(C=0.05, solver="liblinear", max_iter=500, class_weight="balanced").fit(X, y)
    coef = clf.coef_[0]
    assert (coef == 0).mean() > 0.9 and coef[0] > 0 > coef[1]
    probes = read_presets(steer_sae)["presets"].values()  # the saved probes: sparse too (L2 keeps every feature)
    assert all(0 < p["nonzero_coefs"] < p["features_seen"] for p in probes)
    assert sum(p["nonzero_coefs"] for p in probes) < 0.8 * sum(p["features_seen"] for p in probes)


def test_cli_window_steers_only_inside_it(steer_sae, tmp_path, capsys):
    base = ["synthesize", "we will meet at the station.", "--sae", str(steer_sae), "--seed", "2", "--asr", ""]
    assert cli([*base, "--steer", "laughter=2", "--window", "0.4", "0.8", "--out", str(tmp_path / "w.wav")]) == 0
    windowed = json.loads(capsys.readouterr().out)
    assert cli([*base, "--steer", "laughter=2", "--out", str(tmp_path / "a.wav")]) == 0
    whole = json.loads(capsys.readouterr().out)
    assert 0 < windowed["steered_positions"] < whole["steered_positions"]
    assert windowed["steered_positions"] <= round(0.4 * 25) + 1  # 25 speech frames per second on the demo
    assert cli([*base, "--steer", "laughter=2", "--window", "60", "61", "--out", str(tmp_path / "x.wav")]) == 0
    out = capsys.readouterr()
    assert "steered_positions" not in json.loads(out.out) or json.loads(out.out)["steered_positions"] == 0
    assert "note: nothing was steered: the window 60-61 s lies outside the" in out.err
    assert cli([*base, "--steer", "laughter=2", "--window", "1.0", "--out", str(tmp_path / "x.wav")]) == 2
    assert "two times" in capsys.readouterr().err
    assert cli([*base, "--steer", "laughter=2", "--window", "2", "1", "--out", str(tmp_path / "x.wav")]) == 2
    assert "window" in capsys.readouterr().err


def test_steer_eval_window_limits_the_edit(steer_sae, tmp_path, capsys):
    """steer-eval --window: a window past every utterance steers nothing (the steered sample equals the unsteered
    one); a window over the start steers (it differs)."""
    base = ["steer-eval", "--sae", str(steer_sae), "--attribute", "laughter", "--alphas", "4", "--voices", "1"]
    base += ["--texts", "1", "--asr", "", "--no-progress"]

    def samples(name: str, window: list[str]) -> dict:
        assert cli([*base, "--window", *window, "--out", str(tmp_path / name)]) == 0
        capsys.readouterr()
        recs = [json.loads(r) for r in (tmp_path / name / "samples.jsonl").read_text().splitlines()]
        return {r["alpha"]: (r["tokens"], r["text_match"], r["laughter"]) for r in recs if r["voice"] < 100_000}

    far, near = samples("far", ["60", "61"]), samples("near", ["0", "0.8"])
    assert far[4.0] == far[0.0] == near[0.0]
    assert near[4.0] != near[0.0]

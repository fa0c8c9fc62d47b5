"""Steering vectors on a TTS backbone (`ttslens.audio.vectors`, `ttslens vectors ... --backbone`), on the `--small`
demo build: speech log-probs are differentiable and unchanged by a zero vector, RL with an audio reward runs with
the weights frozen, readout names the speech head's rows, apply writes the steered and the unsteered speech."""

import json
import math

import pytest
import torch

from ttslens.app.cli import main as cli
from ttslens.audio.vectors import TTSPolicy
from ttslens.sae.vectors.train import Item, VectorConfig, train_vectors
from ttslens.sae.vectors.vectors import SteeringVectors, load_vectors


def test_speech_logprobs_zero_vector_and_gradient(small):
    pol = TTSPolicy(small)
    samples = pol.sample("the door is open.", 2, [1, 2], [])
    vec = SteeringVectors(pol.d, [1])
    lp0, m0 = pol.token_logprobs(samples, [])
    lp1, m1 = pol.token_logprobs(samples, pol.edits(vec, "generated"))
    assert torch.equal(m0, m1) and m0.sum() > 0
    torch.testing.assert_close(lp0.detach(), lp1.detach(), rtol=0, atol=1e-5)
    lp1[m1].sum().backward()
    assert float(vec.vector(1).grad.abs().sum()) > 0
    again = pol.sample("the door is open.", 2, [1, 2], pol.edits(vec, "generated"))
    assert [s.tokens.tolist() for s in again] == [s.tokens.tolist() for s in samples]
    full, _ = small.speech_logprobs(small.teacher_forced(samples[0].text, samples[0].tokens), samples[0].tokens)
    nll, _ = small.speech_nll(small.teacher_forced(samples[0].text, samples[0].tokens), samples[0].tokens)
    assert abs(-float(full.sum()) - nll) < 1e-3  # one computation behind both


def test_rl_with_an_audio_reward_keeps_weights_and_cli_reads_and_applies(small, small_assets, tmp_path, capsys):
    pol = TTSPolicy(small)
    before = {id(p): p.detach().clone() for p in pol.parameters()}
    items = [Item("the door is open."), Item("we walked home.")]
    cfg = VectorConfig(reward="slower", layers=[1], steps=2, prompts_per_step=2, samples=3, eval_samples=0,
                       out=str(tmp_path / "v"))  # fmt: skip
    s = train_vectors(cfg, pol, items, progress=False)
    assert all(torch.equal(before[id(p)], p) for p in pol.parameters())
    log = [json.loads(x) for x in (tmp_path / "v" / "train_log.jsonl").read_text().splitlines()]
    assert len(log) == 2 and all(r["reward"] is not None for r in log)
    vec, meta = load_vectors(tmp_path / "v")
    assert meta["reward"] == "slower" and meta["scope"] == "generated" and s["norms"][1] > 0
    from ttslens.sae.vectors.rewards import Reward

    sample = pol.sample(items[0], 1, [9])[0]
    p = min(max(sample.measures().laughter, 6e-6), 1 - 6e-6)
    got = Reward("laughter_logodds+2*slower").score(items[0].prompt, sample)
    assert got == pytest.approx(math.log(p / (1 - p)) + 2 * sample.measures().voiced_s)
    # the CLI finds the backbone in the vectors' metadata
    vdir = str(tmp_path / "v")
    assert cli(["vectors", "readout", "--vectors", vdir, "--backbone", str(small_assets), "--top", "2"]) == 0
    rep = json.loads((tmp_path / "v" / "readout.json").read_text())
    tokens = {r["token"] for r in rep["directions"]["layer.1"]["logit_lens"]["boosted"]}
    assert tokens <= {"stay on the phoneme", "next phoneme", "stop"}, tokens
    capsys.readouterr()
    wav = tmp_path / "out.wav"
    args = ["vectors", "apply", "--vectors", vdir, "--backbone", str(small_assets), "--prompt", "the door is open."]
    assert cli([*args, "--strength", "0", "--out", str(wav)]) == 0
    res = json.loads(capsys.readouterr().out)["outputs"][0]
    assert wav.exists() and (tmp_path / "out.base.wav").exists()
    assert res["base"]["seconds"] == res["steered"]["seconds"]  # strength 0: the same sample
    for key in ("voiced_s", "p_male", "laughter"):
        assert key in res["steered"]


def test_synthesize_and_the_tts_api_take_vectors(small, small_assets, tmp_path, capsys):
    from ttslens.audio.steering.api import SteerableTTS
    from ttslens.sae.vectors.vectors import save_vectors

    vec = SteeringVectors(small.d_model, [1])
    with torch.no_grad():
        vec.vector(1).normal_(generator=torch.Generator().manual_seed(0)).mul_(20)
    save_vectors(vec, tmp_path / "v", {"model": "small", "scope": "generated"})
    tts = SteerableTTS(small, [])
    plain = tts.synthesize("the door is open.", seed=2)
    off = tts.synthesize("the door is open.", seed=2, vectors=f"{tmp_path / 'v'}=0")
    on = tts.synthesize("the door is open.", seed=2, vectors=(str(tmp_path / "v"), 1.0))
    assert torch.equal(plain.tokens, off.tokens) and not torch.equal(plain.tokens, on.tokens)
    assert on.steered.any() and not on.steered[: len(on.sequence) - len(on.tokens)].any()
    wav = tmp_path / "s.wav"
    args = ["synthesize", "the door is open.", "--backbone", str(small_assets), "--asr", "", "--out", str(wav)]
    assert cli([*args, "--vectors", f"{tmp_path / 'v'}=1"]) == 0
    assert json.loads(capsys.readouterr().out)["steered_positions"] > 0
    wide = SteeringVectors(small.d_model + 1, [1])
    save_vectors(wide, tmp_path / "w", {"model": "other"})
    assert cli([*args, "--vectors", str(tmp_path / "w")]) == 2
    assert "-wide (trained on other)" in capsys.readouterr().err


def test_likelihood_on_target_speech_lowers_its_nll(small, tmp_path):
    """`--objective likelihood` on a TTS backbone: records give a text and the `audio` to say it like."""
    from ttslens.audio.commands import write_wav
    from ttslens.sae.vectors.train import load_prompts

    pol = TTSPolicy(small)
    rows = []
    for i, text in enumerate(["the door is open.", "we walked home."]):
        s = pol.sample(text, 1, [40 + i])[0]
        wav = write_wav(tmp_path / f"t{i}.wav", s.wave, s.sample_rate)
        rows.append({"text": text, "audio": str(wav)})
    (tmp_path / "targets.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    items = load_prompts(str(tmp_path / "targets.jsonl"))
    cfg = VectorConfig(objective="likelihood", layers=[1], steps=8, prompts_per_step=2, eval_prompts=2,
                       out=str(tmp_path / "v"))  # fmt: skip
    s = train_vectors(cfg, pol, items, progress=False)
    nll = s["eval"]["target_nll"]
    assert nll["vectors"] < nll["base"], nll


def test_path_patching_on_a_tts_backbone(small):
    from ttslens.sae.vectors.analysis import path_patching

    pol = TTSPolicy(small)
    samples = pol.sample("the door is open.", 2, [3, 4], [])
    last = small.n_layers - 1
    for layer in (0, last):
        vec = SteeringVectors(pol.d, [layer])
        with torch.no_grad():
            vec.vector(layer).normal_(generator=torch.Generator().manual_seed(layer)).mul_(2)
        p = path_patching(pol, vec, "generated", samples)
        rec = p["layers"][layer]
        assert rec["vector_alone"] == pytest.approx(p["total"], abs=1e-6) and p["total"] != 0
        if layer == last:  # only the final norm reads the last layer's output
            assert set(rec) == {"direct", "vector_alone", "shares"}
            assert rec["direct"] == pytest.approx(p["total"], abs=1e-4)
        else:
            assert {"direct", "attn", "mlp"} <= set(rec) and all(rec[k] != 0 for k in ("direct", "attn", "mlp"))

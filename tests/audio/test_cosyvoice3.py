"""CosyVoice3 on a tiny random model directory in the official layout (tests/audio/tiny_cosyvoice3.py), loaded
by the same loader real weights use."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

from tests.audio.tiny_cosyvoice3 import SPEECH_TOKENS, write_tiny_cosyvoice3
from tests.audio.tiny_hf_tts import write_pairs
from ttslens.audio import Intervention, load_backbone
from ttslens.audio.backbones.cosyvoice3.backbone import CosyVoice3Backbone, ras_sample
from ttslens.audio.backbones.cosyvoice3.speech_tokenizer import whisper_log_mel
from ttslens.audio.backbones.cosyvoice3.text import END_OF_PROMPT, SYSTEM, special_tokens
from ttslens.sae import notes
from ttslens.sae.activations import SPECIAL, SPEECH, TEXT
from ttslens.sae.errors import BadInput, EnvironmentProblem, MissingFile

TEXT_ = "hello there, this is a test."


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return write_tiny_cosyvoice3(tmp_path_factory.mktemp("cosyvoice3"))


@pytest.fixture(scope="module")
def bb(root):
    return load_backbone(f"cosyvoice3:{root}")


def test_the_registry_finds_it_by_name_and_by_directory(root, bb):
    assert isinstance(load_backbone(root), CosyVoice3Backbone)
    assert (bb.codebook_size, bb.n_layers, bb.frame_rate, bb.sample_rate) == (SPEECH_TOKENS, 3, 25.0, 24000)


def test_special_tokens_land_where_the_official_frontend_puts_them(bb, root):
    from transformers import AutoTokenizer

    base = AutoTokenizer.from_pretrained(str(root / "CosyVoice-BlankEN"))
    toks = special_tokens()
    assert len(toks) == len(set(toks)) == 280 and toks[:3] == ["<|im_start|>", "<|im_end|>", END_OF_PROMPT]
    assert len(bb.tok) - len(base) == 278  # <|im_start|> and <|im_end|> are Qwen2's own (151646 → 151924)
    assert bb.eop == len(base)  # as 151646 on the real tokenizer
    assert toks[toks.index("[AA]") : toks.index("[AA]") + 5] == ["[AA]", "[AA0]", "[AA1]", "[AA2]", "[AE]"]
    ids = bb.tok("a [laughter] b", add_special_tokens=False)["input_ids"]
    assert bb.tok.convert_tokens_to_ids("[laughter]") in ids  # an inline tag stays one token


def test_zero_shot_instruct_and_cross_lingual_sequences(bb):
    prompt_tokens = torch.tensor([3, 4, 5])
    seq = bb.sequence(TEXT_, prompt=("the cat sat", prompt_tokens))
    words = bb.token_text(seq.ids)
    assert words[0] == "<sos>" and seq.modality[0] == SPECIAL
    task = words.index("<task>")
    assert seq.modality[task] == SPECIAL and (seq.modality[task + 1 :] == SPEECH).all()
    assert seq.prompt[task + 1 :].all() and torch.equal(seq.ids[task + 1 :, 0] - bb.text_vocab, prompt_tokens)
    eop = words.index(END_OF_PROMPT)
    assert seq.modality[eop] == SPECIAL and seq.prompt[1 : eop + 1].all()
    body = (seq.modality == TEXT) & ~seq.prompt
    assert bb.tok.decode(seq.token_ids[body]) == TEXT_
    assert bb.tok.decode(seq.token_ids[1:eop]) == SYSTEM
    assert torch.allclose(seq.times[task + 1 :], torch.tensor([0.0, 0.04, 0.08]))
    # instruct: no prompt speech, the instruct marked, <|endofprompt|> added with a note
    with notes.collect() as got:
        ins = bb.sequence(TEXT_, instruct="Please speak fast.")
    assert any(END_OF_PROMPT in n for n in got)
    mask = bb.instruct_mask(ins)
    assert bb.tok.decode(ins.token_ids[mask]) == "Please speak fast." and not ins.prompt.any()
    assert not (ins.modality == SPEECH).any() and bb.body_length(ins) == bb.body_length(seq)
    # cross-lingual: the system line alone before the text
    cross = bb.sequence(TEXT_)
    assert len(cross) == len(seq) - 3 - len(bb.tok("the cat sat")["input_ids"])


def test_logits_equal_a_direct_qwen2_computation(bb, root):
    from transformers import Qwen2Config, Qwen2ForCausalLM

    state = torch.load(str(root / "llm.pt"), weights_only=True)
    model = Qwen2ForCausalLM(Qwen2Config.from_pretrained(str(root / "CosyVoice-BlankEN"))).eval()
    model.load_state_dict({k[len("llm.model.") :]: v for k, v in state.items() if k.startswith("llm.model.")})
    emb, dec = state["speech_embedding.weight"], state["llm_decoder.weight"]
    tokens = torch.tensor([1, 7, 7, 30, 2])
    prompt_ids = bb.tok(SYSTEM + END_OF_PROMPT + TEXT_, add_special_tokens=False)["input_ids"]
    S = SPEECH_TOKENS
    x = torch.cat([emb[S][None], model.model.embed_tokens.weight[prompt_ids], emb[S + 2][None], emb[tokens]])
    with torch.no_grad():
        h = model(inputs_embeds=x[None], output_hidden_states=True).hidden_states[-1][0]
    want = h @ dec.T
    tf = bb.teacher_forced(TEXT_, tokens, layers=[1])
    assert len(tf.sequence) == len(x)
    torch.testing.assert_close(tf.logits[:, :S], want[:, :S], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(tf.logits[:, S], want[:, S:].logsumexp(-1), atol=1e-4, rtol=1e-4)  # stops folded


def test_cached_generation_equals_teacher_forcing_and_steering_spares_the_prefix(bb):
    push = torch.randn(bb.d_model, generator=torch.Generator().manual_seed(0))
    iv = Intervention(layer=1, edit=lambda h: h + 3 * push)
    g = bb.generate(TEXT_, seed=3, interventions=[iv], record=[0, 2])
    tf = bb.teacher_forced(TEXT_, g.tokens, layers=[0, 2], interventions=[iv])
    for layer in (0, 2):
        torch.testing.assert_close(g.hidden[layer], tf.hidden[layer], atol=1e-4, rtol=1e-4)
    clean = bb.teacher_forced(TEXT_, g.tokens, layers=[2])
    speech = tf.sequence.modality == SPEECH
    assert torch.equal(clean.hidden[2][~speech], tf.hidden[2][~speech])
    assert (clean.hidden[2][speech] - tf.hidden[2][speech]).abs().max() > 1e-3
    batch = bb.generate([TEXT_, "the cat sat on the mat."], seed=[3, 4], interventions=[iv])
    assert torch.equal(batch[0].tokens, g.tokens)  # left-padded batching changes nothing


def test_length_rule_two_to_twenty_tokens_per_text_token(bb):
    seq = bb.sequence(TEXT_)
    n = bb.body_length(seq)
    assert n == len(bb.tok(TEXT_)["input_ids"]) and bb.max_new_tokens(seq) == 20 * n
    for seed in range(4):
        g = bb.generate(TEXT_, seed=seed)
        assert 2 * n <= len(g.tokens) <= 20 * n and g.tokens.max() < SPEECH_TOKENS


def test_ras_draws_from_the_nucleus_and_resamples_a_repeat():
    logits = torch.tensor([5.0, 4.0, 0.0, -1.0, -2.0])  # softmax: 0.72, 0.27, ...: nucleus 0.8 keeps ids 0, 1
    gen = torch.Generator().manual_seed(0)
    draws = {ras_sample(logits, [], gen) for _ in range(200)}
    assert draws == {0, 1}
    # id 0 already in the last 10 tokens (>= 10 * 0.1 times): drawn again from the whole softmax without it
    after = [ras_sample(logits, [0], gen) for _ in range(400)]
    assert 0 not in after or after.count(0) < after.count(1)
    assert set(after) - {0, 1}  # the full distribution, not the nucleus


def test_the_speech_tokenizer_reads_whispers_log_mel(bb, root):
    from faster_whisper.feature_extractor import FeatureExtractor

    from tests.audio.tiny_cosyvoice3 import write_speech_tokenizer

    wave = (0.1 * np.random.default_rng(0).standard_normal(16000)).astype(np.float32)
    mel = whisper_log_mel(wave)
    np.testing.assert_allclose(mel, FeatureExtractor(feature_size=128)(wave, padding=0), atol=1e-4)
    w = write_speech_tokenizer(root / "check.onnx", SPEECH_TOKENS)  # the same projection as the shipped one
    tokens = bb.encode_audio(wave, 16000)
    assert tokens.shape == (25, 1)  # 25 Hz
    assert torch.equal(tokens[:, 0], torch.from_numpy((mel.T @ w).argmax(1)[::4]))
    with notes.collect() as got:
        resampled = bb.encode_audio(np.repeat(wave, 3), 48000)
    assert resampled.shape == (25, 1) and any("resampled" in n for n in got)
    with pytest.raises(BadInput, match="30 s"):
        bb.encode_audio(np.zeros(16000 * 31, np.float32), 16000)


def test_decoding_without_the_official_source_names_the_fix(bb, monkeypatch):
    monkeypatch.delenv("COSYVOICE_SRC", raising=False)
    with pytest.raises(EnvironmentProblem, match="COSYVOICE_SRC"):
        bb.decode(torch.tensor([[1], [2]]))
    monkeypatch.setenv("COSYVOICE_SRC", "/nonexistent")
    with pytest.raises(MissingFile, match="no cosyvoice/ package"):
        CosyVoice3Backbone.decode(bb, torch.tensor([[1]]))


def test_bad_input(bb, root, tmp_path):
    with pytest.raises(BadInput, match="endofprompt"):
        bb.sequence("say <|endofprompt|> this")
    with pytest.raises(BadInput, match="not both"):
        bb.sequence(TEXT_, instruct="Speak slowly.", prompt=("hi", torch.tensor([1])))
    with pytest.raises(BadInput, match=f"0..{SPEECH_TOKENS - 1}"):
        bb.teacher_forced(TEXT_, torch.tensor([SPEECH_TOKENS]))
    with pytest.raises(BadInput, match="layer"):
        bb.teacher_forced(TEXT_, torch.tensor([1]), layers=[7])
    broken = tmp_path / "broken"
    shutil.copytree(root, broken)
    (broken / "llm.pt").unlink()
    with pytest.raises(MissingFile, match="lacks llm.pt"):
        CosyVoice3Backbone.load(broken)
    with pytest.raises(MissingFile, match="not found"):
        CosyVoice3Backbone.load(tmp_path / "nowhere")
    state = torch.load(str(root / "llm.pt"), weights_only=True)
    torch.save(state | {"llm_embedding.weight": torch.zeros(2, bb.d_model)}, str(broken / "llm.pt"))
    with pytest.raises(BadInput, match="unexpected llm_embedding.weight.*CosyVoice2"):
        CosyVoice3Backbone.load(broken)
    state["llm.model.model.norm.weight"] = torch.ones(bb.d_model + 1)
    torch.save(state, str(broken / "llm.pt"))
    with pytest.raises(BadInput, match=r"model.norm.weight has shape \(33,\)"):
        CosyVoice3Backbone.load(broken)


def test_harvest_train_and_label_end_to_end_from_the_command_line(root, tmp_path):
    import json

    from ttslens.app.cli import main
    from ttslens.sae.harvest import MANIFEST

    pairs = write_pairs(tmp_path)
    common = ["--backbone", "cosyvoice3", "--model-dir", str(root), "--layer", "1"]
    assert main(["harvest", *common, "--dataset", str(pairs), "--tokens", "600", "--out", str(tmp_path / "a")]) == 0
    manifest = json.loads((tmp_path / "a" / MANIFEST).read_text())
    assert manifest["rows"] >= 600 and manifest["backbone"] == f"cosyvoice3:{root}"
    sae = tmp_path / "sae"
    train = ["train", *common, "--corpus", str(pairs), "--latents", "64", "--k", "4", "--tokens", "3000"]
    assert main([*train, "--batch-size", "256", "--warmup-steps", "2", "--out", str(sae)]) == 0
    info = json.loads((sae / "cfg.json").read_text())
    assert info["d_in"] == 32
    label = ["label", "--sae", str(sae), "--corpus", str(pairs), "--items", "12", "--features", "0:6", "--asr", ""]
    label += ["--laughter-model", "", "--gender-model", "", "--top", "4", "--quantiles", "3", "--negatives", "4"]
    assert main([*label, "--pool", "30", "--clips", "1", "--no-progress"]) == 0  # its own audio: no decoder needed
    records = [json.loads(line) for line in (sae / "labels" / "labels.jsonl").read_text().splitlines()]
    assert sorted(r["feature"] for r in records) == list(range(6))
    assert main(["train", "--backbone", "cosyvoice3:x", "--model-dir", str(root), "--out", str(tmp_path / "b")]) == 2


def test_a_voice_prompt_generates_as_it_teacher_forces(bb):
    prompt = ("the cat sat", torch.tensor([3, 4, 5, 6]))
    g = bb.generate(TEXT_, prompt=prompt, seed=1, record=[2])
    tf = bb.teacher_forced(TEXT_, g.tokens, layers=[2], prompt=prompt)
    assert torch.equal(tf.sequence.ids, g.sequence.ids) and tf.sequence.prompt.sum() > 4
    torch.testing.assert_close(g.hidden[2], tf.hidden[2], atol=1e-4, rtol=1e-4)

"""Orpheus on a tiny random LlamaForCausalLM with Orpheus's token layout and a tiny SNAC (tests/audio/tiny_hf_tts.py),
loaded by the same loader as canopylabs/orpheus-3b-0.1-ft."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from tests.audio.tiny_hf_tts import train_and_label, write_tiny_orpheus
from ttslens.audio import Intervention, load_backbone
from ttslens.audio.backbones.orpheus.backbone import SLOTS, OrpheusBackbone
from ttslens.sae.activations import SPEECH, TEXT
from ttslens.sae.errors import BadInput, MissingFile

V = 64  # SNAC codes of the tiny codec (4096 on snac_24khz)
TEXT_ = "hello there <laugh> that was fun."


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return write_tiny_orpheus(tmp_path_factory.mktemp("orpheus"), codebook=V)


@pytest.fixture(scope="module")
def bb(root):
    return load_backbone(f"orpheus:{root}")


def test_special_ids_come_from_the_custom_tokens(bb):
    c0 = bb.tok.convert_tokens_to_ids("<custom_token_0>")
    assert bb.custom0 == c0 and bb.audio0 == c0 + 10 and bb.stop_id == c0 + 2  # 128256, 128266, 128258 on Orpheus
    assert (bb.codebook_size, bb.frame_positions) == (V, 7) and abs(bb.frame_rate - 24000 / 2048) < 1e-9
    assert set(bb.voices()) == {"tara", "leah", "jess", "leo", "dan", "mia", "zac", "zoe"}


def test_the_prompt_is_orpheus_engines(bb):
    seq = bb.sequence(TEXT_, prompt=bb.voices()["leo"].as_prompt())
    c = bb.custom0
    tok = bb.tok
    want = [c + 3, tok.convert_tokens_to_ids("<|begin_of_text|>")]
    want += tok(f"leo: {TEXT_}", add_special_tokens=False)["input_ids"]
    want += [tok.convert_tokens_to_ids("<|eot_id|>"), c + 4, c + 5, c + 1]
    assert seq.token_ids.tolist() == want
    voice = seq.prompt.nonzero()[:, 0]
    assert tok.decode(seq.token_ids[voice]) == "leo:" and (seq.modality[voice] == TEXT).all()
    body = (seq.modality == TEXT) & ~seq.prompt
    assert tok.decode(seq.token_ids[body]).strip() == TEXT_  # the emotion tag stays text
    tara = tok("tara:", add_special_tokens=False)["input_ids"]
    assert bb.sequence(TEXT_).token_ids.tolist()[2 : 2 + len(tara)] == tara  # the default voice


def test_logits_are_the_llamas_at_the_audio_ids_and_the_stop(bb):
    tokens = torch.randint(0, V, (9, 1), generator=torch.Generator().manual_seed(0))
    tf = bb.teacher_forced(TEXT_, tokens)
    ids = tf.sequence.token_ids[None]
    with torch.no_grad():
        full = bb.model(input_ids=ids).logits[0]
    want = torch.cat([full[:, bb.audio0 : bb.audio0 + SLOTS * V], full[:, bb.stop_id : bb.stop_id + 1]], 1)
    torch.testing.assert_close(tf.logits, want, atol=1e-4, rtol=1e-4)
    speech = tf.sequence.token_ids[tf.sequence.modality == SPEECH] - bb.audio0
    assert ((speech // V) == torch.arange(9) % SLOTS).all()  # slot id ranges


def test_generation_keeps_slot_ranges_and_stops_on_a_frame_boundary(root, monkeypatch):
    bb = OrpheusBackbone.load(root)
    for seed in range(3):
        g = bb.generate(TEXT_, seed=seed, max_tokens=60, min_tokens=3)
        assert g.tokens.max() < V and (not g.stopped or len(g.tokens) % SLOTS == 0)
    head = bb.speech_logits
    monkeypatch.setattr(bb, "speech_logits", lambda h: head(h) + torch.eye(SLOTS * V + 1)[-1] * 100)  # stop!
    g = bb.generate(TEXT_, seed=0, max_tokens=40, min_tokens=3)
    assert g.stopped and len(g.tokens) == SLOTS  # the stop waits for the first frame boundary after 3 tokens


def test_cached_generation_equals_teacher_forcing_and_steering_spares_the_prompt(bb):
    push = torch.randn(bb.d_model, generator=torch.Generator().manual_seed(0))
    iv = Intervention(layer=1, edit=lambda h: h + 3 * push)
    voice = bb.voices()["zoe"].as_prompt()
    g = bb.generate(TEXT_, prompt=voice, seed=2, max_tokens=21, interventions=[iv], record=[0, 2])
    tf = bb.teacher_forced(TEXT_, g.tokens, layers=[0, 2], interventions=[iv], prompt=voice)
    for layer in (0, 2):
        torch.testing.assert_close(g.hidden[layer], tf.hidden[layer], atol=1e-4, rtol=1e-4)
    clean = bb.teacher_forced(TEXT_, g.tokens, layers=[2], prompt=voice)
    speech = tf.sequence.modality == SPEECH
    assert torch.equal(clean.hidden[2][~speech], tf.hidden[2][~speech])
    assert (clean.hidden[2][speech] - tf.hidden[2][speech]).abs().max() > 1e-3
    assert torch.allclose(tf.sequence.times[speech][:8], torch.tensor([0.0] * 7 + [1.0]) / bb.frame_rate)


def test_snac_frames_round_trip_in_orpheus_order(bb):
    wave = (0.1 * np.random.default_rng(0).standard_normal(24000)).astype(np.float32)
    tokens = bb.encode_audio(wave, 24000)
    assert tokens.shape[1] == 1 and len(tokens) % SLOTS == 0 and tokens.max() < V
    codec = bb._codec()
    x = torch.from_numpy(np.pad(wave, (0, 576)))[None, None]
    with torch.no_grad():
        levels = codec.model.encode(x)
        torch.manual_seed(0)
        want = codec.model.decode(levels).numpy().reshape(-1)
    frames = tokens.reshape(-1, SLOTS)
    assert torch.equal(frames[:, 0], levels[0][0]) and torch.equal(frames[:, [1, 4]].reshape(-1), levels[1][0])
    np.testing.assert_allclose(bb.decode(tokens), want, atol=1e-5)
    np.testing.assert_array_equal(bb.decode(tokens), bb.decode(tokens))  # SNAC's noise is seeded
    assert len(bb.decode(tokens[:-3])) == len(want) - 2048  # an incomplete frame is dropped (with a note)


def test_train_and_label_end_to_end(root, tmp_path):
    records, _, _ = train_and_label("orpheus", root, tmp_path, tokens=3000)  # no decoder: the corpus's own audio
    assert sorted(r["feature"] for r in records) == list(range(4))


def test_bad_input(bb, root, tmp_path):
    with pytest.raises(BadInput, match="no instruct"):
        bb.sequence(TEXT_, instruct="happy")
    with pytest.raises(BadInput, match="voice name"):
        bb.sequence(TEXT_, prompt=("me", torch.zeros((7, 1), dtype=torch.long)))
    with pytest.raises(BadInput, match=f"0..{V - 1}"):
        bb.teacher_forced(TEXT_, torch.tensor([[V]]))
    broken = tmp_path / "broken"
    shutil.copytree(root, broken)
    (broken / "snac" / "pytorch_model.bin").unlink()
    with pytest.raises(MissingFile, match="lacks pytorch_model.bin"):
        OrpheusBackbone.load(broken).decode(torch.zeros((7, 1), dtype=torch.long))


def test_a_checkpoint_that_does_not_fit_its_config_and_a_missing_snac(root, tmp_path, monkeypatch):
    import builtins

    from ttslens.sae.errors import EnvironmentProblem

    odd = tmp_path / "odd"
    shutil.copytree(root, odd)
    cfg = json.loads((odd / "config.json").read_text())
    (odd / "config.json").write_text(json.dumps(cfg | {"intermediate_size": cfg["intermediate_size"] + 16}))
    with pytest.raises(BadInput, match="cannot load Orpheus"):
        OrpheusBackbone.load(odd)
    real_import = builtins.__import__

    def no_snac(name, *args, **kwargs):
        if name == "snac":
            raise ImportError("No module named 'snac'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_snac)
    with pytest.raises(EnvironmentProblem, match=r"pip install 'ttslens\[orpheus\]'"):
        OrpheusBackbone.load(root).decode(torch.zeros((7, 1), dtype=torch.long))

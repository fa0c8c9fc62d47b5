"""CSM on a tiny random `CsmForConditionalGeneration` (with a tiny Mimi) saved by `save_pretrained`, loaded by
the same loader as sesame/csm-1b."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from tests.audio.tiny_hf_tts import train_and_label, write_tiny_csm
from ttslens.audio import Intervention, load_backbone
from ttslens.audio.backbones.csm.backbone import CSMBackbone
from ttslens.sae.activations import SPECIAL, SPEECH, TEXT
from ttslens.sae.errors import BadInput, MissingFile

TEXT_ = "hello there, this is a test."
C, MIMI = 8, 64  # codebooks and Mimi codes of the tiny model (32 and 2048 on CSM-1B)


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return write_tiny_csm(tmp_path_factory.mktemp("csm"), codebooks=C)


@pytest.fixture(scope="module")
def bb(root):
    return load_backbone(f"csm:{root}")


def test_it_loads_by_name_and_by_directory(root, bb):
    assert isinstance(load_backbone(root), CSMBackbone)
    assert (bb.n_codebooks, bb.codebook_size, bb.n_layers) == (C, MIMI + 3, 3)
    assert set(bb.layer_groups()) == {"backbone", "depth"} and len(bb.layer_groups()["depth"]) == 2


def test_the_sequence_has_speaker_turns_and_a_context_prompt(bb):
    frames = torch.randint(0, MIMI, (3, C), generator=torch.Generator().manual_seed(0))
    seq = bb.sequence(TEXT_, prompt=("the cat sat", frames))
    words = bb.token_text(seq.ids)
    assert words[0] == "<|begin_of_text|>" and words.count("<|end_of_text|>") == 2
    speech = seq.modality == SPEECH
    assert speech.sum() == 3 and seq.prompt[speech].all()
    assert torch.equal(seq.ids[speech] - bb.text_vocab, frames)
    eos = speech.nonzero()[-1] + 1  # the audio end: an all-EOS frame, a special position of the prompt
    assert seq.modality[eos] == SPECIAL and (seq.ids[eos] == bb.text_vocab).all() and seq.prompt[eos]
    body = (seq.modality == TEXT) & ~seq.prompt
    assert bb.tok.decode(seq.token_ids[body]) == f"[0]{TEXT_}"


def test_logits_equal_the_transformers_model(bb):
    frames = torch.randint(0, MIMI, (5, C), generator=torch.Generator().manual_seed(1))
    tf = bb.teacher_forced(TEXT_, frames, layers=[1])
    seq = tf.sequence
    m = bb.model
    text = seq.modality != SPEECH
    x = torch.cat([m.embed_text_tokens(seq.ids[text, 0]), m.backbone_model.embed_tokens(frames[None])[0]])
    with torch.no_grad():
        want = m(inputs_embeds=x[None]).logits[0]
    torch.testing.assert_close(tf.logits, want, atol=1e-4, rtol=1e-4)


def test_greedy_generation_equals_transformers_generate(bb):
    """The backbone head, then the depth decoder per frame, under both caches: frame for frame what
    `CsmForConditionalGeneration.generate` gives (ids past Mimi's codebook suppressed in both)."""
    for text in (TEXT_, "the cat sat on the mat."):
        g = bb.generate(text, seed=0, max_tokens=12, temperature=0, min_tokens=0)
        ids = bb.sequence(text).ids[:, 0][None]
        extra = list(range(MIMI, MIMI + 3))
        want = bb.model.generate(
            input_ids=ids,
            max_new_tokens=12,
            do_sample=False,
            depth_decoder_do_sample=False,
            suppress_tokens=extra,
            depth_decoder_suppress_tokens=extra,
        )
        assert torch.equal(g.tokens, want[0, : len(g.tokens)])


def test_cached_generation_equals_teacher_forcing_and_steering_spares_the_prefix(bb):
    push = torch.randn(bb.d_model, generator=torch.Generator().manual_seed(0))
    iv = Intervention(layer=1, edit=lambda h: h + 3 * push)
    g = bb.generate(TEXT_, seed=2, max_tokens=8, interventions=[iv], record=[0, 2])
    tf = bb.teacher_forced(TEXT_, g.tokens, layers=[0, 2], interventions=[iv])
    for layer in (0, 2):
        torch.testing.assert_close(g.hidden[layer], tf.hidden[layer], atol=1e-4, rtol=1e-4)
    clean = bb.teacher_forced(TEXT_, g.tokens, layers=[2])
    speech = tf.sequence.modality == SPEECH
    assert torch.equal(clean.hidden[2][~speech], tf.hidden[2][~speech])
    assert (clean.hidden[2][speech] - tf.hidden[2][speech]).abs().max() > 1e-3
    total, n = bb.speech_nll(tf, g.tokens)
    assert n == (len(g.tokens) + 1) * C and 0 < total / n < 20


def test_an_all_eos_frame_stops(bb):
    frames = torch.tensor([[0] * C, [0] * (C - 1) + [5], [0, 1] + [0] * (C - 2)])
    assert bb.is_stop(frames).tolist() == [True, True, False]  # codebooks 0..C-2 all EOS, as transformers


def test_mimi_encode_decode_rates(bb):
    wave = (0.1 * np.random.default_rng(0).standard_normal(24000)).astype(np.float32)
    tokens = bb.encode_audio(wave, 24000)
    assert tokens.shape == (int(bb.frame_rate), C) and tokens.max() < MIMI
    audio = bb.decode(tokens)
    assert audio.dtype == np.float32 and len(audio) == 24000
    assert bb.encode_audio(wave[::2], 12000).shape == tokens.shape  # resampled
    with pytest.raises(BadInput, match="Mimi codes"):
        bb.decode(torch.full((2, C), MIMI + 1))


def test_train_and_label_end_to_end(root, tmp_path):
    from ttslens.app.cli import main

    records, sae, pairs = train_and_label("csm", root, tmp_path, tokens=20000)  # clips: the corpus's own audio
    assert sorted(r["feature"] for r in records) == list(range(4))
    # truth-free presets: probes on what the audio measures hear in the pairs' own audio (tones of 120-340 Hz)
    presets = ["presets", "--sae", str(sae), "--corpus", str(pairs), "--source", "probe", "--items", "12"]
    assert main([*presets, "--no-progress"]) == 0
    saved = json.loads((sae / "presets.json").read_text())
    assert saved["config"]["corpus"] == str(pairs) and saved["presets"]["gender"]["positions"] > 100
    assert saved["presets"]["laughter"].get("skipped")  # no laughter in tones: said, not invented


def test_bad_input(bb, tmp_path):
    with pytest.raises(BadInput, match="no instruct"):
        bb.sequence(TEXT_, instruct="speak fast")
    with pytest.raises(BadInput, match=f"0..{MIMI + 2}"):
        bb.teacher_forced(TEXT_, torch.full((1, C), MIMI + 3))
    with pytest.raises(BadInput, match=rf"\[T, {C}\]"):
        bb.teacher_forced(TEXT_, torch.zeros((2, 3), dtype=torch.long))
    (tmp_path / "empty").mkdir()
    with pytest.raises(MissingFile, match="lacks config.json"):
        CSMBackbone.load(tmp_path / "empty")

"""Interface v2 through the same base machinery on two tiny backbones shaped like the real models:
C = 4 codebooks per frame (CSM-like) and 3 positions per frame (Orpheus-like). Generation, teacher
forcing, recording, steering, batching, the hook engine's isolation, the registry and devices."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

from tests.audio.tiny_backbones import MultiCodebookTTS, SlotFrameTTS
from ttslens.audio import Intervention, list_backbones, load_backbone
from ttslens.audio.harvest import BackboneActivations, speech_ce
from ttslens.sae.activations import SPEECH, TEXT
from ttslens.sae.base import SAEConfig, make_sae
from ttslens.sae.errors import BadInput

KINDS = [MultiCodebookTTS, SlotFrameTTS]


@pytest.fixture(scope="module", params=KINDS, ids=lambda k: k.name)
def bb(request):
    return request.param(device="cpu")


def test_generated_frames_have_the_backbone_shape(bb):
    g = bb.generate("a cat sat", seed=0, max_tokens=30, min_tokens=6, temperature=1.0)
    T, C = g.tokens.shape
    assert C == bb.n_codebooks and T >= 6 and g.sequence.ids.shape == (len(g.sequence), bb.n_codebooks)
    assert int((g.sequence.modality == SPEECH).sum()) == T
    if g.stopped:  # the backbone decides when to stop: on a frame boundary
        assert T % bb.frame_positions == 0
    wave = bb.decode(g.tokens)
    assert wave.dtype == np.float32 and np.isfinite(wave).all() and len(wave) > 0


def test_slot_frames_share_their_frame_time_and_slot_ids():
    bb = SlotFrameTTS()
    seq = bb.append_speech(bb.sequence("hi"), torch.tensor([[1], [2], [3], [4], [5], [6]]))
    times = seq.times[seq.modality == SPEECH]
    assert torch.allclose(times, torch.tensor([0, 0, 0, 1, 1, 1]) / bb.frame_rate)
    ids = seq.token_ids[seq.modality == SPEECH] - bb.OFFSET
    assert (ids // bb.codebook_size).tolist() == [0, 1, 2, 0, 1, 2]  # slot id ranges
    with pytest.raises(BadInput, match=r"\[T, 1\]"):
        bb.append_speech(seq, torch.zeros((2, 3), dtype=torch.long))


def test_multicodebook_frames_are_summed_embeddings():
    bb = MultiCodebookTTS()
    tokens = torch.tensor([[1, 2, 3, 4]])
    seq = bb.append_speech(bb.sequence("hi"), tokens)
    e = bb.embed(seq.ids[None], seq.modality[None])[0, -1]
    want = sum(bb.audio_embed.weight[c * bb.codebook_size + int(tokens[0, c])] for c in range(4))
    torch.testing.assert_close(e, want)
    with pytest.raises(BadInput, match="must lie in"):
        bb.as_tokens(torch.tensor([[1, 2, 3, 99]]))


def test_cached_generation_equals_teacher_forcing_with_a_steering_edit(bb):
    push = torch.randn(bb.d_model, generator=torch.Generator().manual_seed(0))
    iv = Intervention(layer=1, edit=lambda h: h + push)
    n = 4 * bb.frame_positions
    g = bb.generate("the dog ran", seed=3, max_tokens=n, min_tokens=n, interventions=[iv], record=[0, 2])
    tf = bb.teacher_forced("the dog ran", g.tokens, layers=[0, 2], interventions=[iv])
    assert len(g.tokens) == n
    for layer in (0, 2):
        torch.testing.assert_close(g.hidden[layer], tf.hidden[layer], atol=1e-4, rtol=1e-4)
    clean = bb.teacher_forced("the dog ran", g.tokens, layers=[2])
    speech = tf.sequence.modality == SPEECH
    assert torch.equal(clean.hidden[2][~speech], tf.hidden[2][~speech])  # the text prefix is untouched
    assert (clean.hidden[2][speech] - tf.hidden[2][speech]).abs().max() > 1e-3


def test_batched_teacher_forcing_equals_one_by_one(bb):
    corpus = bb.default_corpus().items("train")[:5]
    batch = bb.teacher_forced_batch([(it.text, it.tokens) for it in corpus], layers=[1])
    for it, tf in zip(corpus, batch, strict=True):
        one = bb.teacher_forced(it.text, it.tokens, layers=[1])
        assert tf.hidden[1].shape == one.hidden[1].shape == (len(one.sequence), bb.d_model)
        torch.testing.assert_close(tf.hidden[1], one.hidden[1], atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(tf.logits, one.logits, atol=1e-4, rtol=1e-4)


def test_batched_generation_equals_one_by_one(bb):
    texts, seeds = ["a cat sat", "the dog ran far away", "hi"], [0, 1, 2]
    kw = {"max_tokens": 5 * bb.frame_positions, "temperature": 0.0, "record": [1]}
    batch = bb.generate(texts, seed=seeds, **kw)
    assert isinstance(batch, list) and len(batch) == 3
    for text, s, g in zip(texts, seeds, batch, strict=True):
        one = bb.generate(text, seed=s, **kw)
        assert torch.equal(g.tokens, one.tokens) and g.stopped == one.stopped
        torch.testing.assert_close(g.hidden[1], one.hidden[1], atol=1e-4, rtol=1e-4)
    sampled = bb.generate(texts, seed=seeds, max_tokens=6, min_tokens=6)
    assert torch.equal(sampled[1].tokens, bb.generate(texts[1], seed=1, max_tokens=6, min_tokens=6).tokens)


def test_window_scope_edits_only_speech_inside_the_window(bb):
    tokens = bb.default_corpus().items("train")[0].tokens
    seq = bb.append_speech(bb.sequence("a cat sat"), tokens)
    t0, t1 = 1 / bb.frame_rate, 3 / bb.frame_rate
    iv = Intervention(layer=0, edit=lambda h: h * 0, scope="speech", window=(t0, t1))
    m = iv.mask(seq)
    assert m.any() and ((seq.times[m] >= t0) & (seq.times[m] < t1)).all()
    assert not (m & (seq.modality == TEXT)).any()
    tf = bb.teacher_forced("a cat sat", tokens, layers=[0], interventions=[iv])
    clean = bb.teacher_forced("a cat sat", tokens, layers=[0])
    assert (tf.hidden[0][m] == 0).all() and torch.equal(tf.hidden[0][~m], clean.hidden[0][~m])
    with pytest.raises(BadInput, match="window"):
        Intervention(layer=0, edit=lambda h: h, window=(2.0, 1.0))


def test_concurrent_generations_never_see_each_others_hooks(bb):
    big = Intervention(layer=0, edit=lambda h: h + 50.0)
    n = 3 * bb.frame_positions
    want_plain = bb.generate("we sing", seed=5, max_tokens=n, min_tokens=n, record=[2]).hidden[2]
    want_steer = bb.generate("we sing", seed=5, max_tokens=n, min_tokens=n, record=[2], interventions=[big]).hidden[2]
    got: dict[str, list] = {"plain": [], "steer": []}

    def run(kind: str) -> None:
        for _ in range(4):
            ivs = [big] if kind == "steer" else []
            got[kind].append(bb.generate("we sing", seed=5, max_tokens=n, min_tokens=n, record=[2], interventions=ivs))

    threads = [threading.Thread(target=run, args=(k,)) for k in ("plain", "steer")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(torch.allclose(g.hidden[2], want_plain, atol=1e-5) for g in got["plain"])
    assert all(torch.allclose(g.hidden[2], want_steer, atol=1e-5) for g in got["steer"])


def test_harvest_train_and_ce_through_the_same_source(bb):
    items = bb.default_corpus().items("train")
    src = BackboneActivations(bb, items, layer=1, batch=4)
    blk = src.block(src.start_state(), 200)
    assert blk.acts.shape[1] == bb.d_model and blk.acts.shape[0] >= 200
    assert set(blk.meta["modality"].unique().tolist()) >= {TEXT, SPEECH}
    one_acts, _ = src.rows(0)
    torch.testing.assert_close(blk.acts[: one_acts.shape[0]], one_acts, atol=1e-5, rtol=1e-4)
    sae = make_sae(SAEConfig(arch="topk", d_in=bb.d_model, d_sae=64, k=4))
    ce = speech_ce(bb, sae, 1, items[:4])
    assert ce["ce_zero"] != ce["ce_clean"] and np.isfinite(list(ce.values())).all()


def test_the_registry_lists_and_loads_the_demo(small_assets):
    rows = {r["name"]: r for r in list_backbones()}
    assert rows["demo"]["usable"] and rows["demo"]["why_not"] is None
    bb = load_backbone(str(small_assets), device="cpu", dtype="float32")
    assert bb.name == "demo" and bb.device.type == "cpu" and bb.dtype == torch.float32
    with pytest.raises(BadInput, match="unknown device"):
        load_backbone(str(small_assets), device="tpu9")
    with pytest.raises(BadInput, match="unknown dtype"):
        load_backbone(str(small_assets), dtype="float8")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (runs on the lent GPU machine)")
@pytest.mark.parametrize("kind", KINDS, ids=lambda k: k.name)
def test_generation_on_cuda_in_bf16(kind):
    gpu = kind(device="cuda", dtype=torch.bfloat16)
    n = 3 * gpu.frame_positions
    g = gpu.generate(["a cat sat", "hi"], seed=[0, 1], max_tokens=n, min_tokens=n, record=[1])
    assert g[0].tokens.shape == (n, gpu.n_codebooks) and g[0].hidden[1].dtype == torch.float32
    tf = gpu.teacher_forced("a cat sat", g[0].tokens, layers=[1])
    assert tf.hidden[1].shape == g[0].hidden[1].shape

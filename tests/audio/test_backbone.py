"""The backbone interface, on a demo backbone built here with `--small`, and the shipped one."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from ttslens.app.cli import main as cli
from ttslens.audio import Intervention, load_backbone
from ttslens.audio.backbones.demo.backbone import ASSETS, DemoBackbone
from ttslens.sae.activations import SPECIAL, SPEECH, TEXT
from ttslens.sae.errors import BadInput


def test_small_build_writes_a_loadable_backbone(small_assets, small):
    info = json.loads((small_assets / "build.json").read_text())
    assert info["command"].startswith("ttslens demo build --small")
    assert info["metrics"]["corpus"]["utterances"] == 40 and info["metrics"]["lm"]["heldout_loss"] > 0
    corpus = small.default_corpus()
    assert corpus.items("train") and corpus.items("heldout")
    assert len(corpus.items("all")) == len(corpus.items("train")) + len(corpus.items("heldout"))
    g = small.generate("hello there.", seed=0, max_tokens=20)
    assert g.tokens.ndim == 2 and g.tokens.shape[1] == small.n_codebooks == small.codec.n_codebooks + 2 == 6
    wave = small.decode(g.tokens)
    assert wave.dtype == np.float32 and len(wave) == len(g.tokens) * small.codec.hop


def test_build_resumes_from_its_workdir(small_assets, capsys):
    work = small_assets.parent
    (lm_dir,) = work.glob("lm-*")
    before = (lm_dir / "lm.safetensors").stat().st_mtime_ns
    assert cli(["demo", "build", "--small", "--workdir", str(work)]) == 0
    assert (lm_dir / "lm.safetensors").stat().st_mtime_ns == before  # nothing retrained
    assert cli(["demo", "build", "--small", "--workdir", str(work), "--utterances", "30"]) == 2
    assert "another corpus" in capsys.readouterr().err


def test_sequence_layout_mirrors_cosyvoice(small):
    tok = small.tok
    seq = small.sequence("hi [laughter] you.", instruct="a woman speaking.")
    assert seq.ids.shape == (len(seq), small.n_codebooks)
    ids, mod = seq.token_ids.tolist(), seq.modality.tolist()
    assert ids[0] == tok.sos and mod[0] == SPECIAL
    eop = ids.index(tok.eop)
    assert mod[eop] == SPECIAL and set(mod[1:eop]) == {TEXT}
    assert ids[-1] == tok.task and mod[-1] == SPECIAL and set(mod[eop + 1 : -1]) == {TEXT}
    assert tok.index["[laughter]"] in ids
    assert torch.isnan(seq.times).all() and not seq.prompt.any()
    full = small.append_speech(seq, torch.tensor([3, 1, 4])[:, None].repeat(1, small.n_codebooks))
    assert full.modality[-3:].tolist() == [SPEECH] * 3
    assert torch.allclose(full.times[-3:], torch.tensor([0, 1, 2]) / small.token_rate)


def test_voice_prompt_positions_are_marked(small):
    frames = torch.tensor([5, 6, 7, 8])[:, None].repeat(1, small.n_codebooks)
    seq = small.sequence("and more.", prompt=("first words.", frames))
    assert seq.prompt[-4:].all() and (seq.modality[-4:] == SPEECH).all()
    assert seq.prompt[(seq.modality == TEXT)].any()  # the prompt's text
    g = small.generate("and more.", prompt=("first words.", frames), seed=1, max_tokens=5)
    assert torch.allclose(g.sequence.times[-len(g.tokens) :], (4 + torch.arange(len(g.tokens))) / small.token_rate)


def test_hooks_see_one_position_per_step_under_the_kv_cache(small):
    widths = []
    handle = small.layers()[0].register_forward_hook(
        lambda m, i, o: widths.append(o[0].shape[-2] if isinstance(o, tuple) else o.shape[1])
    )
    try:
        g = small.generate("one two three.", seed=0, max_tokens=6, min_tokens=6)
    finally:
        handle.remove()
    prefix = len(small.sequence("one two three."))
    assert widths[0] == prefix and widths[1:] == [1] * 6 and len(g.tokens) == 6


def test_generation_is_seeded(small):
    kw = {"max_tokens": 30, "min_tokens": 30}  # 30 draws each: two seeds agreeing on all is (1/V)^30-unlikely
    a = small.generate("the cat sat.", seed=4, **kw)
    b = small.generate("the cat sat.", seed=4, **kw)
    c = small.generate("the cat sat.", seed=5, **kw)
    assert len(a.tokens) == 30 and torch.equal(a.tokens, b.tokens)
    assert not torch.equal(a.tokens, c.tokens)


def test_speech_intervention_leaves_text_positions_untouched(small):
    tokens = torch.tensor([1, 2, 3, 4, 5])[:, None].repeat(1, small.n_codebooks)
    push = torch.full((small.d_model,), 3.0)
    iv = Intervention(layer=0, edit=lambda h: h + push)
    clean = small.teacher_forced("a dog ran.", tokens, layers=[0, 1])
    steered = small.teacher_forced("a dog ran.", tokens, layers=[0, 1], interventions=[iv])
    speech = clean.sequence.modality == SPEECH
    for layer in (0, 1):  # text positions see nothing (causal), speech positions change
        assert torch.allclose(clean.hidden[layer][~speech], steered.hidden[layer][~speech])
    assert torch.allclose(steered.hidden[0][speech], clean.hidden[0][speech] + push, atol=1e-5)
    assert not torch.allclose(clean.hidden[1][speech], steered.hidden[1][speech])
    text_iv = Intervention(layer=0, edit=lambda h: h * 0, scope="text")
    zeroed = small.teacher_forced("a dog ran.", tokens, layers=[0], interventions=[text_iv])
    assert (zeroed.hidden[0][clean.sequence.modality == TEXT] == 0).all()


def test_cached_generation_matches_teacher_forcing_with_interventions(small):
    """The intervention applied step by step under the KV cache equals the same intervention over
    the whole sequence at once: the cache holds steered keys and values, as it should."""
    push = torch.randn(small.d_model, generator=torch.Generator().manual_seed(0))
    iv = Intervention(layer=1, edit=lambda h: h + push)
    g = small.generate("sing a song.", seed=2, max_tokens=12, min_tokens=12, interventions=[iv], record=[1])
    tf = small.teacher_forced("sing a song.", g.tokens, layers=[1], interventions=[iv])
    assert g.hidden[1].shape == tf.hidden[1].shape
    assert torch.allclose(g.hidden[1], tf.hidden[1], atol=1e-4)
    with pytest.raises(ValueError, match="out of range"):
        small.generate("x.", interventions=[Intervention(layer=99, edit=lambda h: h)])
    with pytest.raises(ValueError, match="scope"):
        Intervention(layer=0, edit=lambda h: h, scope="prompt")


@pytest.mark.parametrize(
    "text, match",
    [
        ("", "empty text"),
        ("   ", "empty text"),
        ("costs 5 euros", "spell numbers out"),
        ("price in €", "cannot read"),
        ("he [laughs] loud", "unknown tag"),
        ("he [laughter loud", "malformed tag"),
        ("word " * 400, "at most"),
    ],
)
def test_bad_text_gets_a_clear_error(small, text, match):
    with pytest.raises(ValueError, match=match):
        small.generate(text, max_tokens=2)


def test_text_normalisation_accepts_ordinary_typography(small):
    a = small.sequence("Café — “Hello” [Laughter]").ids
    b = small.sequence("cafe - hello [laughter]").ids
    assert torch.equal(a, b)


def test_unknown_backbone_and_corrupt_files(small_assets, tmp_path):
    with pytest.raises(ValueError, match="unknown backbone 'nope'"):
        load_backbone("nope")
    bad = tmp_path / "bad"
    shutil.copytree(small_assets, bad)
    data = (bad / "lm.safetensors").read_bytes()
    (bad / "lm.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="corrupt.*ttslens demo build"):
        load_backbone(str(bad))
    (bad / "lm.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="missing"):
        DemoBackbone.load(bad)


def test_missing_espeak_is_explained(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(shutil, "which", lambda name: None)
    assert cli(["demo", "build", "--small", "--workdir", str(tmp_path / "w")]) == 2
    assert "apt-get install espeak-ng" in capsys.readouterr().err


def test_synthesize_command_writes_a_wav(small_assets, tmp_path, capsys):
    import soundfile as sf

    out = tmp_path / "hi.wav"
    argv = ["synthesize", "--backbone", str(small_assets), "hello [laughter] there.", "--seed", "3", "--out", str(out)]
    assert cli([*argv, "--max-seconds", "1"]) == 0
    report = json.loads(capsys.readouterr().out)
    wave, sr = sf.read(out)
    assert sr == 16000 and report["duration_s"] == pytest.approx(len(wave) / sr, abs=1e-3) and len(wave) <= sr
    from ttslens.audio.measures.asr import bundled_model

    if bundled_model() is not None:  # an independent Whisper says what it heard, and its WER vs the text
        from ttslens.audio.measures.wer import wer

        assert isinstance(report["transcript"], str) and report["wer"] == round(
            wer("hello [laughter] there.", report["transcript"]), 3
        )
    assert cli([*argv, "--max-seconds", "1", "--asr", ""]) == 0
    assert "transcript" not in json.loads(capsys.readouterr().out)
    assert cli(["synthesize", "--backbone", str(small_assets), "", "--out", str(out)]) == 2
    assert cli(["synthesize", "--backbone", "nope", "hi", "--out", str(out)]) == 2


def test_train_an_sae_on_the_backbone_per_modality(small_assets, tmp_path, capsys):
    out = tmp_path / "sae"
    argv = ["train", "--backbone", str(small_assets), "--layer", "1", "--latents", "64", "--k", "4"]
    argv += ["--tokens", "4096", "--batch-size", "512", "--eval-tokens", "1024", "--out", str(out)]
    assert cli(argv) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert {"text", "speech"} <= set(metrics["by_modality"])
    assert metrics["by_modality"]["speech"]["tokens"] > 0
    assert cli([*argv[:3], "--layer", "9", *argv[5:], "--overwrite"]) == 2
    # `eval` on the backbone the SAE records: per modality, with the speech-token CE
    assert cli(["eval", "--sae", str(out), "--tokens", "2048", "--ce-sequences", "2"]) == 0
    ev = json.loads(capsys.readouterr().out)
    assert ev["backbone"] == str(small_assets) and {"text", "speech"} <= set(ev["by_modality"])
    assert ev["speech_ce"]["ce_clean"] < ev["speech_ce"]["ce_zero"]


def test_boost_a_text_only_sae_with_speech_positions(small_assets, tmp_path, capsys):
    """`train --modality text` sees text rows only; `boost --modality speech` adds a residual SAE for the speech
    rows, and the stitched SAE evaluates, per modality and by speech CE, like any other."""
    base, boosted = tmp_path / "base", tmp_path / "boosted"
    common = ["--backbone", str(small_assets), "--tokens", "4096", "--batch-size", "512", "--eval-tokens", "1024"]
    assert (
        cli(["train", *common, "--layer", "1", "--latents", "64", "--k", "4", "--modality", "text", "--out", str(base)])
        == 0
    )
    assert set(json.loads(capsys.readouterr().out)["by_modality"]) == {"text"}
    assert (
        cli(["boost", "--base", str(base), *common, "--modality", "speech", "--latents", "32", "--out", str(boosted)])
        == 0
    )
    rep = json.loads((boosted / "boost.json").read_text())
    assert set(rep["domain"]["base"]["by_modality"]) == {"speech"} and set(rep["general"]["base"]["by_modality"]) == {
        "text"
    }
    assert rep["general_modality"] == "text" and rep["ce"]["stitched"]["ce_sae"] > 0
    assert rep["domain"]["stitched"]["explained_variance"] > rep["domain"]["base"]["explained_variance"]
    capsys.readouterr()
    assert cli(["eval", "--sae", str(boosted), "--tokens", "1024", "--ce-sequences", "2"]) == 0
    assert {"text", "speech"} <= set(json.loads(capsys.readouterr().out)["by_modality"])


def test_shipped_backbone_loads_and_speaks():
    if not (ASSETS / "lm.safetensors").exists():
        pytest.fail("the shipped demo backbone is missing from audio/demo/assets: run `ttslens demo build`")
    bb = load_backbone("demo")
    assert bb.identity()["name"] == "demo" and bb.n_layers >= 4
    wave, g = bb.synthesize("good morning to you.", seed=0)
    assert g.stopped and len(wave) > bb.sample_rate // 2 and np.isfinite(wave).all()


def test_an_unknown_instruct_is_refused_with_the_known_ones(small):
    assert len(small.sequence("hi.", instruct="A Woman speaking quickly.")) > 3  # case and spacing folded
    with pytest.raises(BadInput, match="does not know the instruct 'a pirate speaking.'.*a woman speaking slowly"):
        small.sequence("hi.", instruct="a pirate speaking.")


def test_a_text_audio_dataset_is_teacher_forced_through_encode_audio(small, tmp_path):
    """A corpus of real (text, audio) pairs: audio files at another rate, tokenised by the backbone's codec."""
    import librosa
    import soundfile as sf

    from ttslens.audio.corpus import load_corpus
    from ttslens.audio.harvest import BackboneActivations

    rows = []
    for i, it in enumerate(small.default_corpus().items("train")[:4]):
        wave = librosa.resample(small.decode(it.tokens), orig_sr=small.sample_rate, target_sr=22050)
        sf.write(tmp_path / f"u{i}.wav", wave, 22050)
        rows.append({"text": it.text, "audio": str(tmp_path / f"u{i}.wav")})
    (tmp_path / "pairs.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    corpus = load_corpus(str(tmp_path / "pairs.jsonl"), backbone=small)
    items = corpus.items("all")
    assert len(items) == 4 and all(it.tokens is None and it.audio[1] == 22050 for it in items)
    tokens = small.encode_audio(*items[0].audio)
    assert (
        tokens.shape[1] == small.n_codebooks
        and abs(len(tokens) - len(small.default_corpus().items("train")[0].tokens)) <= 2
    )
    src = BackboneActivations(small, items, layer=1, batch=2)
    blk = src.block(src.start_state(), 64)
    assert blk.acts.shape[1] == small.d_model and (blk.meta["modality"] == SPEECH).any()
    with pytest.raises(BadInput, match="no column 'speech'"):
        load_corpus(str(tmp_path / "pairs.jsonl"), backbone=small, audio_column="speech")


def test_the_shipped_corpus_is_every_heldout_utterance_then_the_first_training_ones():
    from ttslens.audio.backbones.demo.build import shipped_utterances as shipped

    assert shipped(10, 8, 5) == [0, 1, 2, 8, 9]
    assert shipped(10, 8, 100) == list(range(10))
    assert shipped(10, 8, 1) == [8, 9]  # the held-out ones are always shipped


def test_bf16_training_keeps_fp32_weights_and_the_attention_setting(small):
    from ttslens.audio.backbones.demo.build import SMALL_LM, _example
    from ttslens.audio.backbones.demo.lm import DepthHead, build_lm, train_lm
    from ttslens.audio.backbones.demo.tokenizer import PHONE_COLUMNS
    from ttslens.sae.devices import bf16_native

    assert not bf16_native("meta")
    tok = small.tok
    items = small.default_corpus().items("train")[:6]
    examples = [_example(tok, it.instruct, [it.text], [it.tokens]) for it in items]
    cfg = SMALL_LM.__class__(**{**SMALL_LM.__dict__, "steps": 4, "bf16": True})
    model = build_lm(tok.vocab_size, cfg, tok.pad)
    depth = DepthHead(cfg.d_model, tok.n_codebooks, tok.codebook_size, first=PHONE_COLUMNS)
    before = model.config._attn_implementation
    history = train_lm(
        model, depth, examples, cfg, tok.speech_offset, tok.pad, (tok.stay, tok.next, tok.eos), progress=False
    )
    assert history and all(np.isfinite(h.loss) for h in history)
    assert model.config._attn_implementation == before
    assert all(p.dtype == torch.float32 for p in [*model.parameters(), *depth.parameters()])


def test_corpus_encoding_over_a_pool_equals_the_serial_one(small_assets, small):
    from ttslens.audio.backbones.demo.build import encode_files

    paths = sorted(str(p) for p in (small_assets.parent / "corpus" / "wav").glob("*.wav"))[:12]
    pooled = encode_files(small.codec, paths, progress=False, workers=2)
    serial = encode_files(small.codec, paths, progress=False, workers=1)
    assert len(pooled) == 12 and all(np.array_equal(a, b) for a, b in zip(pooled, serial, strict=True))

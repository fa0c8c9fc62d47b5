"""Voice prompts: named voices, prompt WAVs (and their bad input), and what the API does with a prompt."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf
import torch

from ttslens.app.cli import main as cli
from ttslens.audio.backbones.base import Intervention
from ttslens.audio.voices import named_voice, prompt_from_wav, read_prompt_wav, resolve_prompt
from ttslens.sae import notes
from ttslens.sae.activations import SPEECH
from ttslens.sae.errors import BadInput, MissingFile


def test_named_voices_come_from_the_corpus(small):
    voices = small.voices()
    assert voices, "the small build has at least one plain utterance at an ordinary pace"
    by_voice = {it.truth["voice"]: it for it in small.default_corpus().items("train")}
    for name, v in voices.items():
        assert v.name == name and v.tokens.shape[1] == small.n_codebooks and v.text
        truth = next(it.truth for it in small.default_corpus().items("train") if it.text == v.text)
        assert truth["voice"] == name and not truth["laughter"] and 150 <= truth["rate_wpm"] <= 200
    assert set(voices) <= set(by_voice)
    with pytest.raises(BadInput, match="unknown voice 'nobody'.*use one of " + ", ".join(sorted(voices))):
        named_voice(small, "nobody")


def test_a_named_voice_is_continued_and_never_steered(small):
    from ttslens.audio.steering.api import SteerableTTS

    name, v = next(iter(small.voices().items()))
    tts = SteerableTTS(small, [])
    out = tts.synthesize("and more words.", voice=name, seed=3, max_seconds=1.0)
    n = len(v.tokens)
    speech = out.sequence.modality == SPEECH
    assert out.sequence.prompt[speech][:n].all() and not out.sequence.prompt[speech][n:].any()
    assert torch.equal(out.sequence.ids[speech][:n], small.speech_ids(v.tokens))
    # the prompt's speech keeps its own times; the new speech follows it
    lead = n / small.token_rate
    assert out.sequence.times[speech][n].item() == pytest.approx(lead)
    # an edit in "speech" scope leaves the prompt's positions alone, and a window counts from the new speech
    iv = Intervention(0, lambda h: h, "speech", window=(lead + 0.2, lead + 0.4))
    mask = iv.mask(out.sequence)
    assert not mask[out.sequence.prompt].any() and mask.sum() == round(0.2 * small.token_rate)


def test_api_window_is_relative_to_the_new_speech(small, small_sae):
    from ttslens.audio.steering.api import SteerableTTS

    tts = SteerableTTS.load(small, [str(small_sae)])
    name = next(iter(small.voices()))
    out = tts.synthesize("we will meet.", {"5": 2.0}, voice=name, window=(0.2, 0.4), seed=1, max_seconds=1.0)
    steered_times = out.sequence.times[out.steered]
    lead = len(small.voices()[name].tokens) / small.token_rate
    assert out.steered.sum() == round(0.2 * small.token_rate)
    assert ((steered_times >= lead + 0.2 - 1e-6) & (steered_times < lead + 0.4)).all()


def _wav(path, seconds: float, sr: int = 16000, amp: float = 0.3):
    t = np.arange(int(seconds * sr)) / sr
    sf.write(path, (amp * np.sin(2 * np.pi * 180 * t)).astype(np.float32), sr)
    return path


def test_prompt_wav_bad_input_is_one_line(small, tmp_path):
    cases = [
        (_wav(tmp_path / "silent.wav", 2.0, amp=0.0), "is silent"),
        (_wav(tmp_path / "long.wav", 12.0), "trim it to at most 10 s"),
        (_wav(tmp_path / "short.wav", 0.2), "at least 0.5 s"),
    ]
    (tmp_path / "junk.wav").write_bytes(b"not audio at all")
    cases.append((tmp_path / "junk.wav", "cannot read the prompt WAV"))
    for path, message in cases:
        with pytest.raises(BadInput, match=message) as err:
            read_prompt_wav(path, 16000)
        assert "\n" not in str(err.value)
    with pytest.raises(MissingFile, match="not found"):
        read_prompt_wav(tmp_path / "nope.wav", 16000)
    ok = _wav(tmp_path / "ok.wav", 1.0)
    with pytest.raises(BadInput, match="not both"):
        resolve_prompt(small, voice="x", prompt_wav=str(ok))
    with pytest.raises(BadInput, match="goes with --prompt-wav"):
        resolve_prompt(small, prompt_text="hello")
    with pytest.raises(BadInput, match="needs its text: pass --prompt-text"):
        prompt_from_wav(small, ok, asr="")
    assert resolve_prompt(small) is None


def test_prompt_wav_at_another_rate_is_resampled_with_a_note(small, tmp_path):
    path = _wav(tmp_path / "p.wav", 1.0, sr=22050)
    with notes.collect() as said:
        p = prompt_from_wav(small, path, text="a test tone.")
    assert any("resampled from 22050 Hz to 16000 Hz" in n for n in said)
    assert p.text == "a test tone." and p.tokens.shape == (25, small.n_codebooks)


def test_cli_synthesize_with_a_voice_and_voices_listing(small_assets, small, tmp_path, capsys):
    assert cli(["voices", "--backbone", str(small_assets)]) == 0
    listed = capsys.readouterr().out
    name = next(iter(small.voices()))
    assert name in listed
    out = tmp_path / "v.wav"
    argv = ["synthesize", "good day.", "--backbone", str(small_assets), "--voice", name, "--asr", ""]
    assert cli([*argv, "--max-seconds", "1", "--out", str(out)]) == 0
    assert json.loads(capsys.readouterr().out)["voice"] == name and out.is_file()
    assert cli([*argv[:-4], "--voice", "nobody", "--asr", ""]) == 2
    assert "unknown voice 'nobody'" in capsys.readouterr().err


@pytest.mark.parametrize("name", ["Hugo", "f3"])
def test_the_shipped_demo_speaks_in_the_prompted_voice(name):
    """A named voice reproduces that corpus voice: median F0 within a third of an octave of the voice's
    (espeak-ng) F0 and the pitch-free classifier names its gender, over 3 seeds."""
    from ttslens.audio import load_backbone
    from ttslens.audio.backbones.demo.espeak import VOICE_BY_NAME
    from ttslens.audio.measures import timbre_gender_for
    from ttslens.audio.measures.signal import median_f0

    bb = load_backbone("demo")
    voice, timbre = VOICE_BY_NAME[name], timbre_gender_for(bb)
    f0s, males = [], []
    for seed in range(3):
        g = bb.generate("we walked to the old station in the rain.", prompt=bb.voices()[name].as_prompt(), seed=seed)
        wave = bb.decode(g.tokens)
        f0s.append(median_f0(wave, bb.sample_rate))
        males.append(timbre.p_male(wave, bb.sample_rate))
    assert abs(np.log2(np.nanmedian(f0s) / voice.f0_hz)) < 1 / 3, (f0s, voice.f0_hz)
    assert all((m > 0.5) == (voice.gender == "male") for m in males), males

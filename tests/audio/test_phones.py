"""The demo's phoneme front end: espeak-ng's timing, the text → schedule reading, and generation that follows it."""

from __future__ import annotations

import subprocess

import numpy as np
import torch

from ttslens.audio.backbones.demo.corpus_gen import LAUGH, PAUSE, CorpusSettings, make_utterance
from ttslens.audio.backbones.demo.espeak import VOICE_BY_NAME, phonemes, resample, speak, speak_aligned
from ttslens.audio.backbones.demo.phones import END, UNK, frame_phonemes, run_starts, text_phonemes, track_columns


def _cli_wave(text: str, voice, rate: int) -> np.ndarray:
    cmd = ["espeak-ng", "--stdout", "-z", "-v", voice.espeak, "-s", str(rate), "-p", str(voice.pitch), text]
    out = subprocess.run(cmd, capture_output=True, check=True).stdout
    start = out.find(b"data", 12) + 8
    pcm = np.frombuffer(out[start : start + (len(out) - start) // 2 * 2], dtype="<i2")
    return resample(pcm.astype(np.float32) / 32768.0, int.from_bytes(out[24:28], "little"), 16000)


def test_speech_and_phoneme_times_are_those_of_the_espeak_command_line():
    voice, text = VOICE_BY_NAME["m2"], "maria isn't going to vanish in front of russia."
    wave, phones = speak_aligned(text, voice, 194)
    again, _ = speak_aligned(text, voice, 194)
    assert np.array_equal(wave, again) and np.array_equal(wave, speak(text, voice, 194))
    cli = _cli_wave(text, voice, 194)
    assert len(cli) >= len(wave) and np.abs(cli).max() > 0.1  # the same samples, before trimming
    assert any(np.array_equal(cli[i : i + len(wave)], wave) for i in range(0, len(cli) - len(wave) + 1))
    starts = [t for _, t in phones]
    assert starts == sorted(starts) and 0 <= starts[0] and starts[-1] <= len(wave) / 16000
    names = [n for n, _ in phones]
    assert names == list(phonemes(text)) and "m" in names and names[-1].startswith("_")


def test_text_phonemes_reproduce_the_corpus_track():
    for i in range(6):  # utterance 0 opens with a tagged laugh
        utt, _ = make_utterance(CorpusSettings(), i)
        if utt.spontaneous:
            continue
        assert [n for n, _ in utt.phones] == text_phonemes(utt.text)
    sched = text_phonemes("hi [laughter] you.")
    k = sched.index(LAUGH)
    assert sched[0] == sched[-1] == PAUSE and sched[k - 1] == sched[k + 1] == PAUSE


def test_frame_columns_by_hand():
    phones = [("_", 0.0), ("h", 0.05), ("i", 0.13)]
    names = frame_phonemes(phones, 5, 25.0)  # frame centres 0.02, 0.06, 0.10, 0.14, 0.18 s
    assert names == ["_", "h", "h", "i", "i"]
    inv = {UNK: 0, END: 1, "_": 2, "h": 3, "i": 4}
    cols = track_columns(names, inv)
    assert cols.tolist() == [[2, 3], [3, 4], [3, 4], [4, 1], [4, 1]]
    assert run_starts(cols, 0).tolist() == [1, 1, 0, 1, 0]
    cols[:2] = 0
    assert run_starts(cols, 0).tolist() == [-1, -1, 1, 1, 0]


def test_generation_says_every_phoneme_of_the_text_in_order(small):
    text = "the door is open [laughter] now."
    sched = small.schedule(small.sequence(text))
    assert small.tok.phone_index[LAUGH] in sched
    for seed in range(3):
        g = small.generate(text, seed=seed)
        assert g.stopped
        ph, nx = g.tokens[:, 0].tolist(), g.tokens[:, 1].tolist()
        runs = [p for k, p in enumerate(ph) if k == 0 or p != ph[k - 1]]
        assert runs == sched and nx[-1] == small.tok.phone_index[END]
        tf = small.teacher_forced(text, g.tokens)
        nll, count = small.speech_nll(tf, g.tokens)
        assert np.isfinite(nll) and count == len(g.tokens) + 1 + len(g.tokens) * small.codec.n_codebooks


def test_a_prompt_read_from_audio_has_unknown_phonemes(small):
    wave = small.decode(small.generate("first words.", seed=0).tokens)
    tokens = small.encode_audio(wave, small.sample_rate)
    assert (tokens[:, :2] == small.tok.phone_index[UNK]).all()
    g = small.generate("and more.", prompt=("first words.", tokens), seed=1)
    runs = [p for k, p in enumerate(g.tokens[:, 0].tolist()) if k == 0 or p != g.tokens[k - 1, 0]]
    assert runs == small.schedule(small.sequence("and more.")) and torch.equal(
        g.sequence.ids[-len(g.tokens) - len(tokens) : -len(g.tokens)], small.speech_ids(tokens)
    )

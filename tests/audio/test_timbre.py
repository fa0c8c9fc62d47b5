"""The pitch-free gender classifier: right on voices it never saw, blind to a pitch shift of one voice."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest

from ttslens.audio.backbones.demo.espeak import VOICE_BY_NAME, VOICES, speak
from ttslens.audio.measures.signal import measure, median_f0, p_male
from ttslens.audio.measures.timbre import TimbreGender, fit_timbre_gender
from ttslens.sae.errors import BadInput, MissingFile

SENTENCES = ["the children are playing outside.", "please close the window.", "we met at the old station."]


@pytest.fixture(scope="module")
def fitted():
    rows = [(speak(s, v, 170), v.gender, v.name) for v in VOICES for s in SENTENCES]
    waves, genders, names = map(list, zip(*rows, strict=True))
    return fit_timbre_gender(waves, genders, names, heldout_voices=4, seed=0)


def test_accurate_on_held_out_voices(fitted):
    model, report = fitted
    assert len(report.heldout_voices) == 4 and report.n_utterances == len(VOICES) * len(SENTENCES)
    assert report.heldout_voice_accuracy >= 0.8, report
    assert model.report["heldout_voices"] == report.heldout_voices


@pytest.mark.parametrize(("name", "pitch"), [("m3", 90), ("f1", 10)])
def test_ignores_a_pitch_shift_of_the_same_voice(fitted, name, pitch):
    """espeak's -p moves F0 and keeps the voice's formants: pitch-based P(male) flips or drifts to the
    boundary, the timbre classifier keeps the voice's gender."""
    model, _ = fitted
    voice = VOICE_BY_NAME[name]
    wave = speak("my brother bought a new car last week.", replace(voice, pitch=pitch), 170)
    by_pitch, by_timbre = p_male(median_f0(wave)), model.p_male(wave, 16000)
    if voice.gender == "male":
        assert by_pitch < 0.6 and by_timbre > 0.7
    else:
        assert by_pitch > 0.6 and by_timbre < 0.3


def test_files_measure_and_bad_input(fitted, tmp_path):
    model, _ = fitted
    model.save(tmp_path)
    loaded = TimbreGender.load(tmp_path)
    wave = speak("good morning.", VOICE_BY_NAME["Hugo"], 170)
    assert loaded.p_male(wave, 16000) == pytest.approx(model.p_male(wave, 16000))
    m = measure(wave, 16000, gender_model=loaded)
    assert m.p_male_timbre == pytest.approx(model.p_male(wave, 16000)) and measure(wave).p_male_timbre is None
    assert math.isnan(model.p_male(np.zeros(16000, np.float32), 16000))  # silence: no answer
    (tmp_path / "gender.json").write_text("{not json")
    with pytest.raises(BadInput, match="corrupt"):
        TimbreGender.load(tmp_path)
    with pytest.raises(MissingFile, match="ttslens demo build"):
        TimbreGender.load(tmp_path / "nowhere")
    with pytest.raises(BadInput, match="both genders"):
        fit_timbre_gender([wave, wave], ["male", "male"], ["a", "b"])

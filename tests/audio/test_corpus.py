"""The demo corpus: sentences, espeak voices, the synthetic laugh, build/resume/load."""

import json

import librosa
import numpy as np
import pytest
import soundfile as sf
from scipy.signal import find_peaks

from ttslens.audio.backbones.demo.corpus_gen import (
    LAUGH_TAG,
    build_corpus,
    instruct_text,
    load_corpus,
    parse_instruct,
    sample_utterance,
)
from ttslens.audio.backbones.demo.espeak import VOICE_BY_NAME, VOICES, render_laugh, speak
from ttslens.audio.backbones.demo.grammar import ALLOWED
from ttslens.audio.backbones.demo.sentences import SentenceGenerator

SR = 16000


def _median_f0(x: np.ndarray) -> float:
    f0 = librosa.yin(x, fmin=60, fmax=500, sr=SR, frame_length=1024, hop_length=256)
    rms = librosa.feature.rms(y=x, frame_length=1024, hop_length=256)[0]
    n = min(len(f0), len(rms))
    return float(np.median(f0[:n][rms[:n] > 0.1 * rms.max()]))


def test_sentences_vocabulary_and_characters():
    gen = SentenceGenerator(0)
    vocab = gen.vocabulary()
    assert len(vocab) >= 2000
    sentences = [gen.sentence() for _ in range(600)]
    assert all(ALLOWED.match(s) for s in sentences)
    words = [w.strip(".,?!") for s in sentences for w in s.split()]
    assert set(words) <= vocab
    assert len(set(words)) > 1000  # the vocabulary is really used
    lengths = [len(s.split()) for s in sentences]
    assert min(lengths) == 3 and max(lengths) == 20
    assert {s[-1] for s in sentences} >= {".", "?", "!"}
    assert all(2 <= len(gen.sentence(2, 5).split()) <= 5 for _ in range(50))


def test_determinism():
    a, b, c = SentenceGenerator(7), SentenceGenerator(7), SentenceGenerator(8)
    first = [a.sentence() for _ in range(30)]
    assert first == [b.sentence() for _ in range(30)]
    assert first != [c.sentence() for _ in range(30)]
    u1 = sample_utterance(np.random.default_rng(5), SentenceGenerator(1), 4, p_tagged=0.5, p_instruct=0.5)
    u2 = sample_utterance(np.random.default_rng(5), SentenceGenerator(1), 4, p_tagged=0.5, p_instruct=0.5)
    assert u1 == u2 and u1.id == "utt000004"


def test_voices_split_by_gender():
    female = [v for v in VOICES if v.gender == "female"]
    male = [v for v in VOICES if v.gender == "male"]
    assert len(female) >= 6 and len(male) >= 6
    assert min(v.f0_hz for v in female) >= 165 > 135 >= max(v.f0_hz for v in male)
    assert len({v.name for v in VOICES}) == len(VOICES)


def test_speak_pitch_and_trim():
    text = "the quick brown fox jumps over the lazy dog near the river."
    lowest_female = min((v for v in VOICES if v.gender == "female"), key=lambda v: v.f0_hz)
    highest_male = max((v for v in VOICES if v.gender == "male"), key=lambda v: v.f0_hz)
    for voice, ok in [(lowest_female, lambda f: f >= 165), (highest_male, lambda f: f <= 135)]:
        x = speak(text, voice, 170)
        assert x.dtype == np.float32 and x.ndim == 1 and 1.5 < len(x) / SR < 6
        assert ok(_median_f0(x)), (voice.name, _median_f0(x))
        loud = np.flatnonzero(np.abs(x) > 0.01 * np.abs(x).max())
        assert loud[0] <= 0.05 * SR and len(x) - 1 - loud[-1] <= 0.05 * SR
    fast, slow = speak(text, VOICE_BY_NAME["f3"], 250), speak(text, VOICE_BY_NAME["f3"], 120)
    assert len(slow) > 1.5 * len(fast)


@pytest.mark.parametrize("seed", range(4))
def test_laugh_is_bursty(seed):
    rng = np.random.default_rng(seed)
    x = render_laugh(rng, 110.0 if seed % 2 else 210.0, "male" if seed % 2 else "female")
    assert x.dtype == np.float32 and 0.4 < len(x) / SR < 2.5
    assert abs(np.abs(x).max() - 0.7) < 1e-3
    env = librosa.feature.rms(y=x, frame_length=320, hop_length=160)[0]  # 100 frames/s
    peaks, _ = find_peaks(env, prominence=0.25 * env.max(), distance=8)
    assert len(peaks) >= 3
    rate = 100.0 / np.median(np.diff(peaks))
    assert 3.0 <= rate <= 7.0
    assert np.array_equal(
        x, render_laugh(np.random.default_rng(seed), 110.0 if seed % 2 else 210.0, "male" if seed % 2 else "female")
    )


def test_build_corpus_resume_and_load(tmp_path):
    out = tmp_path / "corpus"
    utts = build_corpus(out, 6, seed=1, progress=False, p_tagged=0.6, p_instruct=0.5)
    assert [u.id for u in utts] == [f"utt{i:06d}" for i in range(6)]
    assert any(LAUGH_TAG in u.text for u in utts)
    for u in utts:
        info = sf.info(out / "wav" / f"{u.id}.wav")
        assert info.samplerate == SR and info.subtype == "PCM_16" and info.channels == 1
        assert abs(info.duration - u.duration) < 1e-3
        n_tags = u.text.count(LAUGH_TAG)
        assert len(u.laughter) == (n_tags or int(u.spontaneous))
        assert all(0 <= a < b <= u.duration for a, b in u.laughter)
        assert f"{LAUGH_TAG}{LAUGH_TAG}" not in u.text.replace(" ", "") and "  " not in u.text
        assert ALLOWED.match(u.text.replace(LAUGH_TAG, "x"))
        assert u.voice in VOICE_BY_NAME and VOICE_BY_NAME[u.voice].gender == u.gender
        assert parse_instruct(u.instruct)[0] in (u.gender, None)

    wav_times = {p.name: p.stat().st_mtime_ns for p in (out / "wav").iterdir()}
    again = build_corpus(out, 6, seed=1, progress=False, p_tagged=0.6, p_instruct=0.5)
    assert again == utts == load_corpus(out)
    assert {p.name: p.stat().st_mtime_ns for p in (out / "wav").iterdir()} == wav_times
    more = build_corpus(out, 7, seed=1, progress=False, p_tagged=0.6, p_instruct=0.5)
    assert more[:6] == utts and len(load_corpus(out)) == 7
    with pytest.raises(ValueError, match="another out_dir"):
        build_corpus(out, 6, seed=2, progress=False)

    # interrupted: no truth.jsonl yet, the journal holds 3 finished utterances and a torn line
    (out / "truth.jsonl").unlink()
    (out / "truth.partial.jsonl").write_text("".join(u.to_json() + "\n" for u in utts[:3]) + utts[3].to_json()[:40])
    kept = {f"{u.id}.wav": (out / "wav" / f"{u.id}.wav").stat().st_mtime_ns for u in utts[:3]}
    resumed = build_corpus(out, 6, seed=1, progress=False, p_tagged=0.6, p_instruct=0.5)
    assert resumed == utts and not (out / "truth.partial.jsonl").exists()
    assert {n: (out / "wav" / n).stat().st_mtime_ns for n in kept} == kept  # not rendered again


def test_instruct_round_trip():
    assert instruct_text(None, None) is None and parse_instruct(None) == (None, None)
    for gender in (None, "male", "female"):
        for pace in (None, "fast", "slow"):
            text = instruct_text(gender, pace)
            if gender is None and pace is None:
                continue
            assert ALLOWED.match(text) and text.endswith(".")
            assert parse_instruct(text) == (gender, pace)
    assert instruct_text("female", "fast") == "a woman speaking quickly."


def test_load_corpus_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="truth.jsonl"):
        load_corpus(tmp_path)
    good = {
        "id": "utt000000",
        "text": "hi there.",
        "instruct": None,
        "voice": "f1",
        "gender": "female",
        "rate_wpm": 150,
        "laughter": [],
        "spontaneous": False,
        "duration": 1.0,
    }
    (tmp_path / "truth.jsonl").write_text(json.dumps(good) + "\n{not json\n")
    with pytest.raises(ValueError, match="line 2") as err:
        load_corpus(tmp_path)
    assert "\n" not in str(err.value)
    (tmp_path / "truth.jsonl").write_text(json.dumps({"id": "utt000001"}) + "\n")
    with pytest.raises(ValueError, match="line 1"):
        load_corpus(tmp_path)


def test_an_audio_folder_is_a_corpus(tmp_path):
    """LibriTTS-style transcripts beside the audio, or the Hugging Face audiofolder metadata.csv."""
    import numpy as np
    import soundfile as sf

    from ttslens.audio.corpus import load_corpus
    from ttslens.sae.errors import BadInput

    lib = tmp_path / "libritts" / "19" / "198"
    lib.mkdir(parents=True)
    for i, text in enumerate(["the cat sat.", "a dog ran."]):
        sf.write(lib / f"19_198_{i}.wav", np.zeros(1600, np.float32), 16000)
        (lib / f"19_198_{i}.normalized.txt").write_text(text + "\n")
    items = load_corpus(tmp_path / "libritts").items("all")
    assert [it.text for it in items] == ["the cat sat.", "a dog ran."] and items[0].audio[1] == 16000
    hf = tmp_path / "hf"
    hf.mkdir()
    sf.write(hf / "a.wav", np.zeros(800, np.float32), 8000)
    (hf / "metadata.csv").write_text("file_name,transcription\na.wav,hello there\n")
    (item,) = load_corpus(hf).items("all")
    assert item.text == "hello there" and len(item.audio[0]) == 800
    (tmp_path / "empty").mkdir()
    with pytest.raises(BadInput, match="no \\(text, audio\\) pairs"):
        load_corpus(tmp_path / "empty")

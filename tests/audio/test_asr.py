"""Whisper ASR on the tiny random whisper checkpoint of tests/conftest.py (no downloads): loading, word
timestamps, missing weights."""

import base64
import gzip
import math
import shutil

import numpy as np
import pytest
import torch

whisper = pytest.importorskip("whisper")

from ttslens.audio.measures import asr  # noqa: E402
from ttslens.audio.measures.asr import ASR, Word, words_at  # noqa: E402


@pytest.fixture
def fresh(monkeypatch, tmp_path):
    """An empty whisper cache, and no models loaded or warnings given yet in this process."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setattr(asr, "_MODELS", {})
    monkeypatch.setattr(asr, "_WARNED", set())
    return tmp_path / "whisper"


def test_transcribe_random_checkpoint(whisper_checkpoint):
    threads = torch.get_num_threads()
    model = ASR.load(str(whisper_checkpoint))
    assert model is not None and model.name == "tiny-random"
    assert ASR.load(str(whisper_checkpoint)) is model  # cached in-process
    t = np.arange(15435) / 22050  # 0.7 s
    wave = (0.3 * np.sin(2 * np.pi * 220 * t) * (1 + np.sin(2 * np.pi * 3 * t))).astype(np.float32)
    words = model.transcribe(wave, 22050, max_tokens=8)
    # random weights: the words are garbage (the seeded checkpoint gives a few), but they are real words
    # in time order, inside the 0.7-s clip, with probabilities
    assert len(words) >= 2 and all(isinstance(w, Word) and isinstance(w.word, str) and w.word for w in words)
    assert all(math.isfinite(w.start) and math.isfinite(w.end) and 0.0 <= w.start <= w.end <= 0.7 for w in words)
    assert [w.start for w in words] == sorted(w.start for w in words) and all(0.0 <= w.prob <= 1.0 for w in words)
    assert model.transcribe_batch([wave], 22050, max_tokens=8) == [words]  # deterministic
    assert torch.get_num_threads() == threads  # numba's OpenMP pool (word alignment) did not reset it


def test_word_cleanup(whisper_checkpoint, monkeypatch):
    """Words keep whisper's order; blank or non-finite ones are dropped; times are clamped to the clip."""
    raw = [
        {"word": " Hello", "start": -0.02, "end": 0.3, "probability": 0.9},
        {"word": " ", "start": 0.3, "end": 0.4, "probability": 0.5},
        {"word": " world", "start": 0.4, "end": float("nan"), "probability": 0.5},
        {"word": " there.", "start": 0.45, "end": 0.61, "probability": 0.7},
    ]
    seen = {}

    def fake_transcribe(model, audio, **options):
        seen.update(options, n=len(audio), dtype=audio.dtype)
        return {"segments": [{"words": raw[:2]}, {"words": raw[2:]}]}

    monkeypatch.setattr(whisper, "transcribe", fake_transcribe)
    words = ASR.load(str(whisper_checkpoint)).transcribe((np.ones((1, 13230)) * 0.1).astype(np.float32), 22050)
    assert words == [Word("Hello", 0.0, 0.3, 0.9), Word("there.", 0.45, 0.6, 0.7)]
    assert seen["n"] == 9600 and seen["dtype"] == np.float32  # 0.6 s resampled to 16 kHz
    assert seen["word_timestamps"] and seen["temperature"] == 0.0 and seen["language"] == "en"


def test_size_name_from_cache(whisper_checkpoint, fresh, monkeypatch):
    """A size name loads from the download root, without a checksum pass or network."""
    fresh.mkdir()
    shutil.copy(whisper_checkpoint, fresh / "tiny.pt")
    dims = torch.load(whisper_checkpoint)["dims"]
    heads = base64.b85encode(gzip.compress(np.ones(dims["n_text_layer"] * dims["n_text_head"], bool).tobytes()))
    monkeypatch.setitem(whisper._ALIGNMENT_HEADS, "tiny", heads)
    model = ASR.load("tiny")
    assert model is not None and model.name == "tiny"


def test_missing_weights_warn_once(fresh):
    with pytest.warns(UserWarning) as record:
        assert ASR.load("tiny") is None
        assert ASR.load("tiny") is None
    messages = [str(r.message) for r in record if "ASR evidence is skipped" in str(r.message)]
    assert len(messages) == 1 and "'tiny'" in messages[0] and "load_model('tiny')" in messages[0]
    assert not fresh.exists() or not any(fresh.iterdir())  # nothing downloaded
    with pytest.warns(UserWarning, match="does not exist"):
        assert ASR.load(str(fresh / "nope.pt")) is None
    with pytest.raises(ValueError, match="unknown whisper model"):
        ASR.load("tinyy")


def test_words_at():
    a, b, c = Word("a", 0.0, 0.4, 0.9), Word("b", 0.5, 0.9, 0.8), Word("c", 1.5, 2.0, 0.7)
    words = [a, b, c]
    assert words_at(words, 0.2) == [a]
    assert words_at(words, 0.4) == [a]  # ends are inclusive
    assert words_at(words, 0.46) == [b]  # in a gap: the nearer word
    assert words_at(words, 1.3) == [c]
    assert words_at(words, 1.2) == []  # 0.3 s from both neighbours
    assert words_at(words, 1.2, tol=0.5) == [b]  # a tie goes to the earlier word
    assert words_at(words, 2.2) == [c] and words_at(words, 2.3) == []
    overlapping = [a, Word("a2", 0.3, 0.6, 0.5)]
    assert words_at(overlapping, 0.35) == overlapping
    assert words_at([], 1.0) == []

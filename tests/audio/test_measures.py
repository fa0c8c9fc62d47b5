"""Audio measures and the laughter detector on synthetic signals with known truth."""

import math

import numpy as np
import pytest
from scipy.signal import lfilter

from ttslens.audio.backbones.demo.laughter import FEATURE_NAMES, LaughterDetector, fit_laughter_detector, window_labels
from ttslens.audio.measures import signal as M

SR = 16000
VOWEL_A = ((700, 90), (1200, 110), (2600, 160))
VOWELS = (VOWEL_A, ((300, 60), (2300, 100), (3000, 150)), ((500, 80), (900, 100), (2500, 150)))


def formant_filter(x: np.ndarray, formants=VOWEL_A, sr: int = SR) -> np.ndarray:
    """A cascade of two-pole resonators (formant frequency, bandwidth in Hz)."""
    for f, bw in formants:
        r = math.exp(-math.pi * bw / sr)
        x = lfilter([1 - r], [1, -2 * r * math.cos(2 * math.pi * f / sr), r * r], x)
    return x


def pulse_train(f0: float, n: int, rng: np.random.Generator, sr: int = SR) -> np.ndarray:
    """Glottal-like impulses at `f0` with a slow 2% vibrato."""
    t = np.arange(n) / sr
    phase = np.cumsum(f0 * (1 + 0.02 * np.sin(2 * np.pi * 3 * t + rng.uniform(0, 6))) / sr) + rng.uniform()
    return np.diff(np.floor(phase), prepend=np.floor(phase[0]))


def vowel(f0: float, seconds: float, formants=VOWEL_A, sr: int = SR, seed: int = 0) -> np.ndarray:
    y = formant_filter(pulse_train(f0, int(seconds * sr), np.random.default_rng(seed), sr), formants, sr)
    return (0.5 * y / np.abs(y).max()).astype(np.float32)


# ------------------------------------------------------------------------------------------ measures


@pytest.mark.parametrize("f0, expected", [(120.0, "male"), (220.0, "female")])
def test_median_f0_and_gender(f0, expected):
    x = vowel(f0, 1.5)
    assert M.median_f0(x) == pytest.approx(f0, rel=0.05)
    assert M.median_f0(x, fast=True) == pytest.approx(f0, rel=0.05)
    assert M.gender(x) == expected
    m = M.measure(x)
    assert m.median_f0_hz == pytest.approx(f0, rel=0.05) and m.laughter is None
    assert (m.p_male > 0.5) == (expected == "male")


def test_other_sample_rates_and_formats():
    x = vowel(120.0, 1.0, sr=22050)
    assert M.median_f0(x, sr=22050) == pytest.approx(120.0, rel=0.05)
    pcm = (vowel(220.0, 1.0) * 32767).astype(np.int16)
    assert M.gender(pcm[None, :]) == "female"  # [1, n] int16 is accepted


def test_p_male_monotone():
    f0s = np.geomspace(70, 400, 40)
    p = np.array([M.p_male(f) for f in f0s])
    assert np.all(np.diff(p) < 0) and p[0] > 0.95 and p[-1] < 0.05
    assert M.p_male(165.0) == pytest.approx(0.5)
    assert math.isnan(M.p_male(math.nan))
    with pytest.raises(ValueError):
        M.p_male(0.0)


def test_voiced_duration():
    x = np.concatenate([vowel(150.0, 1.5), np.zeros(SR, np.float32)])
    assert M.voiced_duration(x) == pytest.approx(1.5, abs=0.1)
    assert M.pitch(x, fast=True).voiced.sum() * M.HOP_S == pytest.approx(1.5, abs=0.1)


def test_speech_rate_of_syllables_at_4_hz():
    t = np.arange(3 * SR) / SR
    x = vowel(140.0, 3.0) * np.sin(np.pi * 4 * t).astype(np.float32) ** 2  # 12 "syllables"
    assert M.speech_rate(x) == pytest.approx(4.0, abs=0.8)
    assert M.speech_rate(vowel(140.0, 2.0)) < 1.0  # one steady vowel


def test_silence_and_tiny_clips():
    for x in (np.zeros(SR, np.float32), np.zeros(10, np.float32), 1e-7 * np.ones(SR, np.float32)):
        assert math.isnan(M.median_f0(x)) and M.gender(x) == "unknown" and M.voiced_duration(x) == 0.0
        m = M.measure(x)
        assert math.isnan(m.p_male) and math.isnan(m.syllables_per_s) and m.voiced_s == 0.0


def test_clipped_voice_still_measured():
    x = np.clip(vowel(120.0, 1.0) * 20, -1, 1)
    assert M.median_f0(x) == pytest.approx(120.0, rel=0.05)


@pytest.mark.parametrize(
    "wave, sr, match",
    [
        (np.array([0.1, np.nan, 0.2] * 1000), SR, "NaN"),
        (np.array([0.1, np.inf] * 1000), SR, "NaN"),
        (np.zeros(0), SR, "empty"),
        (np.zeros((2, 1000)), SR, "mono"),
        (np.zeros(1000), 0, "sample rate"),
    ],
)
def test_bad_input(wave, sr, match):
    with pytest.raises(ValueError, match=match):
        M.measure(wave, sr)


# ------------------------------------------------------------------------------------------ laughter


def speech_like(seconds: float, f0: float, rng: np.random.Generator) -> np.ndarray:
    """Steady vowel segments (0.15-0.45 s, random vowel, pitch within 15% of f0) with short gaps."""
    out = np.zeros(int(seconds * SR))
    pos = 0
    while pos < len(out):
        n = int(rng.uniform(0.15, 0.45) * SR)
        y = formant_filter(pulse_train(f0 * rng.uniform(0.85, 1.15), n, rng), VOWELS[rng.integers(len(VOWELS))])
        y = y * np.hanning(n) ** 0.5 / (np.abs(y).max() + 1e-9)
        out[pos : pos + n] = y[: len(out) - pos]
        pos += n + int(rng.uniform(0.0, 0.08) * SR)
    return out


def laugh_like(seconds: float, f0: float, rng: np.random.Generator) -> np.ndarray:
    """Breathy "ha" bursts at ~5 Hz: pulses at 1.4-1.9x the speaker's F0 plus aspiration noise."""
    n = int(seconds * SR)
    out = 0.02 * rng.standard_normal(n)
    period = int(SR / rng.uniform(4.3, 5.7))
    burst = int(0.6 * period)
    env = np.exp(-np.arange(burst) / (0.4 * burst)) * np.minimum(1, np.arange(burst) / (0.01 * SR))
    for start in range(0, n - burst, period):
        voiced = formant_filter(pulse_train(f0 * rng.uniform(1.4, 1.9), burst, rng))
        breath = formant_filter(rng.standard_normal(burst))
        out[start : start + burst] += 0.6 * env * (voiced / np.abs(voiced).max() + breath / np.abs(breath).max())
    return out


def laughter_corpus(n: int, seed: int, seconds: float = 3.0):
    """Every other utterance gets a 0.9-1.6 s laugh at a random place; returns waves and spans."""
    rng = np.random.default_rng(seed)
    waves, spans = [], []
    for i in range(n):
        f0 = rng.uniform(90, 250)
        x, sp = speech_like(seconds, f0, rng), []
        if i % 2 == 0:
            length = rng.uniform(0.9, 1.6)
            start = rng.uniform(0, seconds - length)
            a = int(start * SR)
            x[a : a + int(length * SR)] = laugh_like(length, f0, rng)
            sp = [(start, start + length)]
        waves.append((0.3 * x / np.abs(x).max()).astype(np.float32))
        spans.append(sp)
    return waves, spans


@pytest.fixture(scope="module")
def fitted():
    waves, spans = laughter_corpus(60, seed=0)
    detector, report = fit_laughter_detector(waves, spans, heldout_fraction=0.25, seed=0, progress=False)
    return detector, report, waves, spans


def test_window_labels():
    labels = window_labels(9, [(0.5, 1.6)])  # windows start every 0.25 s and last 1 s
    assert labels.tolist() == [1, 1, 1, 1, 1, -1, -1, 0, 0]
    assert window_labels(3, []).tolist() == [0, 0, 0]


def test_features_shape():
    det = LaughterDetector()
    assert det.features(np.zeros(SR // 4, np.float32)).shape == (1, len(FEATURE_NAMES))
    assert det.features(vowel(150.0, 2.0)).shape == (5, len(FEATURE_NAMES))
    with pytest.raises(ValueError, match="not fitted"):
        det.probability(vowel(150.0, 1.0))


def test_laughter_detector_fits_and_separates(fitted):
    detector, report, waves, spans = fitted
    assert report.heldout_accuracy >= 0.9 and report.heldout_balanced_accuracy >= 0.9
    assert report.heldout_utterance_accuracy >= 0.85
    assert 0 < report.n_positive < report.n_windows
    test_waves, test_spans = laughter_corpus(10, seed=1)
    hits = [detector.detect(w) == bool(s) for w, s in zip(test_waves, test_spans, strict=True)]
    assert np.mean(hits) >= 0.8
    assert detector.probability(np.zeros(2 * SR, np.float32)) == 0.0
    assert M.measure(waves[0], laughter_detector=detector).laughter == pytest.approx(detector.probability(waves[0]))


def test_laughter_detector_save_load(fitted, tmp_path):
    detector = fitted[0]
    detector.save(tmp_path / "det")
    loaded = LaughterDetector.load(tmp_path / "det")
    x = fitted[2][0]
    np.testing.assert_array_equal(loaded.window_probs(x), detector.window_probs(x))
    assert loaded.threshold == detector.threshold
    assert (tmp_path / "det" / "laughter.safetensors").stat().st_size < 100_000

    (tmp_path / "det" / "laughter.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(ValueError, match="cannot load a laughter detector"):
        LaughterDetector.load(tmp_path / "det")
    with pytest.raises(ValueError, match="cannot load a laughter detector"):
        LaughterDetector.load(tmp_path / "missing")

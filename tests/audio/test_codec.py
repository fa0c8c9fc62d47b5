"""The demo speech codec on synthetic voices: duration and pitch survive a round trip; codes, files, errors."""

import librosa
import numpy as np
import pytest
import torch
from scipy.signal import lfilter

from ttslens.audio.backbones.demo.codec import Codec, CodecConfig, fit_codec

SR, HOP = 16000, 640
TONE = (0.3, 1.3)  # seconds: where the voiced part of each test signal is


def vowel(f0: float, seconds: float, rng: np.random.Generator) -> np.ndarray:
    """A glottal-pulse-like tone at `f0` (slight vibrato) through /a/-like formant resonators."""
    t = np.arange(int(seconds * SR)) / SR
    cycles = np.cumsum(f0 * (1 + 0.02 * np.sin(2 * np.pi * 5 * t))) / SR
    source = np.maximum(np.sin(2 * np.pi * cycles), 0) ** 4
    y = source - source.mean() + 0.01 * rng.standard_normal(len(t))
    for fc, bw in ((700, 110), (1200, 140), (2600, 200)):
        r = np.exp(-np.pi * bw / SR)
        y = lfilter([1 - r], [1, -2 * r * np.cos(2 * np.pi * fc / SR), r * r], y)
    return 0.3 * y / np.abs(y).max()


def utterance(f0: float, seed: int) -> np.ndarray:
    """Silence, a 1 s vowel at `f0`, a noise burst (a fricative), silence; not a multiple of the hop long."""
    rng = np.random.default_rng(seed)
    parts = [np.zeros(int(TONE[0] * SR)), vowel(f0, TONE[1] - TONE[0], rng)]
    parts += [0.05 * rng.standard_normal(int(0.3 * SR)), np.zeros(int(0.25 * SR) + 123)]
    return np.concatenate(parts).astype(np.float32)


def median_f0(wave: np.ndarray) -> float:
    """Median librosa.yin pitch over the middle of the vowel."""
    f0 = librosa.yin(wave, fmin=60, fmax=500, sr=SR, frame_length=1024, hop_length=160)
    return float(np.median(f0[int((TONE[0] + 0.1) * 100) : int((TONE[1] - 0.1) * 100)]))


@pytest.fixture(scope="module")
def codec() -> Codec:
    waves = [utterance(f0, seed) for seed, f0 in enumerate((105, 110, 118, 205, 220, 235))]
    return fit_codec(waves, CodecConfig(codebook_size=64, stages=3, kmeans_iters=10), progress=False)


@pytest.mark.parametrize("f0", [110.0, 220.0])
def test_round_trip_keeps_duration_and_pitch(codec, f0):
    wave = utterance(f0, seed=100)
    tokens = codec.encode(wave)
    assert tokens.dtype == np.int64 and tokens.shape == (-(-len(wave) // HOP), codec.n_codebooks)
    decoded = codec.decode(tokens)
    assert decoded.dtype == np.float32 and decoded.shape == (len(tokens) * HOP,)
    assert abs(median_f0(decoded) / median_f0(wave) - 1) < 0.15


def test_tokens_gain_stage_and_mel(codec):
    cfg = codec.config
    assert codec.hop == HOP and codec.n_codebooks == cfg.stages * cfg.mel_per_frame == 6
    wave = utterance(220.0, seed=101)
    tokens = codec.encode(wave)
    assert tokens.min() >= 0 and tokens.max() < codec.codebook_size
    mel = codec.log_mel(wave)
    assert mel.shape == (len(tokens) * cfg.mel_per_frame, cfg.n_mels)
    # the gain stage is the frame's level: loud in the vowel, at the floor in silence; the first shape stage
    # leads the columns (what the LM head predicts), the gain comes next
    assert cfg.stage_order[:2] == [1, 0]
    gain = cfg.stage_order.index(0) * cfg.mel_per_frame
    frame = np.arange(len(tokens)) * HOP / SR
    vowel = (frame > TONE[0] + 0.05) & (frame < TONE[1] - 0.1)
    silent = frame > TONE[1] + 0.35
    assert tokens[vowel, gain].min() > tokens[silent, gain].max()
    # the quantised mel is close to the analysed one (residual VQ: each stage helps)
    err = np.abs(codec.mel_of(tokens) - mel)[np.repeat(vowel, cfg.mel_per_frame)]
    assert np.median(err) < 6.0


def test_silence_and_empty(codec):
    tokens = codec.encode(np.zeros(3 * HOP, np.float32))
    assert np.sqrt(np.mean(codec.decode(tokens) ** 2)) < 1e-3
    assert codec.encode(np.zeros(0, np.float32)).shape == (0, codec.n_codebooks)
    assert codec.decode([]).shape == (0,)


def test_accepts_lists_and_tensors_rejects_bad_tokens(codec):
    tokens = codec.encode(utterance(110.0, seed=102))[:20]
    expected = codec.decode(tokens)
    assert np.array_equal(codec.decode(tokens.tolist()), expected)
    assert np.array_equal(codec.decode(torch.from_numpy(tokens)), expected)
    C, K = codec.n_codebooks, codec.codebook_size
    for bad in ([[0] * (C - 1) + [K]], [[-1] * C], np.full((1, C), 1.5), np.zeros((2, C + 1), np.int64), [1, 2]):
        with pytest.raises(ValueError) as err:
            codec.decode(bad)
        assert "\n" not in str(err.value)


def test_save_load_round_trip(codec, tmp_path):
    codec.save(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["codec.json", "codec.safetensors"]
    loaded = Codec.load(tmp_path)
    wave = utterance(220.0, seed=103)
    tokens = codec.encode(wave)
    assert np.array_equal(loaded.encode(wave), tokens)
    assert np.array_equal(loaded.decode(tokens), codec.decode(tokens))
    assert loaded.config == codec.config


@pytest.mark.parametrize("damage", ["truncate_tensors", "garbage_json", "missing"])
def test_corrupt_codec_is_a_clear_error(codec, tmp_path, damage):
    codec.save(tmp_path)
    if damage == "truncate_tensors":
        path = tmp_path / "codec.safetensors"
        path.write_bytes(path.read_bytes()[:100])
    elif damage == "garbage_json":
        (tmp_path / "codec.json").write_text("{not json")
    else:
        (tmp_path / "codec.json").unlink()
    with pytest.raises(ValueError, match="ttslens demo build") as err:
        Codec.load(tmp_path)
    assert "\n" not in str(err.value)


def test_decoder_smooths_frame_to_frame_jitter(codec):
    """Tokens that flip between a vowel frame and a noise frame every mel frame: with the decoder's smoothing
    (the default, 3 frames) the decoded audio's log-mel jitters less from frame to frame than without it."""
    from dataclasses import replace

    vowel_t, noise_t = codec.encode(utterance(220.0, seed=102))[[10, 35]]  # inside the vowel / the noise burst
    cfg = codec.config
    flip = np.stack([vowel_t if i % 2 else noise_t for i in range(40)])
    plain = Codec(replace(cfg, smooth_frames=1), codec.centroids)
    assert cfg.smooth_frames == 3

    def jitter(wave: np.ndarray) -> float:
        mel = codec.log_mel(wave)[2:-2]
        return float(np.abs(np.diff(mel, axis=0)).mean())

    assert jitter(codec.decode(flip)) < 0.85 * jitter(plain.decode(flip))  # 0.75 here
    steady = np.repeat(vowel_t[None], 20, axis=0)  # a steady sound is not changed in the middle
    a, b = codec.decode(steady), plain.decode(steady)
    assert np.abs(codec.log_mel(a)[5:-5] - codec.log_mel(b)[5:-5]).mean() < 1.0
    for bad in (0, 2):
        with pytest.raises(ValueError, match="smooth_frames"):
            CodecConfig(smooth_frames=bad)

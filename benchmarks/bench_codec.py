"""Demo speech codec vs a mel k-means + Griffin-Lim baseline, on held-out espeak-ng speech.

Builds a small corpus itself (espeak-ng voices of both genders at 110-260 words/min, plus synthetic
laughter), fits both codecs on the fitting utterances and, on held-out ones, measures per gender the
median F0 of the original and the decoded audio (librosa.pyin, 60-500 Hz), its relative error, the
duration ratio, and for laughter the burst rhythm (4-6 Hz energy modulation) before and after.

    .venv/bin/python benchmarks/bench_codec.py     # writes benchmarks/results/codec.json, prints a table
"""

from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

import librosa  # noqa: E402
import numpy as np  # noqa: E402
import soundfile as sf  # noqa: E402
import torch  # noqa: E402
from scipy.signal import lfilter  # noqa: E402

from ttslens.audio.backbones.demo.codec import Codec, CodecConfig, _kmeans, fit_codec  # noqa: E402

SR = 16000
SENTENCES = [
    "The quick brown fox jumps over the lazy dog near the riverbank.",
    "Please remember to bring your umbrella, it might rain this afternoon.",
    "She sells seashells by the seashore every summer morning.",
    "How many kilometres is it from here to the next village?",
    "I can't believe we finally finished the project on time!",
    "The museum opens at nine and closes at half past five.",
    "Would you like a cup of tea or would you rather have coffee?",
    "Seven silver swans swam silently across the frozen lake.",
    "Our train was delayed by forty minutes because of the storm.",
    "Can you hear the birds singing in the garden outside?",
    "The results of the experiment surprised everyone in the lab.",
    "My grandmother grows tomatoes, peppers and sweet basil.",
    "Turn left at the bakery, then walk straight for two blocks.",
    "Nobody expected the quiet student to win the chess tournament.",
    "The lighthouse keeper watched the ships sail through the fog.",
    "It is important to drink enough water when the weather is hot.",
    "Why did the orchestra stop playing in the middle of the song?",
    "A gentle breeze carried the smell of fresh bread down the street.",
    "Thank you so much for helping me move into my new apartment.",
    "The mountain trail is steep, rocky and very beautiful in autumn.",
    "Let's meet at the library after lunch to review the chapter.",
    "Electric cars are becoming more common in large cities.",
    "He whispered the secret so softly that nobody else could hear.",
    "Wow, that was the funniest joke I have heard all year!",
    "The children built a sandcastle with towers and a deep moat.",
    "Please speak slowly and clearly when you leave a message.",
    "Fresh snow covered the rooftops and the empty playground.",
    "Is this the right platform for the express train to the airport?",
    "The old clock in the hallway chimed exactly twelve times.",
    "Scientists discovered a new species of frog in the rainforest.",
    "I would love to visit Japan in the spring when the cherry trees bloom.",
    "Could you pass me the salt and pepper, please?",
    "The pilot announced that we would land in about twenty minutes.",
    "Every morning he jogs around the park before breakfast.",
    "Honestly, I think the second answer makes more sense.",
    "The painter mixed blue and yellow to make a bright green.",
]
VOICES = {"female": ["f1", "f2", "f3", "f4", "f5"], "male": ["m1", "m2", "m3", "m4", "m5", "m6", "m7"]}


def espeak(text: str, voice: str, wpm: int, pitch: int = 50) -> np.ndarray:
    """espeak-ng en-us speech, resampled to 16 kHz float32."""
    cmd = ["espeak-ng", "--stdout", "-v", f"en-us+{voice}", "-s", str(wpm), "-p", str(pitch), text]
    wav, sr = sf.read(io.BytesIO(subprocess.run(cmd, capture_output=True, check=True).stdout), dtype="float32")
    return librosa.resample(wav, orig_sr=sr, target_sr=SR).astype(np.float32)


def laughter(rng: np.random.Generator, seconds: float = 2.0) -> np.ndarray:
    """Synthetic laughter: "ha" bursts at 4-6 Hz (an /h/ puff, then breathy voicing at a raised, falling pitch
    through /a/-like formants, then a pause)."""
    n = int(seconds * SR)
    t = np.arange(n) / SR
    rate, f0 = rng.uniform(4, 6), rng.uniform(220, 380)
    cycle = (t * rate) % 1.0  # position inside the current "ha"
    voiced = np.clip((cycle - 0.12) / 0.05, 0, 1) * np.clip((0.6 - cycle) / 0.15, 0, 1)
    puff = np.exp(-(((cycle - 0.08) / 0.05) ** 2))
    pitch = f0 * (1.1 - 0.3 * cycle) * np.linspace(1.05, 0.9, n)
    pulses = np.maximum(np.sin(2 * np.pi * np.cumsum(pitch) / SR), 0) ** 6  # peaky glottal-like source
    noise = rng.standard_normal(n)
    source = voiced * ((pulses - pulses.mean()) / pulses.std() + 0.6 * noise) + 0.8 * puff * noise
    y = source * np.linspace(1.0, 0.6, n)
    for fc, bw in ((800, 120), (1250, 150), (2700, 250)):  # /a/ formants
        r = np.exp(-np.pi * bw / SR)
        y = lfilter([1 - r], [1, -2 * r * np.cos(2 * np.pi * fc / SR), r * r], y)
    return (0.3 * y / np.abs(y).max()).astype(np.float32)


def build_corpus(n_fit: int, n_test: int, seed: int = 0) -> tuple[list[np.ndarray], list[tuple[str, np.ndarray]]]:
    """(fitting waves, held-out [(group, wave)]): random voices and rates (every 10th fitting utterance is
    laughter); held-out speech alternates genders over 5 voices each, rates 110-260 wpm, and sentences that
    are not in the fitting set, followed by 2 laughs."""
    rng = np.random.default_rng(seed)
    held_out_sentences = SENTENCES[-8:]
    fit, test = [], []
    for i in range(n_fit):
        gender = "female" if i % 2 else "male"
        voice = VOICES[gender][rng.integers(len(VOICES[gender]))]
        if i % 10 == 9:
            fit.append(laughter(rng, rng.uniform(1.0, 2.5)))
            continue
        fit.append(espeak(SENTENCES[rng.integers(len(SENTENCES) - 8)], voice, int(rng.integers(110, 261))))
    for i in range(n_test):
        gender = "female" if i % 2 else "male"
        voice = VOICES[gender][i // 2 % len(VOICES[gender])]
        test.append((gender, espeak(held_out_sentences[i % 8], voice, int(110 + 150 * (i / max(n_test - 1, 1))))))
    test += [("laughter", laughter(rng)) for _ in range(2)]
    return fit, test


class MelKMeansGriffinLim:
    """Baseline: k-means over per-frame log-mel spectra (hop 640), decoded by librosa's Griffin-Lim."""

    def __init__(self, n_clusters: int = 512, n_mels: int = 80, n_fft: int = 1280, hop: int = 640, seed: int = 0):
        self.n_clusters, self.n_mels, self.n_fft, self.hop, self.seed = n_clusters, n_mels, n_fft, hop, seed

    def _logmel(self, wave: np.ndarray) -> np.ndarray:
        n = -(-len(wave) // self.hop) * self.hop
        mel = librosa.feature.melspectrogram(
            y=np.pad(wave, (0, n - len(wave))), sr=SR, n_fft=self.n_fft, hop_length=self.hop, n_mels=self.n_mels
        )
        return np.log(mel[:, : n // self.hop] + 1e-9).T

    def fit(self, waves: list[np.ndarray]) -> MelKMeansGriffinLim:
        frames = np.concatenate([self._logmel(w) for w in waves])
        gen = torch.Generator().manual_seed(self.seed)
        self.centroids = _kmeans(torch.from_numpy(frames).float(), self.n_clusters, 60, gen).numpy()
        return self

    def encode(self, wave: np.ndarray) -> np.ndarray:
        x, c = self._logmel(wave), self.centroids
        return ((x * x).sum(1, keepdims=True) - 2 * x @ c.T + (c * c).sum(1)).argmin(1)

    def decode(self, tokens: np.ndarray) -> np.ndarray:
        mel = np.exp(self.centroids[np.r_[tokens, tokens[-1:]]]).T  # T + 1 centred STFT frames for T * hop
        stft = librosa.feature.inverse.mel_to_stft(mel, sr=SR, n_fft=self.n_fft)
        return librosa.griffinlim(
            stft,
            n_iter=32,
            hop_length=self.hop,
            n_fft=self.n_fft,
            length=len(tokens) * self.hop,
            random_state=self.seed,
        ).astype(np.float32)


def pitch(wave: np.ndarray) -> tuple[float, float]:
    """(median F0 in Hz over pyin-voiced frames, nan if none; voiced fraction of frames)."""
    f0 = librosa.pyin(wave, fmin=60, fmax=500, sr=SR, frame_length=1024)[0]
    voiced = np.isfinite(f0)
    return (float(np.median(f0[voiced])) if voiced.any() else float("nan")), float(voiced.mean())


def mel_distance(orig: np.ndarray, decoded: np.ndarray) -> float:
    """RMS log-mel difference (dB; 40 bands, 32 ms windows) over frames within 50 dB of the loudest one."""
    mel = [
        librosa.power_to_db(
            librosa.feature.melspectrogram(y=y[: len(orig)], sr=SR, n_fft=512, hop_length=160, n_mels=40)
        )
        for y in (orig, decoded)
    ]
    keep = mel[0].max(0) > mel[0].max() - 50
    return float(np.sqrt(np.mean((np.maximum(mel[0], -80) - np.maximum(mel[1], -80))[:, keep] ** 2)))


def burst_rhythm(wave: np.ndarray) -> tuple[float, np.ndarray]:
    """(dominant 2-10 Hz rate of the RMS envelope, the dB envelope at 100 Hz)."""
    rms = librosa.feature.rms(y=wave, frame_length=400, hop_length=160)[0]
    env = 20 * np.log10(rms + 1e-4)
    spec = np.abs(np.fft.rfft(env - env.mean(), 4096))
    freqs = np.fft.rfftfreq(4096, 0.01)
    band = (freqs >= 2) & (freqs <= 10)
    return float(freqs[band][spec[band].argmax()]), env


def evaluate(name: str, codec, test: list[tuple[str, np.ndarray]], out_wavs: Path | None) -> dict:
    """Per group (female / male / laughter): F0, voicing, duration, spectral distance; plus codec speed."""
    per: dict[str, list[dict]] = {}
    t_enc = t_dec = 0.0
    for i, (group, wave) in enumerate(test):
        t = time.perf_counter()
        tokens = codec.encode(wave)
        t_enc += time.perf_counter() - t
        t = time.perf_counter()
        decoded = codec.decode(tokens)
        t_dec += time.perf_counter() - t
        (f0_o, voiced_o), (f0_d, voiced_d) = pitch(wave), pitch(decoded)
        row = {
            "f0_orig": f0_o,
            "f0_decoded": f0_d,
            "f0_rel_err": abs(f0_d / f0_o - 1) if np.isfinite(f0_d) else 1.0,  # no pitch found: count as 100%
            "no_f0": float(not np.isfinite(f0_d)),
            "voiced_orig": voiced_o,
            "voiced_decoded": voiced_d,
            "exact_length": float(len(decoded) == len(tokens) * 640),
            "duration_ratio": len(decoded) / len(wave),
            "mel_db": mel_distance(wave, decoded),
        }
        if group == "laughter":
            (rate_o, env_o), (rate_d, env_d) = burst_rhythm(wave), burst_rhythm(decoded[: len(wave)])
            row.update(rate_orig=rate_o, rate_decoded=rate_d, envelope_corr=float(np.corrcoef(env_o, env_d)[0, 1]))
        per.setdefault(group, []).append(row)
        if out_wavs is not None and (i % 5 == 0 or group == "laughter"):
            out_wavs.mkdir(parents=True, exist_ok=True)
            sf.write(out_wavs / f"{i:02d}_{group}_orig.wav", wave, SR)
            sf.write(out_wavs / f"{i:02d}_{group}_{name}.wav", decoded, SR)
    summary: dict = {}
    for group, rows in per.items():
        summary[group] = {k: float(np.nanmean([r[k] for r in rows])) for k in rows[0]}  # F0: mean of medians
        summary[group].update(f0_rel_err_max=max(r["f0_rel_err"] for r in rows), n=len(rows))
        summary[group]["no_f0"] = int(sum(r["no_f0"] for r in rows))
    seconds = sum(len(w) for _, w in test) / SR
    summary["speed_x_realtime"] = {"encode": seconds / t_enc, "decode": seconds / t_dec}
    return summary


def table(results: dict) -> str:
    """The results as a fixed-width text table."""
    head = f"{'codec':<9}{'group':<10}{'F0 orig':>8}{'F0 dec':>8}{'err':>7}{'max err':>8}{'no F0':>6}"
    head += f"{'voiced o/d':>12}{'dur':>7}{'mel dB':>7}"
    lines = [head, "-" * len(head)]
    for name, key in (("ours", "ours"), ("baseline", "baseline_melkmeans512_griffinlim")):
        for group in ("female", "male", "laughter"):
            r = results[key][group]
            lines.append(
                f"{name:<9}{group:<10}{r['f0_orig']:>8.1f}{r['f0_decoded']:>8.1f}{r['f0_rel_err']:>7.1%}"
                f"{r['f0_rel_err_max']:>8.1%}{r['no_f0']:>6d}{r['voiced_orig']:>7.2f}/{r['voiced_decoded']:.2f}"
                f"{r['duration_ratio']:>7.3f}{r['mel_db']:>7.1f}"
            )
        r, speed = results[key]["laughter"], results[key]["speed_x_realtime"]
        lines.append(
            f"{'':<9}laughter burst rate {r['rate_orig']:.1f} -> {r['rate_decoded']:.1f} Hz, energy-envelope "
            f"corr {r['envelope_corr']:.2f}; speed: encode {speed['encode']:.0f}x, decode {speed['decode']:.0f}x "
            "real time (1 thread)"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--fit", type=int, default=60, help="fitting utterances (every 10th is laughter)")
    ap.add_argument("--test", type=int, default=20, help="held-out utterances, half per gender (plus 2 laughs)")
    ap.add_argument("--seed", type=int, default=0, help="corpus and k-means seed")
    ap.add_argument("--out", type=Path, default=HERE / "results" / "codec.json", help="results JSON")
    ap.add_argument("--out-wavs", type=Path, default=None, help="also save some original/decoded WAVs here")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)

    t = time.perf_counter()
    fit, test = build_corpus(args.fit, args.test, args.seed)
    fit_seconds, test_seconds = sum(map(len, fit)) / SR, sum(len(w) for _, w in test) / SR
    print(f"corpus: {fit_seconds:.0f} s fitting, {test_seconds:.0f} s held out ({time.perf_counter() - t:.0f} s)")
    t = time.perf_counter()
    ours = fit_codec(fit, CodecConfig(seed=args.seed), progress=False)
    fit_s = time.perf_counter() - t
    with tempfile.TemporaryDirectory() as tmp:
        ours.save(tmp)
        size = sum(f.stat().st_size for f in Path(tmp).iterdir())
        assert np.array_equal(Codec.load(tmp).encode(test[0][1]), ours.encode(test[0][1]))
    baseline = MelKMeansGriffinLim(seed=args.seed).fit(fit)
    for codec in (ours, baseline):  # warm-up: librosa loads its submodules lazily
        codec.decode(codec.encode(test[0][1][:SR]))
    results = {
        "corpus": {"fit_seconds": fit_seconds, "test_seconds": test_seconds, "test_utterances": len(test)},
        "codec": {
            "config": asdict(ours.config),
            "codes_per_frame": ours.n_codebooks,
            "codebook_size": ours.codebook_size,
            "fit_s": fit_s,
            "saved_bytes": size,
        },
        "ours": evaluate("ours", ours, test, args.out_wavs),
        "baseline_melkmeans512_griffinlim": evaluate("baseline", baseline, test, args.out_wavs),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))
    print(table(results))
    shape = f"{ours.n_codebooks} x {ours.codebook_size} codes per frame"
    print(f"codec: {shape}, saved {size / 1024:.0f} KiB, fitted in {fit_s:.1f} s -> {args.out}")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    sys.exit(main())

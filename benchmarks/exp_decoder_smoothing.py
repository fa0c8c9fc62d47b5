"""Choose the demo codec decoder's log-mel smoothing on sentences no benchmark reports (bench_words.py's DEV list).

Every DEV sentence × 4 corpus voices × `--seeds` seeds is generated once with the voice's named prompt (the
backbone's default sampler); the same tokens are then decoded with each smoothing (`CodecConfig.smooth_frames`:
a triangular window over that many 20-ms mel frames, 1 = off; `median3`: a 3-frame median) and heard by
faster-whisper tiny.en. The codec round trip of raw espeak-ng (seed 0 only) is decoded the same ways. Writes mean,
median and capped-at-1 mean WER per decoder, and how many utterances each smoothing makes better or worse than
no smoothing (paired: same tokens).

    python benchmarks/exp_decoder_smoothing.py            # → results/decoder_smoothing_dev.json; ≈ 8 min on 2 cores
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
from scipy.ndimage import median_filter

sys.path.insert(0, str(Path(__file__).parent))
from bench_words import DEV  # noqa: E402

from ttslens.audio import load_backbone  # noqa: E402
from ttslens.audio.backbones.demo.codec import Codec  # noqa: E402
from ttslens.audio.backbones.demo.espeak import VOICES, speak  # noqa: E402
from ttslens.audio.backbones.demo.tokenizer import PHONE_COLUMNS  # noqa: E402
from ttslens.audio.measures.asr import ASR  # noqa: E402
from ttslens.audio.measures.wer import wer  # noqa: E402
from ttslens.sae.files import atomic_write_json  # noqa: E402

RESULTS = Path(__file__).parent / "results"


def decoders(codec: Codec) -> dict:
    """name → tokens [T, C] → wave."""
    out = {f"smooth{n}": Codec(replace(codec.config, smooth_frames=n), codec.centroids).decode for n in (1, 3, 5)}
    plain = Codec(replace(codec.config, smooth_frames=1), codec.centroids)

    def median3(tokens) -> np.ndarray:  # the same decoder with a 3-frame median in place of the mean
        orig = plain.mel_of
        plain.mel_of = lambda t: median_filter(orig(t), size=(3, 1), mode="nearest")
        try:
            return plain.decode(tokens)
        finally:
            plain.mel_of = orig

    return out | {"median3": median3}


def summary(w: list[float], base: list[float]) -> dict:
    a, b = np.array(w), np.array(base)
    return {
        "n": len(w),
        "mean": round(float(a.mean()), 4),
        "median": round(float(np.median(a)), 4),
        "mean_capped_at_1": round(float(np.minimum(a, 1).mean()), 4),
        "better_than_smooth1": int((a < b).sum()),
        "worse_than_smooth1": int((a > b).sum()),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--voices", type=int, default=4)
    ap.add_argument("--out", default=str(RESULTS / "decoder_smoothing_dev.json"))
    args = ap.parse_args()
    bb = load_backbone("demo")
    prompts, asr = bb.voices(), ASR.require("tiny.en")
    dec = decoders(bb.codec)
    voices = [VOICES[(i * len(VOICES)) // args.voices] for i in range(args.voices)]
    wers: dict[str, list[float]] = {}
    t0 = time.perf_counter()
    for ti, text in enumerate(DEV):
        for vi, voice in enumerate(voices):
            for s in range(args.seeds):
                seed = 7000 + 100 * ti + 10 * vi + s
                frames = bb.generate(text, prompt=prompts[voice.name].as_prompt(), seed=seed).tokens
                runs = [("generated", frames)]
                if s == 0:
                    runs.append(("codec", bb.encode_audio(speak(text, voice, 170, bb.sample_rate), bb.sample_rate)))
                for cond, tok in runs:
                    codes = bb.as_tokens(tok)[:, PHONE_COLUMNS:].numpy()  # the codec's columns
                    for name, decode in dec.items():
                        wers.setdefault(f"{cond}:{name}", []).append(wer(text, asr.text(decode(codes), bb.sample_rate)))
        print(ti, {k: round(statistics.mean(v), 3) for k, v in wers.items()}, f"{time.perf_counter() - t0:.0f} s")
    res = {k: summary(v, wers[k.split(":")[0] + ":smooth1"]) for k, v in wers.items()}
    atomic_write_json(
        args.out,
        {
            "sentences": "dev",
            "voices": [v.name for v in voices],
            "seeds": args.seeds,
            "asr": f"faster-whisper {asr.name}",
            "results": res,
            "wer": wers,
            "seconds": round(time.perf_counter() - t0, 1),
            "command": " ".join(["python benchmarks/exp_decoder_smoothing.py", *sys.argv[1:]]),
        },
    )
    for k, v in res.items():
        print(k, v)


if __name__ == "__main__":
    main()

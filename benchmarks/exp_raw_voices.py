"""How well does Whisper tiny.en hear raw espeak-ng, per corpus voice and speaking rate? (the codec's ceiling)

Every demo corpus voice, and plain `en-us`, says the first `--texts` natural sentences of bench_words.py at each
`--rates` words per minute; faster-whisper tiny.en transcribes them. Writes the mean WER per voice and rate, with
every transcript.

    python benchmarks/exp_raw_voices.py        # → results/raw_voices.json; ≈ 3.5 min on 2 cores
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from bench_words import NATURAL  # noqa: E402

from ttslens.audio.backbones.demo.espeak import VOICES, Voice, speak  # noqa: E402
from ttslens.audio.measures.asr import ASR  # noqa: E402
from ttslens.audio.measures.wer import wer  # noqa: E402
from ttslens.sae.files import atomic_write_json  # noqa: E402

RESULTS = Path(__file__).parent / "results"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--texts", type=int, default=10)
    ap.add_argument("--rates", default="130,170", help="espeak-ng words per minute, comma-separated")
    ap.add_argument("--out", default=str(RESULTS / "raw_voices.json"))
    args = ap.parse_args()
    asr = ASR.require("tiny.en")
    texts = NATURAL[: args.texts]
    voices = [*VOICES, Voice("en-us", "en-us", "", 50)]
    mean: dict[str, dict[str, float]] = {}
    rows = []
    t0 = time.perf_counter()
    for rate in (int(r) for r in args.rates.split(",")):
        for v in voices:
            ws = []
            for text in texts:
                hyp = asr.text(speak(text, v, rate), 16000)
                ws.append(wer(text, hyp))
                rows.append({"voice": v.name, "rate": rate, "text": text, "transcript": hyp, "wer": round(ws[-1], 4)})
            mean.setdefault(v.name, {})[str(rate)] = round(statistics.mean(ws), 4)
            print(v.name, rate, mean[v.name][str(rate)], f"{time.perf_counter() - t0:.0f} s", flush=True)
    atomic_write_json(
        args.out,
        {
            "asr": f"faster-whisper {asr.name}",
            "texts": len(texts),
            "mean_wer": mean,
            "rows": rows,
            "seconds": round(time.perf_counter() - t0, 1),
            "command": " ".join(["python benchmarks/exp_raw_voices.py", *sys.argv[1:]]),
        },
    )


if __name__ == "__main__":
    main()

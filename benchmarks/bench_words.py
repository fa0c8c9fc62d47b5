"""Does the demo backbone say the words? WER by an independent offline Whisper (faster-whisper tiny.en).

For held-out corpus texts (no tags) × corpus voices, three conditions on the same text:
1. raw espeak-ng speech of the text in that voice (what Whisper can do on this kind of speech);
2. the demo codec's round trip of that audio (encode → decode);
3. the demo backbone's generated speech of the text in that voice (its named voice prompt);
4. the same without a prompt (the voice is the sampling seed's).
Writes results/words.json (per-utterance transcripts and WER, means per condition).

    python benchmarks/bench_words.py --texts 16 --voices 4
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

from ttslens.audio import load_backbone
from ttslens.audio.backbones.demo.espeak import VOICES, speak
from ttslens.audio.measures.asr import ASR
from ttslens.audio.measures.wer import wer

RESULTS = Path(__file__).parent / "results"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--texts", type=int, default=12)
    ap.add_argument("--voices", type=int, default=4)
    ap.add_argument("--rate", type=int, default=170, help="espeak-ng words per minute for the raw speech")
    ap.add_argument("--backbone", default="demo", help="backbone name or assets directory")
    ap.add_argument("--out", default=str(RESULTS / "words.json"))
    args = ap.parse_args()
    bb = load_backbone(args.backbone)
    prompts = bb.voices()
    asr = ASR.require("tiny.en")
    pool = [it.text for it in bb.default_corpus().items("heldout") if "[" not in it.text and 20 <= len(it.text) <= 90]
    texts = pool[: args.texts]
    voices = [VOICES[(i * len(VOICES)) // args.voices] for i in range(args.voices)]  # spread over both genders
    rows, t0 = [], time.perf_counter()
    for ti, text in enumerate(texts):
        for vi, voice in enumerate(voices):
            raw = speak(text, voice, args.rate, bb.sample_rate)
            round_trip = bb.decode(bb.encode_audio(raw, bb.sample_rate))
            seed = 1000 * ti + vi
            voiced = bb.decode(bb.generate(text, prompt=prompts[voice.name].as_prompt(), seed=seed).tokens)
            gen = bb.decode(bb.generate(text, seed=seed).tokens)
            row = {"text": text, "voice": voice.name, "seed": seed}
            for name, wave in (("raw", raw), ("codec", round_trip), ("generated", voiced), ("no_prompt", gen)):
                hyp = asr.text(wave, bb.sample_rate)
                row[name] = {"transcript": hyp, "wer": round(wer(text, hyp), 4), "seconds": round(len(wave) / 16000, 2)}
            rows.append(row)
            print(f"{ti}/{vi}", {k: row[k]["wer"] for k in ("raw", "codec", "generated", "no_prompt")}, flush=True)
    conds = ("raw", "codec", "generated", "no_prompt")
    means = {k: round(statistics.mean(r[k]["wer"] for r in rows), 4) for k in conds}
    medians = {k: round(statistics.median(r[k]["wer"] for r in rows), 4) for k in conds}
    by_voice = {
        v.name: {k: round(statistics.mean(r[k]["wer"] for r in rows if r["voice"] == v.name), 4) for k in conds}
        for v in voices
    }
    out = {
        "asr": f"faster-whisper {asr.name}",
        "backbone": bb.info.get("command", args.backbone) if hasattr(bb, "info") else args.backbone,
        "texts": len(texts),
        "voices": [v.name for v in voices],
        "mean_wer": means,
        "median_wer": medians,
        "mean_wer_by_voice": by_voice,
        "seconds": round(time.perf_counter() - t0, 1),
        "rows": rows,
        "command": " ".join(["python benchmarks/bench_words.py", *sys.argv[1:]]),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=1))
    print("mean WER", means, "median", medians)


if __name__ == "__main__":
    main()

"""Does the demo backbone say the words? WER by an independent offline Whisper (faster-whisper tiny.en).

For texts × corpus voices, four conditions on the same text. `--sentences corpus` takes held-out corpus texts
(the grammar's word salad, no tags); `--sentences natural` takes everyday sentences written for this benchmark,
outside the corpus grammar and partly outside its vocabulary (the demo reads them through its phoneme front end).
1. raw espeak-ng speech of the text in that voice (what Whisper can do on this kind of speech);
2. the demo codec's round trip of that audio (encode → decode);
3. the demo backbone's generated speech of the text in that voice (its named voice prompt);
4. the same without a prompt (the voice is the sampling seed's).
Writes results/words.json (per-utterance transcripts and WER, means per condition).

    python benchmarks/bench_words.py --texts 16 --voices 4
    python benchmarks/bench_words.py --sentences natural --texts 16 --voices 4   # → results/words_natural.json
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
NATURAL = [
    "the door is open.",
    "hello there, this is the demo voice.",
    "please close the window before you leave.",
    "we are going to the market on sunday.",
    "my sister plays the piano every evening.",
    "the train to the city leaves at nine.",
    "can you hear the birds in the garden?",
    "he forgot his umbrella at the office.",
    "the coffee is too hot to drink.",
    "they built a small house near the river.",
    "turn left at the next corner.",
    "our teacher told us a funny story.",
    "the children are playing in the park.",
    "i will call you when i get home.",
    "this soup needs a little more salt.",
    "the library closes early on fridays.",
    "she painted the kitchen bright yellow.",
    "a cold wind blew across the field.",
    "do you know where my keys are?",
    "the museum opens at ten in the morning.",
]
DEV = [  # for choosing sampler settings only (`exp` runs); never reported as the benchmark's WER
    "the bus was late again this morning.",
    "please bring two chairs from the hall.",
    "the dog sleeps under the kitchen table.",
    "we watched a film about the ocean.",
    "my brother works at the bakery downtown.",
    "the lamp in the corner is broken.",
    "she reads the news before breakfast.",
    "put the books back on the shelf.",
    "the snow melted quickly in the sun.",
    "a small boat crossed the quiet lake.",
]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--texts", type=int, default=12)
    ap.add_argument("--sentences", choices=("corpus", "natural", "dev"), default="corpus")
    ap.add_argument("--voices", type=int, default=4)
    ap.add_argument("--rate", type=int, default=170, help="espeak-ng words per minute for the raw speech")
    ap.add_argument("--backbone", default="demo", help="backbone name or assets directory")
    ap.add_argument("--temperature", type=float, default=None, help="sampler (default: the backbone's own)")
    ap.add_argument("--top-k", type=int, default=None, help="sampler (default: the backbone's own)")
    ap.add_argument("--out", default="", help="default: results/words.json, words_natural.json or words_dev.json")
    args = ap.parse_args()
    name = {"corpus": "words", "natural": "words_natural", "dev": "words_dev"}[args.sentences]
    args.out = args.out or str(RESULTS / f"{name}.json")
    sampler = {"temperature": args.temperature, "top_k": args.top_k}
    bb = load_backbone(args.backbone)
    prompts = bb.voices()
    asr = ASR.require("tiny.en")
    if args.sentences in ("natural", "dev"):
        pool = NATURAL if args.sentences == "natural" else DEV
    else:
        items = bb.default_corpus().items("heldout")
        pool = [it.text for it in items if "[" not in it.text and 20 <= len(it.text) <= 90]
    if len(pool) < args.texts:
        raise SystemExit(f"only {len(pool)} {args.sentences} sentences: ask for --texts {len(pool)} or fewer")
    texts = pool[: args.texts]
    voices = [VOICES[(i * len(VOICES)) // args.voices] for i in range(args.voices)]  # spread over both genders
    rows, t0 = [], time.perf_counter()
    for ti, text in enumerate(texts):
        for vi, voice in enumerate(voices):
            raw = speak(text, voice, args.rate, bb.sample_rate)
            round_trip = bb.decode(bb.encode_audio(raw, bb.sample_rate))
            seed = 1000 * ti + vi
            voiced = bb.decode(bb.generate(text, prompt=prompts[voice.name].as_prompt(), seed=seed, **sampler).tokens)
            gen = bb.decode(bb.generate(text, seed=seed, **sampler).tokens)
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
        "sentences": args.sentences,
        "sampler": {k: v if v is not None else bb.sampling[k] for k, v in sampler.items()},
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

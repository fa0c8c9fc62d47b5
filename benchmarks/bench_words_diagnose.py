"""Where does the demo lose the words? Held-out corpus utterances (no tags, no instruct), each in its own voice,
heard by faster-whisper tiny.en under four conditions:

1. `codec_true`: the utterance's true frames, decoded (the codec's own loss);
2. `tf_greedy` / `tf_sampled`: the LM teacher-forced on the true frames, its depth head choosing every frame's
   codes (argmax / the default sampler) given the true history, phonemes and durations — the per-frame
   code prediction alone;
3. `free`: ordinary generation of the same text with the voice's named prompt (durations and history its own).

    python benchmarks/bench_words_diagnose.py --items 12     # → results/words_diagnose.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

import torch

from ttslens.audio import load_backbone
from ttslens.audio.backbones.demo.tokenizer import PHONE_COLUMNS
from ttslens.audio.measures.asr import ASR
from ttslens.audio.measures.wer import wer
from ttslens.sae.sampling import generators

RESULTS = Path(__file__).parent / "results"


def depth_codes(bb, h_ND: torch.Tensor, frames_NC: torch.Tensor, seed: int, temperature: float) -> torch.Tensor:
    """The depth head's codes for each frame given its hidden state and its true phoneme columns."""
    return bb.sample_codes(h_ND, frames_NC[:, :PHONE_COLUMNS], generators([seed] * len(frames_NC)), temperature)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--items", type=int, default=12)
    ap.add_argument("--backbone", default="demo")
    ap.add_argument("--out", default=str(RESULTS / "words_diagnose.json"))
    args = ap.parse_args()
    bb, asr = load_backbone(args.backbone), ASR.require("tiny.en")
    items = [
        it
        for it in bb.default_corpus().items("heldout")
        if "[" not in it.text and not it.instruct and not it.truth.get("spontaneous") and 20 <= len(it.text) <= 90
    ][: args.items]
    voices = bb.voices()
    conds = ("codec_true", "tf_greedy", "tf_sampled", "free")
    rows = []
    with torch.no_grad():
        for i, it in enumerate(items):
            n = len(it.tokens)
            h = bb.teacher_forced(it.text, it.tokens).final[-n - 1 : -1]
            waves = {
                "codec_true": bb.decode(it.tokens),
                "tf_greedy": bb.decode(depth_codes(bb, h, it.tokens, i, 0.0)),
                "tf_sampled": bb.decode(depth_codes(bb, h, it.tokens, i, 1.0)),
                "free": bb.synthesize(it.text, prompt=voices[it.truth["voice"]].as_prompt(), seed=i)[0],
            }
            row = {"text": it.text, "voice": it.truth["voice"]}
            for k, w in waves.items():
                hyp = asr.text(w, bb.sample_rate)
                row[k] = {"transcript": hyp, "wer": round(wer(it.text, hyp), 4)}
            rows.append(row)
            print(i, {k: row[k]["wer"] for k in conds}, flush=True)
    out = {
        "asr": f"faster-whisper {asr.name}",
        "items": len(rows),
        "mean_wer": {k: round(statistics.mean(r[k]["wer"] for r in rows), 4) for k in conds},
        "median_wer": {k: round(statistics.median(r[k]["wer"] for r in rows), 4) for k in conds},
        "rows": rows,
        "command": " ".join(["python benchmarks/bench_words_diagnose.py", *sys.argv[1:]]),
    }
    Path(args.out).write_text(json.dumps(out, indent=1))
    print("mean", out["mean_wer"], "median", out["median_wer"])


if __name__ == "__main__":
    main()

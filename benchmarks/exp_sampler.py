"""Choose the demo backbone's default sampler on sentences no benchmark reports (bench_words.py's DEV list).

For each setting "temperature,top_k,top_p[,timing[,fine]]" (timing: the stay / next / stop decision's
temperature; fine: the codec's finer residual stages'; "-": follow temperature; absent: the backbone's own),
every DEV sentence × voice is generated with that voice's named prompt (one batch per voice) and heard by
faster-whisper tiny.en. Prints and writes mean / median WER per setting.

    python benchmarks/exp_sampler.py --seeds 3 --settings "1.0,50,0.95,-;0.7,10,0.95,-;0.7,10,0.95,1.0"
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from bench_words import DEV  # noqa: E402

from ttslens.audio import load_backbone  # noqa: E402
from ttslens.audio.backbones.demo.backbone import DemoBackbone  # noqa: E402
from ttslens.audio.backbones.demo.espeak import VOICES  # noqa: E402
from ttslens.audio.measures.asr import ASR  # noqa: E402
from ttslens.audio.measures.wer import wer  # noqa: E402

RESULTS = Path(__file__).parent / "results"


def parse(setting: str) -> dict:
    t, k, p, *rest = setting.split(",")
    own = {"timing": DemoBackbone.timing_temperature, "fine": DemoBackbone.fine_temperature}
    cfg = {"temperature": float(t), "top_k": int(k), "top_p": float(p)}
    for name, x in zip(own, (rest + ["", ""])[:2], strict=True):
        cfg[name] = own[name] if x == "" else None if x == "-" else float(x)
    return cfg


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--settings", required=True, help='";"-separated "temperature,top_k,top_p[,timing[,fine]]" settings'
    )
    ap.add_argument("--voices", type=int, default=4)
    ap.add_argument("--seeds", type=int, default=1, help="seeds per sentence and voice")
    ap.add_argument("--backbone", default="demo")
    ap.add_argument("--out", default=str(RESULTS / "sampler_dev.json"))
    args = ap.parse_args()
    bb = load_backbone(args.backbone)
    asr = ASR.require("tiny.en")
    prompts = bb.voices()
    voices = [VOICES[(i * len(VOICES)) // args.voices] for i in range(args.voices)]
    results = []
    for setting in args.settings.split(";"):
        cfg, t0, rows = parse(setting), time.perf_counter(), []
        bb.timing_temperature, bb.fine_temperature = cfg["timing"], cfg["fine"]
        for vi, voice in enumerate(voices):
            for s in range(args.seeds):
                seeds = [1000 * ti + 10 * vi + s for ti in range(len(DEV))]
                gens = bb.generate(
                    DEV,
                    prompt=prompts[voice.name].as_prompt(),
                    seed=seeds,
                    temperature=cfg["temperature"],
                    top_k=cfg["top_k"],
                    top_p=cfg["top_p"],
                )
                for text, g in zip(DEV, gens, strict=True):
                    hyp = asr.text(bb.decode(g.tokens), bb.sample_rate)
                    rows.append({"text": text, "voice": voice.name, "wer": round(wer(text, hyp), 4), "hyp": hyp})
        w = [r["wer"] for r in rows]
        res = {
            "setting": cfg,
            "mean_wer": round(statistics.mean(w), 4),
            "median_wer": round(statistics.median(w), 4),
            "n": len(w),
            "seconds": round(time.perf_counter() - t0, 1),
            "rows": rows,
        }
        results.append(res)
        print(setting, res["mean_wer"], res["median_wer"], res["seconds"], "s", flush=True)
    bb.timing_temperature, bb.fine_temperature = DemoBackbone.timing_temperature, DemoBackbone.fine_temperature
    out = {
        "asr": f"faster-whisper {asr.name}",
        "sentences": "dev",
        "voices": [v.name for v in voices],
        "results": results,
        "command": " ".join(["python benchmarks/exp_sampler.py", *sys.argv[1:]]),
    }
    Path(args.out).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()

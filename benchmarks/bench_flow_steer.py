"""Multi-layer flow steering vs single-layer steering on the demo backbone, like for like: the same feature of
layer 3 (each attribute's strongest probe feature, `bench_crosslayer.py`'s presets), the same strengths (in
units of each feature's mean activation), texts and voices; single = `3/F=α`, flow = `3/F:flow=α` (the feature
and its flow graph over all six layers' residual SAEs, e.g. e^(−0.05·|l − 3|)). Attribute measured from the
audio (`steer-eval`), content by Whisper WER and text match.

    python benchmarks/bench_flow_steer.py --texts 4 --voices 3     # → results/flow_steer.json; ~20 min on 2 cores
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

RESULTS = Path(__file__).parent / "results"
KEEP = ("alpha", "mean", "ci_lo", "ci_hi", "wer", "text_match", "n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", default="runs/flow")
    ap.add_argument("--texts", type=int, default=4)
    ap.add_argument("--voices", type=int, default=3)
    ap.add_argument("--alphas", default="-4,0,4")
    ap.add_argument("--attributes", default="rate,gender,laughter")
    ap.add_argument("--out", default=str(RESULTS / "flow_steer.json"))
    args = ap.parse_args()
    from ttslens.audio.steering.evaluate import SteerEvalConfig, run_steer_eval

    work = Path(args.work)
    saes = [str(work / f"resid_L{layer}") for layer in range(6)]
    presets = json.loads((work / "resid_L3" / "presets.json").read_text())["presets"]
    alphas = [float(a) for a in args.alphas.split(",")]
    out = {"alphas": alphas, "texts": args.texts, "voices": args.voices, "runs": {}}
    for attribute in args.attributes.split(","):
        plus = presets[attribute]["plus"]
        if not plus:
            out["runs"][attribute] = {"skipped": presets[attribute].get("skipped", "no probe feature")}
            continue
        f = plus[0]["feature"]
        for mode, spec in (("single", f"3/{f}"), ("flow", f"3/{f}:flow")):
            cfg = SteerEvalConfig(
                sae=saes, attribute=attribute, steer=spec, alphas=alphas, texts=args.texts, voices=args.voices,
                out=str(work / "steer" / f"{attribute}_{mode}"), progress=False,
            )  # fmt: skip
            res = run_steer_eval(cfg)
            out["runs"].setdefault(attribute, {"feature": f})[mode] = {
                "rows": [{k: r.get(k) for k in KEEP} for r in res["rows"]],
                "png": res["png"],
            }
            print(attribute, mode, [(r["alpha"], r["mean"], r.get("wer")) for r in res["rows"]], flush=True)
    out["command"] = " ".join(["python benchmarks/bench_flow_steer.py", *sys.argv[1:]])
    Path(args.out).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()

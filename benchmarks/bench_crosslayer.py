"""Features across layers on the demo backbone: SAE Match over every layer's residual SAE (match quality,
layer-skip EV and speech CE by layer, persistence), and the feature-flow graphs of the laughter / gender /
rate probe features of layer 3 (with MLP and attention SAEs for layers 3 and 4).

    python benchmarks/bench_crosslayer.py            # → results/crosslayer.json, results/crosslayer_match.png,
                                                     #   results/crosslayer_flow/*.{json,png,html}; ~12 min on 2 cores
SAEs (BatchTopK, 1024 latents, k = 16, 400k tokens each, each with its own seed: SAEs that share an
initialisation match through it, not through their features) are trained into --work when missing.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

RESULTS = Path(__file__).parent / "results"


def train_missing(work: Path, layer: int, hook: str, tokens: int) -> Path:
    from ttslens.audio.harvest import train_sae
    from ttslens.sae.base import SAEConfig
    from ttslens.sae.training import TrainConfig

    out = work / f"{hook}_L{layer}"
    if not (out / "cfg.json").exists():
        seed = 10 * layer + ("resid", "mlp", "attn").index(hook)  # independent inits: a shared one would "match"
        cfg = TrainConfig(
            sae=SAEConfig(d_sae=1024, k=16), backbone="demo", layer=layer, hook=hook, tokens=tokens, seed=seed,
            out=str(out),
        )  # fmt: skip
        train_sae(cfg, progress=False)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", default="runs/flow", help="where the SAEs are (trained there when missing)")
    ap.add_argument("--tokens", type=int, default=400_000)
    ap.add_argument("--items", type=int, default=24, help="held-out utterances for the layer-skip evaluation")
    ap.add_argument("--flow-layer", type=int, default=3)
    ap.add_argument("--out", default=str(RESULTS / "crosslayer.json"))
    args = ap.parse_args()
    from ttslens.audio.harvest import run_match
    from ttslens.audio.steering.presets import PresetConfig, resolve_presets
    from ttslens.sae.flow import FlowConfig, run_flow
    from ttslens.sae.match import MatchConfig

    work = Path(args.work)
    resid = [train_missing(work, layer, "resid", args.tokens) for layer in range(6)]
    for layer in (args.flow_layer, args.flow_layer + 1):
        for hook in ("mlp", "attn"):
            train_missing(work, layer, hook, args.tokens)
    match = run_match(MatchConfig(sae=[str(p) for p in resid], out=str(work / "match"), items=args.items))
    stem = Path(args.out).stem  # figures named after the JSON: crosslayer_match.png, crosslayer_flow/, ...
    shutil.copy(work / "match" / "match.png", Path(args.out).with_name(f"{stem}_match.png"))
    presets = resolve_presets(PresetConfig(sae=str(resid[args.flow_layer]), source="probe", progress=False))
    flows = {}
    for name, p in presets["presets"].items():
        for side in ("plus", "minus"):
            for f in p[side][:2]:
                key = f"{name}{'+' if side == 'plus' else '-'} {args.flow_layer}/{f['feature']}"
                spec = f"{args.flow_layer}/{f['feature']}"
                flow_dir = Path(args.out).with_name(f"{stem}_flow")
                flows[key] = run_flow(FlowConfig(sae_dir=str(work), feature=spec, out=str(flow_dir)))
    full = json.loads((work / "match" / "matches.json").read_text())
    out = {
        "match": match,
        "persists_layers": full["persists_layers"],
        "presets": {
            n: {s: [f["feature"] for f in p[s]] for s in ("plus", "minus")} for n, p in presets["presets"].items()
        },
        "flows": flows,
        "command": " ".join(["python benchmarks/bench_crosslayer.py", *sys.argv[1:]]),
    }
    Path(args.out).write_text(json.dumps(out, indent=1))
    print(json.dumps({k: v for k, v in out.items() if k != "flows"}, indent=1))
    for k, v in flows.items():
        print(k, v["origin"], v["nodes"], "nodes", v["edges"], "edges")


if __name__ == "__main__":
    main()

"""SAE Boost on the demo backbone: a base SAE trained on the residual stream's **text** positions only, boosted
with **speech** positions (the domain it never saw), layer 3.

Reported (held-out corpus items): EV per modality of the base and of the stitched SAE (base + residual), the
general-data retention (text rows: stitched EV / base EV; goal ≥ 0.99), the speech-token CE with each spliced in
at every position, and whether the boost latents carry what the base lacks: the laughter / gender / rate
probes (`presets`) of the base and of the stitched SAE — probe accuracy, and how many of each probe's top
features are boost latents.

    python benchmarks/bench_boost.py        # → results/boost.json; ~15 min on 2 cores
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

RESULTS = Path(__file__).parent / "results"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", default="runs/boost_bench")
    ap.add_argument("--layer", type=int, default=3)
    ap.add_argument("--base-tokens", type=int, default=200_000, help="text rows the base is trained on")
    ap.add_argument("--boost-tokens", type=int, default=400_000, help="speech rows the residual SAE is trained on")
    ap.add_argument("--latents", type=int, default=1024, help="width of the base and of the residual SAE")
    ap.add_argument("--boost-k", type=int, default=8)
    ap.add_argument("--out", default=str(RESULTS / "boost.json"))
    args = ap.parse_args()
    from ttslens.audio.harvest import run_boost, train_sae
    from ttslens.audio.steering.presets import PresetConfig, resolve_presets
    from ttslens.sae.base import SAEConfig
    from ttslens.sae.boost import BoostConfig
    from ttslens.sae.training import TrainConfig

    work = Path(args.work)
    base = work / "base_text"
    if not (base / "cfg.json").exists():
        cfg = TrainConfig(
            sae=SAEConfig(d_sae=args.latents, k=16), backbone="demo", layer=args.layer, modality="text",
            tokens=args.base_tokens, batch_size=2048, seed=3, eval_tokens=8192, calibration_tokens=16384,
            out=str(base), overwrite=True,
        )  # fmt: skip
        train_sae(cfg, progress=False)
    boosted = work / "boosted"
    if not (boosted / "boost.json").exists():
        cfg = BoostConfig(
            sae=SAEConfig(d_sae=args.latents, k=args.boost_k), base=str(base), backbone="demo", modality="speech",
            tokens=args.boost_tokens, batch_size=2048, seed=4, eval_tokens=8192, calibration_tokens=16384,
            out=str(boosted), overwrite=True,
        )  # fmt: skip
        run_boost(cfg)
    rep = json.loads((boosted / "boost.json").read_text())
    probes = {}
    for name, sae in (("base", base), ("stitched", boosted)):
        p = resolve_presets(PresetConfig(sae=str(sae), source="probe", progress=False))["presets"]
        probes[name] = {
            a: {
                "probe_accuracy": v.get("probe_accuracy"),
                "top": [f["feature"] for s in ("plus", "minus") for f in v[s]],
                "boost_latents_in_top": sum(f["feature"] >= args.latents for s in ("plus", "minus") for f in v[s]),
            }
            for a, v in p.items()
        }

    def ev(part, side, modality):
        by = rep[part][side].get("by_modality", {})
        return (by.get(modality) or {}).get("explained_variance")

    table = {
        m: {s: ev("domain" if m == "speech" else "general", s, m) for s in ("base", "stitched")}
        for m in ("text", "speech")
    }
    out = {
        "ev_by_modality": table,
        "general_retention": rep["general_retention"],
        "domain_ev_gain": rep.get("domain_ev_gain"),
        "speech_ce": rep.get("ce"),
        "probes": probes,
        "boost": rep,
        "command": " ".join(["python benchmarks/bench_boost.py", *sys.argv[1:]]),
    }
    Path(args.out).write_text(json.dumps(out, indent=1))
    print(json.dumps({k: v for k, v in out.items() if k != "boost"}, indent=1))


if __name__ == "__main__":
    main()

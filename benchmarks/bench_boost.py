"""SAE Boost on the demo backbone, layer 3: a base SAE trained on the residual stream's **text** positions only,
boosted with data it never saw. Two variants of the residual SAE's training rows (`--variants`): `speech` (the
new domain alone, as in the paper) and `all` (the whole interleaved stream, text rows included).

Reported (held-out corpus items): EV and L0 per modality of the base and of the stitched SAE (base + residual),
the general-data retention (text rows: stitched EV / base EV; the paper's goal ≥ 0.99), the speech-token CE with
each spliced in at every position, and whether the boost latents carry what the base lacks: the laughter / gender
/ rate probes (`presets`) of the base and of each stitched SAE — probe accuracy, and how many of each probe's top
features are boost latents.

    python benchmarks/bench_boost.py        # → results/boost.json; ~30 min on 2 cores
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

RESULTS = Path(__file__).parent / "results"


def probe(sae_dir: Path, base_width: int) -> dict:
    """The laughter / gender / rate probes of an SAE: accuracy, top features, how many are boost latents."""
    from ttslens.audio.steering.presets import PresetConfig, resolve_presets

    p = resolve_presets(PresetConfig(sae=str(sae_dir), source="probe", progress=False))["presets"]
    return {
        a: {
            "probe_accuracy": v.get("probe_accuracy"),
            "top": [f["feature"] for s in ("plus", "minus") for f in v[s]],
            "boost_latents_in_top": sum(f["feature"] >= base_width for s in ("plus", "minus") for f in v[s]),
        }
        for a, v in p.items()
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", default="runs/boost_bench")
    ap.add_argument("--layer", type=int, default=3)
    ap.add_argument("--base-tokens", type=int, default=200_000, help="text rows the base is trained on")
    ap.add_argument("--boost-tokens", type=int, default=400_000, help="speech rows the residual SAE is trained on")
    ap.add_argument("--latents", type=int, default=1024, help="width of the base and of the residual SAE")
    ap.add_argument("--boost-k", type=int, default=8)
    ap.add_argument("--variants", default="speech,all", help="rows the residual SAE is trained on, one run each")
    ap.add_argument("--retain", type=float, default=1.0, help="`ttslens boost --retain` (0: no retention calibration)")
    ap.add_argument("--out", default=str(RESULTS / "boost.json"))
    args = ap.parse_args()
    from ttslens.audio.harvest import run_boost, train_sae
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
    out = {"variants": {}, "command": " ".join(["python benchmarks/bench_boost.py", *sys.argv[1:]])}
    probes = {"base": probe(base, args.latents)}
    for variant in args.variants.split(","):
        boosted = work / f"boosted_{variant}"
        done = boosted / "boost.json"
        calibrated = done.exists() and "retention_calibration" in json.loads(done.read_text())
        if not done.exists() or (args.retain > 0 and not calibrated):
            cfg = BoostConfig(
                sae=SAEConfig(d_sae=args.latents, k=args.boost_k), base=str(base), backbone="demo", modality=variant,
                general_modality="text", tokens=args.boost_tokens, batch_size=2048, seed=4, eval_tokens=8192,
                calibration_tokens=16384, out=str(boosted), overwrite=True, retain=args.retain,
                resume=(boosted / "residual" / "checkpoint.pt").exists(),  # a finished residual SAE is reused
            )  # fmt: skip
            run_boost(cfg)
        rep = json.loads((boosted / "boost.json").read_text())
        by = {p: {s: rep[p][s].get("by_modality", {}) for s in ("base", "stitched")} for p in ("domain", "general")}
        out["variants"][variant] = {
            "trained_on": f"{variant} rows",
            "ev": {
                f"{p}/{m}": {s: (by[p][s].get(m) or {}).get("explained_variance") for s in ("base", "stitched")}
                for p in ("domain", "general") for m in by[p]["base"]
            },
            "l0": {
                f"{p}/{m}": {s: (by[p][s].get(m) or {}).get("l0") for s in ("base", "stitched")}
                for p in ("domain", "general") for m in by[p]["base"]
            },
            "general_retention": rep["general_retention"],
            "retention_calibration": rep.get("retention_calibration"),
            "speech_ce": rep.get("ce"),
            "boost": rep,
        }  # fmt: skip
        probes[f"stitched_{variant}"] = probe(boosted, args.latents)
    out["probes"] = probes
    Path(args.out).write_text(json.dumps(out, indent=1))
    print(json.dumps({v: {k: x for k, x in r.items() if k != "boost"} for v, r in out["variants"].items()}, indent=1))


if __name__ == "__main__":
    main()

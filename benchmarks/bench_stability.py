"""Feature stability across seeds.

1. Synthetic data with a known dictionary (`sae.synthetic`): --seeds SAEs trained alike but for the seed; is
   stability a detector of "this feature is a true one" (best cosine to the truth ≥ 0.9)? AUROC, and the mean
   truth cosine by stability level.
2. The demo backbone, layer 3: --seeds residual SAEs; the stability of its laughter / gender / rate probe
   features (`presets` of the first seed) vs the rest, stability vs frequency and ΔFVU, and the pooled SAE vs
   single seeds (share of features matched in a held-out seed, EV).

    python benchmarks/bench_stability.py      # → results/stability.json, stability_synthetic.png,
                                              #   stability_demo.png; ~20 min on 2 cores
    python benchmarks/bench_stability.py --skip-synthetic --demo-tokens 1500000 --work runs/stability_long \
        --out benchmarks/results/stability_long.json                        # SAEs trained 3.75x longer; ~40 min
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).parent / "results"


def auroc(score: np.ndarray, positive: np.ndarray) -> float | None:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(positive, score)) if 0 < positive.sum() < len(positive) else None


def synthetic(work: Path, seeds: int, tokens: int) -> dict:
    from ttslens.sae.files import load_sae
    from ttslens.sae.stability import StabilityConfig, run_stability, unit
    from ttslens.sae.synthetic import make_superposition, write_synthetic

    syn = make_superposition(80_000, 64, 256, 6, seed=7)  # generator seed 7: no SAE seed below starts at the truth
    path = write_synthetic(work / "synthetic.safetensors", syn)
    cfg = StabilityConfig(
        train_seeds=seeds, seed=100, activations=str(path), tokens=tokens, batch_size=1024, eval_tokens=8192,
        buffer_tokens=32768, out=str(work / "synthetic"),
    )  # fmt: skip
    cfg.sae.d_sae, cfg.sae.k = 256, 6
    summary = run_stability(cfg, progress=False)
    recs = [json.loads(x) for x in (work / "synthetic" / "stability.jsonl").read_text().splitlines()]
    stab = np.array([r["stability"] for r in recs])
    first = load_sae(work / "synthetic" / "seed_100")
    truth = (unit(first.W_dec) @ unit(syn.dictionary).T).max(1).values.numpy()
    levels = sorted(set(stab.round(4).tolist()))
    return {
        "true_if_cosine_at_least": 0.9,
        "share_true": float((truth >= 0.9).mean()),
        "auroc_stability_is_true": auroc(stab, truth >= 0.9),
        "truth_cosine_by_stability": {
            str(v): {"n": int((stab.round(4) == v).sum()), "mean": float(truth[stab.round(4) == v].mean())}
            for v in levels
        },
        "summary": {k: v for k, v in summary.items() if k not in ("saes", "plots")},
    }


def demo(work: Path, seeds: int, tokens: int, latents: int) -> dict:
    from ttslens.audio.steering.presets import PresetConfig, resolve_presets
    from ttslens.sae.stability import StabilityConfig, run_stability

    cfg = StabilityConfig(
        train_seeds=seeds, seed=200, backbone="demo", layer=3, tokens=tokens, batch_size=4096,
        out=str(work / "demo"),
    )  # fmt: skip
    cfg.sae.d_sae, cfg.sae.k = latents, 16
    summary = run_stability(cfg, progress=False)
    recs = [json.loads(x) for x in (work / "demo" / "stability.jsonl").read_text().splitlines()]
    stab = np.array([r["stability"] for r in recs])
    presets = resolve_presets(PresetConfig(sae=str(work / "demo" / "seed_200"), source="probe", progress=False))
    probe = {}
    for name, p in presets["presets"].items():
        feats = [f["feature"] for s in ("plus", "minus") for f in p[s]]
        probe[name] = {"features": feats, "stability": [float(stab[f]) for f in feats]}
    chosen = sorted({f for v in probe.values() for f in v["features"]})
    rest = np.setdiff1d(np.arange(len(stab)), chosen)
    return {
        "probe_features": probe,
        "mean_stability_probe_features": float(stab[chosen].mean()) if chosen else None,
        "mean_stability_rest": float(stab[rest].mean()),
        "summary": {k: v for k, v in summary.items() if k not in ("saes",)},
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", default="runs/stability_bench")
    ap.add_argument("--seeds", type=int, default=5, help="seeds on synthetic data")
    ap.add_argument("--synthetic-tokens", type=int, default=400_000)
    ap.add_argument("--demo-seeds", type=int, default=3)
    ap.add_argument("--demo-tokens", type=int, default=400_000)
    ap.add_argument("--demo-latents", type=int, default=1024)
    ap.add_argument("--skip-demo", action="store_true")
    ap.add_argument("--skip-synthetic", action="store_true")
    ap.add_argument("--out", default=str(RESULTS / "stability.json"))
    args = ap.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    stem = Path(args.out).stem
    out = {}
    if not args.skip_synthetic:
        out["synthetic"] = synthetic(work, args.seeds, args.synthetic_tokens)
        shutil.copy(work / "synthetic" / "stability.png", Path(args.out).with_name(f"{stem}_synthetic.png"))
    if not args.skip_demo:
        out["demo"] = demo(work, args.demo_seeds, args.demo_tokens, args.demo_latents)
        shutil.copy(work / "demo" / "stability.png", Path(args.out).with_name(f"{stem}_demo.png"))
    out["command"] = " ".join(["python benchmarks/bench_stability.py", *sys.argv[1:]])
    Path(args.out).write_text(json.dumps(out, indent=1))
    print(json.dumps(out, indent=1)[:4000])


if __name__ == "__main__":
    main()

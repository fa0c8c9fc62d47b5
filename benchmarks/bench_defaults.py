"""Quality at each library's own defaults, on synthetic data of several difficulties with a known dictionary.

Each library runs in its own process on the same file (`benchmarks/peers/run_*.py --defaults`): ttslens through
its trainer at its defaults (lr 0 = its rule, warm-up and decay), sparsify with its default optimiser
(ScheduleFree SignSGD at its lr rule), SAELens at its documented lr (3e-4, constant). Same tokens, batch,
latents and k for all; ttslens and SAELens train BatchTopK, sparsify TopK (its only top-k form). Reported:
MMCS (mean over true features of the best decoder cosine), EV = 1 - FVU on held-out rows, L0, dead share.
`--archs` adds ttslens runs of other architectures at its defaults (TopK: the form sparsify trains); `--lrs` adds
ttslens runs at its defaults but a fixed learning rate (the sweep that chose the default rule).

    .venv/bin/python benchmarks/bench_defaults.py                        # → results/defaults.json
    .venv/bin/python benchmarks/bench_defaults.py --sets hard --lrs 2e-3,8e-3
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))

from ttslens.sae.synthetic import make_superposition, write_synthetic  # noqa: E402

PYTHON = {"ttslens": ROOT / ".venv/bin/python", "sparsify": HERE / ".venv-peers/bin/python"}
PYTHON["saelens"] = PYTHON["sparsify"]
RUNNER = {"ttslens": "run_ttslens.py", "sparsify": "run_sparsify.py", "saelens": "run_saelens.py"}
# name: (d, true features, active per token, zipf exponent, latents, k, tokens)
SETS = {
    "easy": (128, 512, 8, 0.5, 1024, 8, 1_000_000),
    "hard": (128, 2048, 16, 0.5, 2048, 16, 2_000_000),
    "skewed": (128, 2048, 16, 1.0, 2048, 16, 2_000_000),
    "dense": (128, 1024, 32, 0.5, 2048, 32, 2_000_000),
    "wide": (256, 4096, 32, 0.5, 4096, 32, 2_000_000),
}
DATA_SEED = 4321  # not an SAE seed: an SAE seeded like the data would start at the true dictionary


def run(lib: str, data: Path, latents: int, k: int, steps: int, batch: int, flags: list[str]) -> dict:
    cmd = [str(PYTHON[lib]), RUNNER[lib], "--activations", str(data), "--latents", str(latents), "--k", str(k)]
    cmd += ["--batch-size", str(batch), "--steps", str(steps), "--eval-tokens", "16384", *flags]
    out = subprocess.run(cmd, cwd=HERE / "peers", capture_output=True, text=True)
    if out.returncode:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{out.stderr[-2000:]}")
    r = json.loads(out.stdout.strip().splitlines()[-1])
    return {k: r.get(k) for k in ("library", "arch", "mmcs", "fvu", "l0", "dead_pct", "lr", "trainer_lr")} | {
        "ev": 1 - r["fvu"],
        "tokens_per_s": r["tokens_per_s"],
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sets", default="easy,hard,skewed,dense", help="of " + ", ".join(SETS))
    p.add_argument("--libs", default="ttslens,sparsify,saelens")
    p.add_argument("--archs", default="topk", help="extra ttslens architectures at its defaults")
    p.add_argument("--lrs", default="", help="extra ttslens runs at these fixed learning rates")
    p.add_argument("--batch-size", type=int, default=4096)
    p.add_argument("--tokens-scale", type=float, default=1.0, help="multiply every set's token budget")
    p.add_argument("--out", default=str(HERE / "results" / "defaults.json"))
    a = p.parse_args()

    out = Path(a.out)
    results = json.loads(out.read_text()) if out.exists() else {}
    results["config"] = vars(a)
    for name in a.sets.split(","):
        d, n_true, active, zipf, latents, k, tokens = SETS[name]
        tokens = int(tokens * a.tokens_scale)
        steps = tokens // a.batch_size
        data = Path(f"/tmp/ttslens_defaults_{name}.safetensors")
        syn = make_superposition(steps * a.batch_size + 16384, d, n_true, active, seed=DATA_SEED, zipf=zipf)
        write_synthetic(data, syn)
        spec = {"d": d, "true_features": n_true, "active": active, "zipf": zipf, "latents": latents, "k": k}
        rows = results.setdefault(name, {"set": spec | {"tokens": tokens}})
        runs = [(lib, lib, ["--defaults"]) for lib in a.libs.split(",")]
        runs += [(f"ttslens {arch}", "ttslens", ["--defaults", "--arch", arch]) for arch in a.archs.split(",") if arch]
        runs += [(f"ttslens lr {lr}", "ttslens", ["--defaults", "--lr", lr]) for lr in a.lrs.split(",") if lr]
        for label, lib, flags in runs:
            rows[label] = run(lib, data, latents, k, steps, a.batch_size, flags)
            r = rows[label]
            print(f"{name:7s} {label:18s} MMCS {r['mmcs']:.3f}  EV {r['ev']:.3f}  L0 {r['l0']:.1f}", flush=True)
            out.parent.mkdir(parents=True, exist_ok=True)
            tmp = out.with_suffix(".tmp")
            tmp.write_text(json.dumps(results, indent=2))
            tmp.replace(out)
        data.unlink(missing_ok=True)


if __name__ == "__main__":
    main()

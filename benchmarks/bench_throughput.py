"""Benchmark 1: SAE training throughput on identical cached activations.

ttslens BatchTopK (through `ttslens.sae.training.train` itself) vs SAELens BatchTopK vs EleutherAI sparsify
TopK, each in its own process, on the same file, batch, steps and lr; runs are interleaved and repeated (the
machine is noisy), so the ratios within one invocation are the result. Variants: each library at its
defaults (fp32), ttslens choosing its latents on a bf16 product (`--bf16-select`, values recomputed in fp32),
and ttslens and sparsify under bf16 autocast. Also: a ttslens step over one
dense encoder product (fp32 and bf16), the cost curve tokens/s and peak memory vs F, and a plot.
Peers run in benchmarks/.venv-peers (`bash benchmarks/peers/setup_peers.sh`).

    .venv/bin/python benchmarks/bench_throughput.py            # d=512, F=8192, k=32, batch 4096 + curve
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))

from ttslens.sae.synthetic import make_superposition, write_synthetic  # noqa: E402

PYTHON = {"ttslens": ROOT / ".venv/bin/python", "peers": HERE / ".venv-peers/bin/python"}
RUNNERS = {"ttslens": "run_ttslens.py", "saelens": "run_saelens.py", "sparsify": "run_sparsify.py"}
VARIANTS = {  # name: (library, extra flags)
    "ttslens": ("ttslens", []),
    "ttslens_topk": ("ttslens", ["--arch", "topk"]),  # sparsify's architecture
    "ttslens_bf16_select": ("ttslens", ["--bf16-select"]),
    "sparsify": ("sparsify", []),
    "saelens": ("saelens", []),
    "ttslens_bf16": ("ttslens", ["--bf16"]),
    "sparsify_bf16": ("sparsify", ["--bf16"]),
}


def run(variant: str, data: Path, a, latents: int, steps: int) -> dict:
    lib, flags = VARIANTS[variant]
    py = PYTHON["ttslens" if lib == "ttslens" else "peers"]
    cmd = [str(py), RUNNERS[lib], "--activations", str(data), "--latents", str(latents), "--k", str(a.k)]
    cmd += ["--batch-size", str(a.batch_size), "--steps", str(steps), "--lr", str(a.lr)]
    cmd += ["--eval-tokens", str(a.eval_tokens), *flags]
    out = subprocess.run(cmd, cwd=HERE / "peers", capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1]) | {"variant": variant}


def plot(curve: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, bx) = plt.subplots(1, 2, figsize=(10, 4))
    for name, rows in curve.items():
        Fs = [r["latents"] for r in rows]
        ax.plot(Fs, [r["tokens_per_s"] for r in rows], "o-", label=name)
        bx.plot(Fs, [r["peak_rss_mb"] / 1024 for r in rows], "o-", label=name)
    for axis, label in ((ax, "tokens / s"), (bx, "peak resident memory (GB)")):
        axis.set_xscale("log", base=2)
        axis.set_xlabel("latents F (d = 512, k = 32, batch 4096)")
        axis.set_ylabel(label)
        axis.grid(alpha=0.3)
    ax.set_yscale("log")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--d", type=int, default=512)
    p.add_argument("--latents", type=int, default=8192)
    p.add_argument("--k", type=int, default=32)
    p.add_argument("--batch-size", type=int, default=4096)
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--timing-steps", type=int, default=20)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated, of " + ", ".join(VARIANTS))
    p.add_argument("--curve", default="4096,8192,16384,32768,65536", help="latents for the cost curve ('' = none)")
    p.add_argument("--curve-steps", type=int, default=6)
    p.add_argument("--curve-variants", default="ttslens,sparsify,saelens")
    p.add_argument("--eval-tokens", type=int, default=16384)
    p.add_argument("--out", default=str(HERE / "results" / "throughput.json"))
    a = p.parse_args()

    data = Path("/tmp/ttslens_bench_throughput.safetensors")
    rows = max(a.timing_steps, a.curve_steps) * a.batch_size + a.eval_tokens
    # data seed != every SAE seed: an SAE seeded like the data would start at the true dictionary
    syn = make_superposition(rows, a.d, 4 * a.d, a.k, seed=1234, noise=0.01)
    write_synthetic(data, syn)

    variants = a.variants.split(",")
    runs = {n: [] for n in variants}
    for _ in range(a.repeats):  # interleaved
        for n in variants:
            runs[n].append(run(n, data, a, a.latents, a.timing_steps))
            print(n, f"{runs[n][-1]['tokens_per_s']:.0f} tok/s", flush=True)
    tps = {n: statistics.median(r["tokens_per_s"] for r in v) for n, v in runs.items()}
    ratio = {}
    pairs = (("ttslens", "sparsify"), ("ttslens_topk", "sparsify"), ("ttslens_bf16_select", "sparsify"))
    pairs += (("ttslens_bf16", "sparsify_bf16"),)
    for ours, theirs in pairs:
        if ours in tps and theirs in tps:
            ratio[f"{ours}/{theirs}"] = tps[ours] / tps[theirs]
    if "ttslens" in tps and "saelens" in tps:
        ratio["ttslens/saelens"] = tps["ttslens"] / tps["saelens"]
    floors = {
        n: {prec: statistics.median(r["step_over_encoder_product"][prec] for r in v) for prec in ("fp32", "bf16")}
        for n, v in runs.items()
        if VARIANTS[n][0] == "ttslens"
    }

    curve = {}
    for F in [int(f) for f in a.curve.split(",") if f]:
        for n in a.curve_variants.split(","):
            curve.setdefault(n, []).append(run(n, data, a, F, a.curve_steps))
            r = curve[n][-1]
            print(f"curve F={F} {n}: {r['tokens_per_s']:.0f} tok/s, peak {r['peak_rss_mb']:.0f} MB", flush=True)

    result = {
        "config": vars(a),
        "tokens_per_s": tps,
        "ratios": ratio,
        "step_over_encoder_product": floors,
        "runs": runs,
        "curve": curve,
    }
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    if curve:
        plot(curve, out.with_name(out.stem + "_curve.png"))
    print(json.dumps({k: result[k] for k in ("tokens_per_s", "ratios", "step_over_encoder_product")}, indent=2))


if __name__ == "__main__":
    main()

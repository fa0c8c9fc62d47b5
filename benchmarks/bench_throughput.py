"""Benchmark 1: SAE training throughput and quality on identical cached activations.

ttslens BatchTopK vs SAELens BatchTopK vs EleutherAI sparsify TopK, each in its own process, on the
same file, same batches (file order), same steps and lr; timing runs are interleaved and repeated
(the machine is noisy), so the ratios are the result. Peers run in benchmarks/.venv-peers
(`bash benchmarks/peers/setup_peers.sh`).

    .venv/bin/python benchmarks/bench_throughput.py            # d=512, F=8192, k=32, batch 4096
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

RUNNERS = {
    "ttslens": (ROOT / ".venv/bin/python", "run_ttslens.py"),
    "saelens": (HERE / ".venv-peers/bin/python", "run_saelens.py"),
    "sparsify": (HERE / ".venv-peers/bin/python", "run_sparsify.py"),
}


def run(name: str, data: Path, a, steps: int) -> dict:
    py, script = RUNNERS[name]
    cmd = [
        str(py),
        script,
        "--activations",
        str(data),
        "--latents",
        str(a.latents),
        "--k",
        str(a.k),
        "--batch-size",
        str(a.batch_size),
        "--steps",
        str(steps),
        "--lr",
        str(a.lr),
        "--eval-tokens",
        str(a.eval_tokens),
    ]
    out = subprocess.run(cmd, cwd=HERE / "peers", capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--d", type=int, default=512)
    p.add_argument("--latents", type=int, default=8192)
    p.add_argument("--k", type=int, default=32)
    p.add_argument("--batch-size", type=int, default=4096)
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--timing-steps", type=int, default=20)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--quality-steps", type=int, default=150)
    p.add_argument("--eval-tokens", type=int, default=16384)
    p.add_argument("--out", default=str(HERE / "results" / "throughput.json"))
    a = p.parse_args()

    data = Path("/tmp/ttslens_bench_throughput.safetensors")
    rows = a.quality_steps * a.batch_size + a.eval_tokens
    syn = make_superposition(rows, a.d, 4 * a.d, a.k, seed=0, noise=0.01)
    write_synthetic(data, syn)

    timing = {n: [] for n in RUNNERS}
    for _ in range(a.repeats):  # interleaved
        for n in RUNNERS:
            timing[n].append(run(n, data, a, a.timing_steps)["tokens_per_s"])
            print(n, f"{timing[n][-1]:.0f} tok/s", flush=True)
    quality = {n: run(n, data, a, a.quality_steps) for n in RUNNERS}
    for n, q in quality.items():
        print(n, "quality run:", {k: q.get(k) for k in ("fvu", "fvu_batchtopk", "l0", "tokens_per_s")}, flush=True)

    tps = {n: statistics.median(v) for n, v in timing.items()}
    peer_fvus = [
        min(v for v in (quality[n]["fvu"], quality[n].get("fvu_batchtopk")) if v is not None)
        for n in ("saelens", "sparsify")
    ]
    result = {
        "config": vars(a),
        "tokens_per_s": tps,
        "tokens_per_s_runs": timing,
        "speedup_vs_saelens": tps["ttslens"] / tps["saelens"],
        "speedup_vs_sparsify": tps["ttslens"] / tps["sparsify"],
        "fvu": {n: quality[n]["fvu"] for n in RUNNERS},
        "fvu_minus_best_peer": quality["ttslens"]["fvu"] - min(peer_fvus),
        "quality_runs": quality,
    }
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(result, indent=2))
    print(
        json.dumps(
            {
                k: result[k]
                for k in ("tokens_per_s", "speedup_vs_saelens", "speedup_vs_sparsify", "fvu", "fvu_minus_best_peer")
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()

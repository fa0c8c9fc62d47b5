"""Benchmarks 3-4 (speed): HierarchicalTopK vs TopK training-step time and peak memory at K=64;
KronSAE vs TopK encoder forward time at F=2^15, d=896. Each measurement runs in its own process
(peak RSS over a baseline taken after set-up), interleaved and repeated. The training step is the
trainer's own `train_step` (its fused Adam, decoder projection, grad clip and renormalisation) at its
defaults (latents chosen on a bf16 product where that is native) and in fp32 throughout.

    .venv/bin/python benchmarks/bench_speed.py     # writes benchmarks/results/speed.json
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))


def child(kind: str, arch: str, m: int, n: int, select: bool = True) -> None:
    import torch

    from ttslens.sae.base import SAEConfig, make_sae
    from ttslens.sae.devices import fused_ok
    from ttslens.sae.training import TrainConfig
    from ttslens.sae.training.trainer import train_step

    torch.manual_seed(0)
    if kind == "step":  # training step, d=512, F=16384, K=64, batch 4096
        sae = make_sae(SAEConfig(arch=arch, d_in=512, d_sae=16384, k=64))
        x = torch.randn(4096, 512)
        opt = torch.optim.Adam(sae.parameters(), lr=1e-4, fused=fused_ok("cpu"))
        cfg = TrainConfig(activations="unused", bf16_select=select)  # train_step reads only the step settings
        base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

        def step():
            train_step(sae, sae, opt, x, None, 1e-4, cfg, False)
    else:  # encoder forward at inference, d=896, F=2^15, k=32, batch 4096
        sae = make_sae(SAEConfig(arch=arch, d_in=896, d_sae=2**15, k=32, kron_m=m, kron_n=n)).eval()
        x = torch.randn(4096, 896)
        base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

        def step():
            with torch.no_grad():
                sae.encode_sparse(x)

    times = []
    for i in range(8):
        t = time.perf_counter()
        step()
        if i >= 2:
            times.append(time.perf_counter() - t)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"s": statistics.median(times), "peak_mb": (peak - base) / 1024}))


def measure(kind: str, arch: str, m: int = 2, n: int = 4, select: bool = True) -> dict:
    cmd = [sys.executable, __file__, "--child", kind, arch, str(m), str(n), str(int(select))]
    return json.loads(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--child", nargs=5)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--out", default=str(HERE / "results" / "speed.json"))
    a = p.parse_args()
    if a.child:
        child(a.child[0], a.child[1], int(a.child[2]), int(a.child[3]), a.child[4] == "1")
        return
    runs: dict = {k: [] for k in ("hier_step", "topk_step", "hier_step_fp32", "topk_step_fp32")}
    runs |= {"topk_enc": [], "kron24_enc": [], "kron48_enc": []}
    for _ in range(a.repeats):
        runs["topk_step"].append(measure("step", "topk"))
        runs["hier_step"].append(measure("step", "hierarchical"))
        runs["topk_step_fp32"].append(measure("step", "topk", select=False))
        runs["hier_step_fp32"].append(measure("step", "hierarchical", select=False))
        runs["topk_enc"].append(measure("enc", "topk"))
        runs["kron24_enc"].append(measure("enc", "kron", 2, 4))
        runs["kron48_enc"].append(measure("enc", "kron", 4, 8))
        print({k: v[-1] for k, v in runs.items()}, flush=True)
    med = {k: {f: statistics.median(r[f] for r in v) for f in ("s", "peak_mb")} for k, v in runs.items()}
    result = {
        "median": med,
        "hier_vs_topk_time": med["hier_step"]["s"] / med["topk_step"]["s"],
        "hier_vs_topk_peak_mem": med["hier_step"]["peak_mb"] / med["topk_step"]["peak_mb"],
        "hier_vs_topk_time_fp32": med["hier_step_fp32"]["s"] / med["topk_step_fp32"]["s"],
        "hier_vs_topk_peak_mem_fp32": med["hier_step_fp32"]["peak_mb"] / med["topk_step_fp32"]["peak_mb"],
        "kron_m2n4_encoder_speedup": med["topk_enc"]["s"] / med["kron24_enc"]["s"],
        "kron_m4n8_encoder_speedup": med["topk_enc"]["s"] / med["kron48_enc"]["s"],
        "runs": runs,
    }
    Path(a.out).write_text(json.dumps(result, indent=2))
    print(json.dumps({k: v for k, v in result.items() if k != "runs"}, indent=2))


if __name__ == "__main__":
    main()

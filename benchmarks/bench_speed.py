"""Benchmarks 3-4 (speed): HierarchicalTopK vs TopK training-step time and peak memory at K=64;
KronSAE vs TopK at F=2^15, d=896, k=32: the encoder forward, the encoder product alone (the bound on
the speed-up: KronSAE's product is mn / (m+n) times smaller), and the training step. Each measurement
runs in its own process (peak RSS over a baseline taken after set-up), interleaved and repeated. The
training step is the trainer's own `train_step` (its fused Adam, decoder projection, grad clip and
renormalisation), in fp32 throughout (the default) and with the latents chosen on a bf16 product
(`--bf16-select`); the KronSAE/TopK steps are at the default.

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
    elif kind == "kstep":  # training step at the KronSAE size, d=896, F=2^15, k=32, batch 4096
        sae = make_sae(SAEConfig(arch=arch, d_in=896, d_sae=2**15, k=32, kron_m=m, kron_n=n))
        x = torch.randn(4096, 896)
        opt = torch.optim.Adam(sae.parameters(), lr=1e-4, fused=fused_ok("cpu"))
        cfg = TrainConfig(activations="unused", bf16_select=select)
        base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

        def step():
            train_step(sae, sae, opt, x, None, 1e-4, cfg, False)
    else:  # inference at d=896, F=2^15, k=32, batch 4096: the encoder ("enc") or its dense product alone ("prod")
        sae = make_sae(SAEConfig(arch=arch, d_in=896, d_sae=2**15, k=32, kron_m=m, kron_n=n)).eval()
        x = torch.randn(4096, 896)
        base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        run = sae.encode_sparse if kind == "enc" else (sae._uv_mh if arch == "kron" else sae.preacts)

        def step():
            with torch.no_grad():
                run(x)

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
    p.add_argument("--no-kron-step", action="store_true", help="skip the KronSAE/TopK training-step rows (the slowest)")
    p.add_argument("--out", default=str(HERE / "results" / "speed.json"))
    a = p.parse_args()
    if a.child:
        child(a.child[0], a.child[1], int(a.child[2]), int(a.child[3]), a.child[4] == "1")
        return
    kron = [(2, 4), (4, 8), (8, 8), (8, 16)]
    jobs = {"topk_step": ("step", "topk", 2, 4, True), "hier_step": ("step", "hierarchical", 2, 4, True)}
    jobs |= {"topk_step_fp32": ("step", "topk", 2, 4, False), "hier_step_fp32": ("step", "hierarchical", 2, 4, False)}
    jobs |= {"topk_enc": ("enc", "topk", 2, 4, True), "topk_prod": ("prod", "topk", 2, 4, True)}
    jobs |= {f"kron{m}{n}_enc": ("enc", "kron", m, n, True) for m, n in kron}
    jobs |= {f"kron{m}{n}_prod": ("prod", "kron", m, n, True) for m, n in kron}
    if not a.no_kron_step:
        jobs |= {"topk_kstep": ("kstep", "topk", 2, 4, False)}
        jobs |= {f"kron{m}{n}_kstep": ("kstep", "kron", m, n, False) for m, n in kron}
    runs: dict = {k: [] for k in jobs}
    for _ in range(a.repeats):
        for name, job in jobs.items():
            runs[name].append(measure(*job))
        print({k: v[-1] for k, v in runs.items()}, flush=True)
    med = {k: {f: statistics.median(r[f] for r in v) for f in ("s", "peak_mb")} for k, v in runs.items()}
    result = {
        "median": med,
        "hier_vs_topk_time": med["hier_step"]["s"] / med["topk_step"]["s"],
        "hier_vs_topk_peak_mem": med["hier_step"]["peak_mb"] / med["topk_step"]["peak_mb"],
        "hier_vs_topk_time_fp32": med["hier_step_fp32"]["s"] / med["topk_step_fp32"]["s"],
        "hier_vs_topk_peak_mem_fp32": med["hier_step_fp32"]["peak_mb"] / med["topk_step_fp32"]["peak_mb"],
    }
    for m, n in kron:
        key = f"kron{m}{n}"
        result[f"{key}_encoder_speedup"] = med["topk_enc"]["s"] / med[f"{key}_enc"]["s"]
        result[f"{key}_product_speedup"] = med["topk_prod"]["s"] / med[f"{key}_prod"]["s"]
        result[f"{key}_product_flop_ratio"] = m * n / (m + n)
        if f"{key}_kstep" in med:
            result[f"{key}_step_speedup"] = med["topk_kstep"]["s"] / med[f"{key}_kstep"]["s"]
    result["runs"] = runs
    tmp = Path(a.out).with_suffix(".tmp")
    tmp.write_text(json.dumps(result, indent=2))
    tmp.replace(a.out)
    print(json.dumps({k: v for k, v in result.items() if k != "runs"}, indent=2))


if __name__ == "__main__":
    main()

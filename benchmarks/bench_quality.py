"""Benchmarks 2-4 (quality): known-dictionary recovery per architecture; one HierarchicalTopK vs TopK
SAEs trained per k (Pareto plot); KronSAE vs TopK FVU at equal L0. Synthetic superposition data.

    .venv/bin/python benchmarks/bench_quality.py     # writes benchmarks/results/quality.json + pareto.png
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from ttslens.sae.activations import BatchStream, CachedActivations, take_tokens  # noqa: E402
from ttslens.sae.base import SAEConfig  # noqa: E402
from ttslens.sae.metrics import evaluate  # noqa: E402
from ttslens.sae.synthetic import make_superposition, mean_max_cosine, write_synthetic  # noqa: E402
from ttslens.sae.training import TrainConfig, train  # noqa: E402


def fit(data: Path, work: Path, name: str, sae: SAEConfig, tokens: int, lr: float):
    cfg = TrainConfig(
        sae=sae,
        activations=str(data),
        tokens=tokens,
        batch_size=2048,
        lr=lr,
        eval_tokens=16384,
        buffer_tokens=65536,
        out=str(work / name),
        overwrite=True,
        log_every=100,
    )
    res = train(cfg, progress=False)
    print(name, {k: round(v, 4) for k, v in res.metrics.items() if isinstance(v, float)}, flush=True)
    return res


def plot(pareto: dict, out: Path, name: str = "quality") -> None:
    """FVU vs k: one HierarchicalTopK SAE against a TopK SAE per k."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.6))
    ax.plot(pareto["k"], pareto["topk"], "o-", label="TopK, one SAE per k")
    ax.plot(pareto["k"], pareto["hierarchical"], "s-", label="HierarchicalTopK, one SAE (K=64)")
    ax.set(xscale="log", xlabel="L0 (k)", ylabel="FVU (held-out)", title="Sparsity–fidelity, d=128, F=2048")
    ax.minorticks_off()
    ax.set_xticks(pareto["k"], [str(k) for k in pareto["k"]])
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / ("hierarchical_pareto.png" if name == "quality" else f"{name}_pareto.png"), dpi=130)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tokens", type=int, default=2_000_000)
    p.add_argument("--lr", type=float, default=2e-3, help="0 = the trainer's default rule (2e-3 / sqrt(F / 2^14))")
    p.add_argument("--out", default=str(HERE / "results"))
    p.add_argument("--plot-only", action="store_true", help="redraw the plot from results/NAME.json")
    p.add_argument("--parts", default="ground_truth,hierarchical,kron", help="which of the three to run")
    p.add_argument("--archs", default="batchtopk,topk,hierarchical,kron,relu", help="ground_truth's architectures")
    p.add_argument("--name", default="quality", help="the raw JSON's name under --out (NAME.json)")
    a = p.parse_args()
    parts = set(a.parts.split(","))
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    if a.plot_only:
        plot(json.loads((out / f"{a.name}.json").read_text())["hierarchical_pareto"], out, a.name)
        return
    work = Path(tempfile.mkdtemp(prefix="ttslens_bench_"))
    results: dict = {"config": vars(a)}

    if "ground_truth" in parts:
        ground_truth(a, work, results)
    if "hierarchical" in parts or "kron" in parts:
        hierarchical_and_kron(a, work, results, out, parts)
    tmp = out / f"{a.name}.json.tmp"
    tmp.write_text(json.dumps(results, indent=2))
    tmp.replace(out / f"{a.name}.json")
    print(json.dumps({k: v for k, v in results.items() if k != "config"}, indent=2))


def ground_truth(a, work: Path, results: dict) -> None:
    # 2. ground truth: d=128, 512 true features, ~8 active per token; SAEs with 1024 latents at k=8
    syn = make_superposition(a.tokens // 2 + 16384, 128, 512, 8, seed=1)
    gt = write_synthetic(work / "gt.safetensors", syn)
    results["ground_truth"] = {}
    for arch in a.archs.split(","):
        cfg = SAEConfig(arch=arch, d_sae=1024, k=8, kron_m=2, kron_n=4, l1_coeff=0.3)
        res = fit(gt, work, f"gt_{arch}", cfg, a.tokens, a.lr)
        results["ground_truth"][arch] = {
            "mmcs": mean_max_cosine(res.sae.W_dec.detach(), syn.dictionary),
            "fvu": res.metrics["fvu"],
            "l0": res.metrics["l0"],
        }


def hierarchical_and_kron(a, work: Path, results: dict, out: Path, parts: set[str]) -> None:
    # 3. HierarchicalTopK (K=64) at k in {8,16,32,64} vs TopK trained at each k; d=128, 2048 latents
    syn = make_superposition(a.tokens // 2 + 16384, 128, 1024, 32, seed=2)
    hd = write_synthetic(work / "h.safetensors", syn)
    if "hierarchical" in parts:
        hierarchical(a, work, results, out, hd)
    if "kron" in parts:
        kron(a, work, results, hd)


def hierarchical(a, work: Path, results: dict, out: Path, hd: Path) -> None:
    ev = CachedActivations(hd, window=(a.tokens // 2, a.tokens // 2 + 16384))
    hier = fit(hd, work, "hier_K64", SAEConfig(arch="hierarchical", d_sae=2048, k=64), a.tokens, a.lr)
    pareto = {"k": [8, 16, 32, 64], "hierarchical": [], "topk": []}
    for k in pareto["k"]:
        batches = take_tokens(BatchStream(ev, 4096, 16384, 0), 16384)
        pareto["hierarchical"].append(evaluate(hier.sae, batches, {"k": k})["fvu"])
        pareto["topk"].append(
            fit(hd, work, f"topk_{k}", SAEConfig(arch="topk", d_sae=2048, k=k), a.tokens, a.lr).metrics["fvu"]
        )
    pareto["hier_minus_topk"] = [h - t for h, t in zip(pareto["hierarchical"], pareto["topk"], strict=True)]
    results["hierarchical_pareto"] = pareto
    plot(pareto, out, a.name)


def kron(a, work: Path, results: dict, hd: Path) -> None:
    # 4. KronSAE vs TopK at equal L0 (k=16), 4096 latents, d=128
    results["kron_vs_topk"] = {}
    for name, cfg in {
        "topk": SAEConfig(arch="topk", d_sae=4096, k=16),
        "kron_m2_n4": SAEConfig(arch="kron", d_sae=4096, k=16, kron_m=2, kron_n=4),
        "kron_m4_n8": SAEConfig(arch="kron", d_sae=4096, k=16, kron_m=4, kron_n=8),
        "kron_m8_n8": SAEConfig(arch="kron", d_sae=4096, k=16, kron_m=8, kron_n=8),
        "kron_m8_n16": SAEConfig(arch="kron", d_sae=4096, k=16, kron_m=8, kron_n=16),
    }.items():
        results["kron_vs_topk"][name] = fit(hd, work, f"kv_{name}", cfg, a.tokens, a.lr).metrics["fvu"]


if __name__ == "__main__":
    main()

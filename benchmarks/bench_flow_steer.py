"""Multi-layer flow steering vs single-layer steering on the demo backbone, like for like: the same feature of
layer 3, the same strengths (in units of each feature's mean activation), texts and voices; single = `3/F=α`,
flow = `3/F:flow=α` (the feature and its flow graph over all six layers' residual SAEs, pushed by
α·e^(−0.05·|l − 3|)). The attribute is measured from the audio (`steer-eval`), content by Whisper WER and text
match; "equal content" compares the two at the largest strength each reaches without losing more than
--wer-budget WER over the unsteered speech.

For each attribute the feature is the strongest probe feature (`presets`, either side) whose flow graph has a
residual link: for a feature with none, flow steering *is* single-layer steering (reported as skipped).

    python benchmarks/bench_flow_steer.py --work runs/flow_long --tokens 1500000   # → results/flow_steer.json
SAEs missing from --work are trained first, as `bench_crosslayer.py` does (~25 min at 1.5M tokens); the steering
runs take ~25 min on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from bench_crosslayer import train_missing  # noqa: E402

RESULTS = Path(__file__).parent / "results"
KEEP = ("alpha", "mean", "ci_lo", "ci_hi", "wer", "text_match", "n")


def pick(presets: dict, attribute: str, graph_of) -> tuple[int, str, dict] | None:
    """The strongest probe feature of `attribute` (plus, then minus) whose flow graph has > 1 residual node."""
    p = presets[attribute]
    for side in ("plus", "minus"):
        for f in p[side]:
            g = graph_of(f["feature"])
            if sum(n["kind"] == "resid" for n in g["nodes"]) > 1:
                return f["feature"], side, g
    return None


def at_equal_content(rows: list[dict], budget: float) -> dict | None:
    """The row of the largest |α| whose WER stays within `budget` of the unsteered row's (α = 0)."""
    base = next((r for r in rows if r["alpha"] == 0), None)
    if base is None or base.get("wer") is None:
        return None
    ok = [r for r in rows if r.get("wer") is not None and r["wer"] <= base["wer"] + budget]
    return max(ok, key=lambda r: abs(r["alpha"])) if ok else None


def plot(out: dict, path: Path) -> None:
    """Dose-response per attribute: the attribute measure and WER against strength, single vs flow."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = {a: r for a, r in out["runs"].items() if "single" in r}
    fig, axes = plt.subplots(2, max(1, len(runs)), figsize=(4 * max(1, len(runs)), 5.6), squeeze=False)
    for j, (attribute, run) in enumerate(runs.items()):
        for mode, colour in (("single", "#3b6ea8"), ("flow", "#c2662d")):
            rows = run[mode]["rows"]
            a = [r["alpha"] for r in rows]
            axes[0][j].errorbar(a, [r["mean"] for r in rows], yerr=[[r["mean"] - r["ci_lo"] for r in rows],
                                [r["ci_hi"] - r["mean"] for r in rows]], marker="o", color=colour, label=mode,
                                capsize=3)  # fmt: skip
            axes[1][j].plot(a, [r["wer"] for r in rows], marker="o", color=colour, label=mode)
        axes[0][j].set_title(f"{attribute}: 3/{run['feature']} ({run['side']})")
        axes[0][j].set_ylabel(attribute)
        axes[1][j].set_ylabel("WER (Whisper tiny.en)")
        axes[1][j].set_xlabel("strength α (× mean activation)")
        axes[0][j].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", default="runs/flow_long", help="the six residual SAEs (trained there when missing)")
    ap.add_argument("--tokens", type=int, default=1_500_000, help="training tokens of SAEs trained here")
    ap.add_argument("--texts", type=int, default=4)
    ap.add_argument("--voices", type=int, default=3)
    ap.add_argument("--alphas", default="0,2,4,8", help="strengths, in units of the feature's mean activation")
    ap.add_argument("--wer-budget", type=float, default=0.15, help="WER loss allowed for 'equal content'")
    ap.add_argument("--attributes", default="rate,gender,laughter")
    ap.add_argument("--out", default=str(RESULTS / "flow_steer.json"))
    ap.add_argument("--replot", action="store_true", help="only redraw the figure from --out")
    args = ap.parse_args()
    if args.replot:
        plot(json.loads(Path(args.out).read_text()), Path(args.out).with_suffix(".png"))
        return
    from ttslens.audio.steering.evaluate import SteerEvalConfig, run_steer_eval
    from ttslens.audio.steering.presets import PresetConfig, resolve_presets
    from ttslens.sae.files import load_sae
    from ttslens.sae.flow import SAESet, flow_graph

    work = Path(args.work)
    saes = [train_missing(work, layer, "resid", args.tokens) for layer in range(6)]
    presets = resolve_presets(PresetConfig(sae=str(saes[3]), source="probe", progress=False))["presets"]
    ss = SAESet.of({("resid", layer): load_sae(p) for layer, p in enumerate(saes)})
    alphas = [float(a) for a in args.alphas.split(",")]
    out = {"alphas": alphas, "texts": args.texts, "voices": args.voices, "wer_budget": args.wer_budget, "runs": {}}
    for attribute in args.attributes.split(","):
        chosen = pick(presets, attribute, lambda f: flow_graph(ss, 3, f, 8))
        if chosen is None:
            out["runs"][attribute] = {"skipped": "no probe feature of layer 3 has a residual link in its flow graph"}
            print(attribute, "skipped", flush=True)
            continue
        f, side, graph = chosen
        run = out["runs"][attribute] = {
            "feature": f, "side": side,
            "graph_resid_nodes": [f"{n['layer']}/{n['feature']}" for n in graph["nodes"] if n["kind"] == "resid"],
        }  # fmt: skip
        for mode, spec in (("single", f"3/{f}"), ("flow", f"3/{f}:flow")):
            cfg = SteerEvalConfig(
                sae=[str(p) for p in saes], attribute=attribute, steer=spec, alphas=alphas, texts=args.texts,
                voices=args.voices, out=str(work / "steer" / f"{attribute}_{mode}"), progress=False,
            )  # fmt: skip
            res = run_steer_eval(cfg)
            rows = [{k: r.get(k) for k in KEEP} for r in res["rows"]]
            run[mode] = {"rows": rows, "at_equal_content": at_equal_content(rows, args.wer_budget)}
            print(attribute, mode, [(r["alpha"], r["mean"], r.get("wer")) for r in rows], flush=True)
    out["command"] = " ".join(["python benchmarks/bench_flow_steer.py", *sys.argv[1:]])
    Path(args.out).write_text(json.dumps(out, indent=1))
    plot(out, Path(args.out).with_suffix(".png"))


if __name__ == "__main__":
    main()

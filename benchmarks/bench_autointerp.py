"""Auto-interp on the shipped demo backbone, checked against the corpus truth.

1. label every feature of an SAE with `ttslens label` (offline evidence labeler);
2. find, from the corpus truth, the features that carry speaker gender (male / female), speaking rate
   (fast / slow) and laughter: the largest point-biserial / Pearson correlation between a feature's
   activation at speech positions and the truth of that position (its utterance's gender and words per
   minute; whether its time lies in a laughter span), over `--truth-items` held-out-from-labelling items;
3. report whether their labels name the attribute and their detection AUROC; the per-modality AUROC
   table (both protocols); throughput. Writes results/autointerp.json and results/autointerp.png.

    python benchmarks/bench_autointerp.py --sae runs/ai/sae_l3 --out runs/ai/labels_l3
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path

import numpy as np
import torch

from ttslens.audio import load_backbone
from ttslens.autointerp.pipeline import LabelConfig, run_label
from ttslens.sae.activations import SPEECH
from ttslens.sae.files import load_sae, sae_info

RESULTS = Path(__file__).parent / "results"
ATTRIBUTES = {  # name: (truth column, sign, regex a label must match)
    "male": ("male", 1, r"\bmale voice"),
    "female": ("male", -1, r"female voice"),
    "laughter": ("laugh", 1, r"laugh"),
    "fast": ("wpm", 1, r"fast|quick"),
    "slow": ("wpm", -1, r"slow"),
}


@torch.no_grad()
def truth_correlations(bb, sae, layer: int, items) -> tuple[dict[str, np.ndarray], int]:
    """Per feature, Pearson r between its activation and each truth column over speech positions."""
    acts, cols = [], {"male": [], "laugh": [], "wpm": []}
    for it in items:
        tf = bb.teacher_forced(it.text, it.tokens, it.instruct, layers=[layer])
        sp = tf.sequence.modality == SPEECH
        acts.append(sae.encode(tf.hidden[layer][sp].float()))
        t = tf.sequence.times[sp].numpy() + 0.5 / bb.token_rate
        n = len(t)
        cols["male"].append(np.full(n, float(it.truth["gender"] == "male")))
        cols["wpm"].append(np.full(n, float(it.truth["rate_wpm"])))
        laugh = np.zeros(n, dtype=bool)
        for a, b in it.truth.get("laughter", []):
            laugh |= (t >= a) & (t < b)
        cols["laugh"].append(laugh.astype(float))
    a = torch.cat(acts).numpy().astype(np.float64)
    a = (a - a.mean(0)) / np.maximum(a.std(0), 1e-9)
    out = {}
    for k, v in cols.items():
        y = np.concatenate(v)
        y = (y - y.mean()) / max(y.std(), 1e-9)
        out[k] = a.T @ y / len(y)
    return out, a.shape[0]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sae", default="runs/ai/sae_l3")
    ap.add_argument("--out", default="runs/ai/labels_l3")
    ap.add_argument("--items", type=int, default=1000, help="corpus utterances scanned by `ttslens label`")
    ap.add_argument("--truth-items", type=int, default=400, help="utterances for the truth correlations")
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--json", default=str(RESULTS / "autointerp.json"), help="summary JSON (the plot beside it, .png)")
    args = ap.parse_args()

    t0 = time.time()
    summary = run_label(LabelConfig(sae=args.sae, out=args.out, items=args.items, workers=args.workers))
    wall = time.time() - t0
    recs = {r["feature"]: r for r in map(json.loads, (Path(args.out) / "labels.jsonl").read_text().splitlines())}

    info = sae_info(args.sae)
    bb, sae = load_backbone(info["backbone"]), load_sae(args.sae)
    labelled = set(json.loads((Path(args.out) / "collect.json").read_text())["items"])
    corpus = bb.default_corpus().items("all")
    truth_items = [it for i, it in enumerate(corpus) if i not in labelled][: args.truth_items]
    corr, n_pos = truth_correlations(bb, sae, info["layer"], truth_items)

    found = {}
    for name, (col, sign, pattern) in ATTRIBUTES.items():
        r = sign * corr[col]
        f = int(np.nanargmax(r))
        rec = recs.get(f, {})
        auc = rec.get("scores", {}).get("detection_auroc")
        found[name] = {
            "feature": f,
            "truth_r": round(float(r[f]), 3),
            "label": rec.get("label"),
            "modality": rec.get("modality"),
            "names_attribute": bool(rec.get("label") and re.search(pattern, rec["label"])),
            "detection_auroc": auc,
            "detection_auroc_uniform": rec.get("scores", {}).get("detection_auroc_uniform"),
            "target_met": bool(rec.get("label") and re.search(pattern, rec["label"]) and auc and auc >= 0.95),
            "runner_ups": [
                {
                    "feature": int(i),
                    "truth_r": round(float(r[i]), 3),
                    "label": recs.get(int(i), {}).get("label"),
                    "detection_auroc": recs.get(int(i), {}).get("scores", {}).get("detection_auroc"),
                }
                for i in np.argsort(-r)[1:4]
            ],
        }
    result = {
        "command": "python benchmarks/bench_autointerp.py " + " ".join(sys.argv[1:]),
        "sae": info.get("sae"),
        "layer": info["layer"],
        "summary": summary,
        "wall_s": round(wall, 1),
        "features_per_min_total": round(60 * summary["labelled_now"] / wall, 1) if summary["labelled_now"] else None,
        "truth_positions": n_pos,
        "attributes": found,
    }
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps(result, indent=2))
    tmp.replace(out)
    plot(list(recs.values()), found, out.with_suffix(".png"))
    print(json.dumps({k: result[k] for k in ("attributes", "wall_s", "features_per_min_total")}, indent=2))
    print(json.dumps({k: summary[k] for k in ("detection_auroc", "detection_auroc_uniform", "modalities")}, indent=2))


def plot(recs: list[dict], found: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, key, title in (
        (axes[0], "detection_auroc", "held-out top-pool quantiles"),
        (axes[1], "detection_auroc_uniform", "uniform sample of activations"),
    ):
        data, names = [], []
        for mod in ("text", "speech", "mixed"):
            v = [r["scores"][key] for r in recs if r["modality"] == mod and r["scores"].get(key) is not None]
            if v:
                data.append(v)
                names.append(f"{mod}\n(n={len(v)}, mean {np.mean(v):.2f})")
        ax.boxplot(data, tick_labels=names, showmeans=True)
        ax.axhline(0.5, color="grey", lw=0.8, ls=":")
        ax.set_ylim(0, 1.02)
        ax.set_title(f"detection AUROC: {title}")
    mods = [m for m in ("text", "speech", "mixed") if any(r["modality"] == m for r in recs)]
    for name, f in found.items():
        if f["detection_auroc"] is not None and f["modality"] in mods:
            x = mods.index(f["modality"]) + 1.25
            axes[0].annotate(name, (x, f["detection_auroc"]), fontsize=7, color="crimson")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    main()

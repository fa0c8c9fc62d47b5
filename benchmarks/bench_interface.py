"""Interface v2 overheads on the shipped demo backbone, as ratios measured in one run.

1. Harvest overhead: `BackboneActivations` (hook engine + recording + per-row metadata + CPU buffer)
   vs a bare forward of the same padded batches through the backbone, no hooks:
   - `harvest_full`: recording the *last* layer, so both run every layer (the hooks' and buffer's cost alone);
   - `harvest_at_layer`: recording layer L (default 3), where the engine stops the pass after L.
2. Steering: time per generated token with a preset edit vs unsteered, same text, same seed, same
   length (min = max tokens), runs interleaved in ABBA order; medians.
Writes results/interface.json.

    python benchmarks/bench_interface.py --sae runs/ai/sae_l3     # an SAE on the demo's layer 3
    python benchmarks/bench_interface.py --repeats 9              # trains a small one first (~1 min)
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

from ttslens.audio import load_backbone
from ttslens.audio.harvest import BackboneActivations
from ttslens.audio.steering.api import SteerableTTS
from ttslens.audio.steering.evaluate import time_per_token

RESULTS = Path(__file__).parent / "results"
TEXT = "we will meet at the station after lunch."


def bare_forward(bb, items) -> None:
    seqs = [bb.append_speech(bb.sequence(it.text, it.instruct), it.tokens) for it in items]
    ids, ctx, attn, pos = bb.pad(seqs)
    with torch.no_grad():
        bb.forward(bb._embed(ids, ctx.modality), attn, pos)


def harvest_overhead(bb, layer: int, batches: int, batch: int, repeats: int) -> dict:
    items = bb.default_corpus().items("train")[: batches * batch]
    chunks = [items[i : i + batch] for i in range(0, len(items), batch)]
    runs = {"bare": [], "harvest_full": [], "harvest_at_layer": []}
    sources = {
        "harvest_full": BackboneActivations(bb, items, bb.n_layers - 1, batch=batch),
        "harvest_at_layer": BackboneActivations(bb, items, layer, batch=batch),
    }
    kinds = list(runs)
    for r in range(repeats + 1):  # round 0 warms up; the order rotates so no kind always runs first
        for kind in kinds[r % 3 :] + kinds[: r % 3]:
            t0 = time.perf_counter()
            for j, chunk in enumerate(chunks):
                if kind == "bare":
                    bare_forward(bb, chunk)
                else:
                    sources[kind].rows_batch(list(range(j * batch, j * batch + len(chunk))))
            if r:
                runs[kind].append(time.perf_counter() - t0)
    med = {k: statistics.median(v) for k, v in runs.items()}
    n_rows = sum(len(bb.append_speech(bb.sequence(it.text, it.instruct), it.tokens)) for it in items)
    return {
        "items": len(items),
        "rows": n_rows,
        "batch": batch,
        "layer": layer,
        "bare_s": round(med["bare"], 4),
        "harvest_full_s": round(med["harvest_full"], 4),
        "harvest_at_layer_s": round(med["harvest_at_layer"], 4),
        "ratio_full": round(med["harvest_full"] / med["bare"], 4),
        "ratio_at_layer": round(med["harvest_at_layer"] / med["bare"], 4),
        "repeats": repeats,
    }


def small_sae(out: Path, layer: int) -> Path:
    from ttslens.audio.harvest import train_sae
    from ttslens.sae.base import SAEConfig
    from ttslens.sae.training import TrainConfig

    if not (out / "cfg.json").exists():
        cfg = TrainConfig(
            sae=SAEConfig(arch="batchtopk", d_sae=1024, k=16),
            backbone="demo",
            layer=layer,
            tokens=150_000,
            out=str(out),
            overwrite=True,
        )
        train_sae(cfg, progress=False)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sae", default="", help="an SAE on the demo backbone (default: train one in runs/bench_iface)")
    ap.add_argument("--layer", type=int, default=3)
    ap.add_argument("--batches", type=int, default=6)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--steer", default="gender=3", help="the steering edit timed")
    args = ap.parse_args()
    torch.manual_seed(0)
    bb = load_backbone("demo")
    harvest = harvest_overhead(bb, args.layer, args.batches, args.batch, args.repeats)
    print("harvest", harvest, flush=True)
    sae = args.sae or str(small_sae(Path("runs/bench_iface/sae"), args.layer))
    tts = SteerableTTS.load(bb, sae)
    plain, steered = time_per_token(tts, TEXT, args.steer, tokens=120, repeats=args.repeats * 2)
    steer = {"edit": args.steer, "unsteered_ms": round(plain, 3), "steered_ms": round(steered, 3)}
    steer["ratio"] = round(steered / plain, 4)
    print("steer", steer, flush=True)
    out = {
        "harvest": harvest,
        "steer": steer,
        "torch_threads": torch.get_num_threads(),
        "command": " ".join(["python benchmarks/bench_interface.py", *sys.argv[1:]]),
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "interface.json").write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()

"""RL-trained steering vectors vs SAE-latent steering on the demo TTS backbone, layer 3 (issue 16).

For each attribute a vector is trained by online RL (`ttslens vectors train --backbone demo`, GRPO, KL 0.01) against
the attribute's reward plus content (`asr`: 1 − Whisper tiny.en WER), on training-corpus texts: laughter
(`laughter+asr`), gender (`male+asr`; −strength pushes towards female) and rate (`slower+asr`; −strength faster).
Then both are swept with `steer-eval` on the same held-out texts, voices and seeds: the vector at strengths s, and
the SAE's preset for the attribute (`presets`, layer 3) at the strengths whose edit has the same norm per position
(‖α Σ Z_f W_dec[f]‖ = |s|·‖v‖), signed the vector's way (the rate preset's + is faster): equal strength
budgets. Also each vector's logit lens (the demo's decision head: stay / next phoneme / stop) and its SAE view
(the layer-3 SAE features it is most aligned with).

    python benchmarks/bench_vectors_tts.py          # → results/vectors_tts.json, .png; ~45 min on 2 cores
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

RESULTS = Path(__file__).parent / "results"
sys.path.insert(0, str(Path(__file__).parent))
RUNS = {  # run → (attribute measured, reward, the preset's attribute, strengths of the sweep)
    "laughter": ("laughter", "laughter+asr", "laughter", [0.0, 0.5, 1.0, 1.5]),
    "laughter_logodds": ("laughter", "laughter_logodds+asr", "laughter", [0.0, 0.5, 1.0, 1.5]),
    "gender": ("gender", "male+asr", "gender", [-1.5, -1.0, 0.0, 1.0, 1.5]),
    "rate": ("rate", "slower+asr", "rate", [-1.5, -1.0, 0.0, 1.0, 1.5]),
}
SIGN = {"rate": -1.0}  # the preset's + is faster, the rate vector's + slower: the SAE is swept the vector's way
KEEP = ("alpha", "mean", "ci_lo", "ci_hi", "wer", "text_match", "content", "p_male_timbre", "n")


def train_texts(n: int) -> list[str]:
    from ttslens.audio.backbones.registry import load_backbone
    from ttslens.audio.corpus import backbone_items

    bb = load_backbone("demo")
    pool = [it.text for it in backbone_items(bb, "train") if "[" not in it.text and 25 <= len(it.text) <= 70]
    return pool[:: max(1, len(pool) // n)][:n]


def preset_norm(sae_dir: str, attribute: str) -> float:
    """‖shift‖ of the attribute's preset at α = 1 (the edit added at every steered position)."""
    from ttslens.audio.steering.api import SteerableTTS

    tts = SteerableTTS.load("demo", [sae_dir])
    (steer,) = tts.steers(tts.resolve({attribute: 1.0})).values()
    return float(steer.shift(steer.sae.W_dec).norm())


def plot(out: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = [a for a in out["runs"] if "vector" in out["runs"][a]]
    fig, axes = plt.subplots(2, len(runs), figsize=(4.2 * len(runs), 6.4), squeeze=False)
    for j, a in enumerate(runs):
        r = out["runs"][a]
        for mode, color in (("vector", "tab:red"), ("sae", "tab:blue")):
            rows = r[mode]["rows"]
            x = [row["budget"] for row in rows]
            axes[0, j].plot(x, [row["mean"] for row in rows], "o-", color=color, label=mode)
            axes[1, j].plot(x, [row.get("wer") for row in rows], "o-", color=color, label=mode)
        axes[0, j].set_title(f"{a}: {out['runs'][a]['measure']}")
        axes[1, j].set_xlabel("signed edit norm per position (strength × ‖v‖)")
        axes[1, j].set_ylabel("Whisper WER")
        axes[0, j].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", default="runs/vectors_tts")
    ap.add_argument("--sae-work", default="runs/flow_long", help="where the layer-3 SAE is (trained there if missing)")
    ap.add_argument("--sae-tokens", type=int, default=1_500_000)
    ap.add_argument("--attributes", default="gender,rate,laughter,laughter_logodds", help=f"runs, of {list(RUNS)}")
    ap.add_argument("--steps", type=int, default=25)
    ap.add_argument("--prompts-per-step", type=int, default=2)
    ap.add_argument("--samples", type=int, default=6)
    ap.add_argument("--train-texts", type=int, default=24)
    ap.add_argument("--texts", type=int, default=4, help="held-out texts of the sweeps")
    ap.add_argument("--voices", type=int, default=2)
    ap.add_argument("--out", default=str(RESULTS / "vectors_tts.json"))
    ap.add_argument("--replot", action="store_true")
    args = ap.parse_args()
    if args.replot:
        plot(json.loads(Path(args.out).read_text()), Path(args.out).with_suffix(".png"))
        return
    from bench_crosslayer import train_missing

    from ttslens.audio.steering.evaluate import ATTRIBUTES as MEASURES
    from ttslens.audio.steering.evaluate import SteerEvalConfig, run_steer_eval
    from ttslens.audio.vectors import run_analyze, run_readout, run_train
    from ttslens.sae.vectors.commands import AnalyzeConfig, ReadoutConfig
    from ttslens.sae.vectors.train import VectorConfig
    from ttslens.sae.vectors.vectors import load_vectors

    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    sae = str(train_missing(Path(args.sae_work), 3, "resid", args.sae_tokens))
    prompts = work / "train_texts.txt"
    prompts.write_text("\n".join(train_texts(args.train_texts)) + "\n")
    out = {"command": " ".join(["python benchmarks/bench_vectors_tts.py", *sys.argv[1:]]), "sae": sae, "runs": {}}
    if Path(args.out).exists():  # runs of other --attributes are kept
        out["runs"] = json.loads(Path(args.out).read_text()).get("runs", {})
    for name in args.attributes.split(","):
        attribute, reward, preset, strengths = RUNS[name]
        vdir = work / name
        if not (vdir / "summary.json").exists():
            cfg = VectorConfig(backbone="demo", prompts=str(prompts), reward=reward, layers=[3], steps=args.steps,
                               prompts_per_step=args.prompts_per_step, samples=args.samples, eval_samples=0,
                               out=str(vdir), overwrite=True)  # fmt: skip
            run_train(cfg)
        summary = json.loads((vdir / "summary.json").read_text())
        vec, _ = load_vectors(vdir)
        v_norm = float(vec.vector(3).norm())
        n_sae = preset_norm(sae, preset)
        run = out["runs"][name] = {
            "attribute": attribute, "reward": reward, "measure": MEASURES[attribute], "vector_norm": v_norm,
            "preset_norm_at_alpha_1": n_sae, "train_log": str(vdir / "train_log.jsonl"),
            "train_reward_first_last": _first_last(vdir),
        }  # fmt: skip
        run["readout"] = run_readout(ReadoutConfig(vectors=str(vdir), sae=[sae], top=5))["directions"]["layer.3"]
        acfg = AnalyzeConfig(vectors=str(vdir), samples=2, max_prompts=4, out=str(vdir / "analysis.json"))
        run["paths"] = run_analyze(acfg)["paths"]  # direct / through later attention / through later MLPs
        for mode in ("vector", "sae"):
            sign = SIGN.get(attribute, 1.0)
            alphas = strengths if mode == "vector" else sorted(round(sign * s * v_norm / n_sae, 4) for s in strengths)
            cfg = SteerEvalConfig(
                sae=[] if mode == "vector" else [sae], vectors=str(vdir) if mode == "vector" else "",
                attribute=attribute, steer="" if mode == "vector" else preset, alphas=alphas, texts=args.texts,
                voices=args.voices, scope="generated", out=str(work / "sweeps" / f"{name}_{mode}"), progress=False,
            )  # fmt: skip
            res = run_steer_eval(cfg)
            rows = [{k: r.get(k) for k in KEEP} for r in res["rows"]]
            for r in rows:  # the signed edit norm per position, + the vector's way
                r["budget"] = round(r["alpha"] * (v_norm if mode == "vector" else sign * n_sae), 3)
            rows.sort(key=lambda r: r["budget"])
            run[mode] = {"alphas": alphas, "rows": rows}
            print(name, mode, [(r["alpha"], r["mean"], r.get("wer")) for r in rows], flush=True)
        run["summary"] = summary.get("eval")
        Path(args.out).write_text(json.dumps(out, indent=1))
    plot(out, Path(args.out).with_suffix(".png"))


def _first_last(vdir: Path) -> dict:
    rows = [json.loads(x) for x in (vdir / "train_log.jsonl").read_text().splitlines()]
    k = max(1, len(rows) // 5)
    mean = lambda rs: sum(r["reward"] for r in rs if r.get("reward") is not None) / max(1, len(rs))  # noqa: E731
    return {"first_fifth": mean(rows[:k]), "last_fifth": mean(rows[-k:]), "steps": len(rows)}


if __name__ == "__main__":
    main()

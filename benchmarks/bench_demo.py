"""Does the demo backbone speak as its corpus does? Generated (not teacher-forced) speech on held-out
texts, measured with the audio measures:

- gender without a hint (each should be 35-65%) and with an instruct hint (>= 90% should follow it);
- duration vs text length (r >= 0.8) and the spread of speaking rate against the corpus;
- laughter: texts with a [laughter] tag (>= 70% detected) vs untagged texts (<= 5%, but > 0);
- real-time factor of generate + decode on this machine (<= 0.5).

    .venv/bin/python benchmarks/bench_demo.py                    # the shipped backbone, 100 texts
    .venv/bin/python benchmarks/bench_demo.py --backbone runs/demo-build/assets --texts 40

Writes benchmarks/results/demo_targets.json and demo_targets.png.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from ttslens.audio import load_backbone
from ttslens.audio.backbones.demo.corpus_gen import LAUGH_TAG, instruct_text
from ttslens.audio.measures import laughter_detector_for, timbre_gender_for
from ttslens.audio.measures.signal import measure

RESULTS = Path(__file__).parent / "results"


def heldout_texts(bb, n: int, seed: int) -> list[str]:
    corpus = bb.default_corpus()
    items = corpus.items("heldout") or corpus.items("all")
    texts = [" ".join(w for w in it.text.split() if w != LAUGH_TAG) for it in items]
    texts = list(dict.fromkeys(t for t in texts if t))
    if len(texts) < n:
        raise SystemExit(f"only {len(texts)} held-out texts in the corpus; ask for --texts {len(texts)}")
    return [texts[i] for i in np.random.default_rng(seed).permutation(len(texts))[:n]]


def with_tag(text: str, rng: np.random.Generator) -> str:
    words = text.split()
    i = int(rng.integers(1, len(words))) if len(words) > 1 else 1
    return " ".join([*words[:i], LAUGH_TAG, *words[i:]])


def run(bb, jobs: list[dict], seed: int, detector, timbre=None) -> list[dict]:
    rows = []
    for k, job in enumerate(tqdm(jobs, desc="generate + measure")):
        t0 = time.perf_counter()
        wave, g = bb.synthesize(job["text"], instruct=job.get("instruct"), seed=seed + k)
        elapsed = time.perf_counter() - t0
        m = measure(wave, bb.sample_rate, detector, fast=True, gender_model=timbre)
        rows.append(job | m._asdict() | {"seconds": elapsed, "stopped": g.stopped, "tokens": len(g.tokens)})
    return rows


def corr(a, b) -> float:
    a, b = np.asarray(a, float), np.asarray(b, float)
    ok = np.isfinite(a) & np.isfinite(b)
    return float(np.corrcoef(a[ok], b[ok])[0, 1])


def summarise(rows: list[dict], corpus_cv: float) -> dict:
    def sel(kind):
        return [r for r in rows if r["kind"] == kind]

    def male(rs, key="p_male"):
        return float(np.mean([r[key] >= 0.5 for r in rs if r.get(key) is not None and np.isfinite(r[key])]))

    plain, tagged = sel("plain"), sel("tagged")
    untagged = plain + sel("hint_male") + sel("hint_female")
    per_char = [r["duration_s"] / len(r["text"]) for r in plain]

    def laughed(r) -> bool:
        return r["laughter"] is not None and r["laughter"] >= r["threshold"]

    audio_s = sum(r["duration_s"] for r in rows)
    return {
        "unhinted_male_share": male(plain),
        "hinted_male_follow": male(sel("hint_male")),
        "hinted_female_follow": 1 - male(sel("hint_female")),
        "by_timbre": {
            "unhinted_male_share": male(plain, "p_male_timbre"),
            "hinted_male_follow": male(sel("hint_male"), "p_male_timbre"),
            "hinted_female_follow": 1 - male(sel("hint_female"), "p_male_timbre"),
        },
        "duration_vs_text_chars_r": corr([len(r["text"]) for r in plain], [r["duration_s"] for r in plain]),
        "voiced_vs_text_chars_r": corr([len(r["text"]) for r in plain], [r["voiced_s"] for r in plain]),
        "seconds_per_char_cv_generated": float(np.std(per_char) / np.mean(per_char)),
        "seconds_per_char_cv_corpus": corpus_cv,
        "syllables_per_s_p10_p50_p90": [
            float(np.nanpercentile([r["syllables_per_s"] for r in plain], q)) for q in (10, 50, 90)
        ],
        "laughter_tagged_rate": float(np.mean([laughed(r) for r in tagged])),
        "laughter_untagged_rate": float(np.mean([laughed(r) for r in untagged])),
        "laughter_untagged_n": len(untagged),
        "stopped_share": float(np.mean([r["stopped"] for r in rows])),
        "rtf": sum(r["seconds"] for r in rows) / max(audio_s, 1e-9),
        "audio_seconds": audio_s,
    }


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(1, 3, figsize=(14, 4))
    plain = [r for r in rows if r["kind"] == "plain"]
    ax[0].scatter([len(r["text"]) for r in plain], [r["duration_s"] for r in plain], s=10)
    ax[0].set(xlabel="text length (characters)", ylabel="generated duration (s)", title="duration vs text length")
    bins = np.geomspace(60, 400, 30)
    for kind, colour in (("plain", "grey"), ("hint_male", "tab:blue"), ("hint_female", "tab:red")):
        f0 = [r["median_f0_hz"] for r in rows if r["kind"] == kind and np.isfinite(r["median_f0_hz"])]
        ax[1].hist(f0, bins=bins, alpha=0.5, label=kind, color=colour)
    ax[1].axvline(165, color="k", lw=0.8)
    ax[1].set(xscale="log", xlabel="median F0 (Hz)", title="pitch of generated speech", ylabel="count")
    ax[1].legend()
    for kind, colour in (("plain", "grey"), ("tagged", "tab:orange")):
        p = [r["laughter"] for r in rows if r["kind"] == kind]
        ax[2].hist(p, bins=np.linspace(0, 1, 21), alpha=0.5, label=kind, color=colour)
    ax[2].set(xlabel="laughter detector probability", title="laughter", ylabel="count")
    ax[2].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--backbone", default="demo", help="backbone name or `ttslens demo build` directory")
    ap.add_argument("--texts", type=int, default=100, help="held-out texts per condition")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2, help="torch threads (the target is for 2 cores)")
    ap.add_argument("--out", default=str(RESULTS / "demo_targets.json"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    bb = load_backbone(args.backbone)
    det = laughter_detector_for(bb)
    timbre = timbre_gender_for(bb)
    texts = heldout_texts(bb, args.texts, args.seed)
    rng = np.random.default_rng(args.seed + 1)
    jobs = [{"kind": "plain", "text": t} for t in texts]
    jobs += [{"kind": "tagged", "text": with_tag(t, rng)} for t in texts]
    half = len(texts) // 2
    jobs += [{"kind": "hint_male", "text": t, "instruct": instruct_text("male", None)} for t in texts[:half]]
    jobs += [{"kind": "hint_female", "text": t, "instruct": instruct_text("female", None)} for t in texts[half:]]
    rows = run(bb, jobs, args.seed, det, timbre)
    for r in rows:
        r["threshold"] = det.threshold
    corpus = [it.truth for it in bb.default_corpus().items("train") if not it.truth.get("laughter")]
    per_char = [c["duration"] / len(c["text"]) for c in corpus]
    summary = summarise(rows, float(np.std(per_char) / np.mean(per_char)))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    record = {"backbone": args.backbone, "build": bb.info.get("command"), "texts": args.texts, "summary": summary}
    out.write_text(json.dumps(record | {"rows": rows}, indent=1, default=float))
    plot(rows, out.with_suffix(".png"))
    print(json.dumps(record, indent=2))


if __name__ == "__main__":
    main()

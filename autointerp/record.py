"""One feature → its labels.jsonl record.

The modality from the speech share of its top-`top` activations; examples (top activations spread over
utterances, held-out quantile samples, random non-activating negatives of its modality); enrichment of
the top activations' clip measures and tokens against random positions; a label from the labeler,
chosen on the top activations and scored by detection AUROC on the held-out samples vs other negatives.
A label is `confident` only if the labeler trusts it *and* that detection score exists.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

from ttslens.autointerp.evidence import finite
from ttslens.autointerp.scoring import cohens_d, log_odds
from ttslens.sae.activations import SPEECH

if TYPE_CHECKING:
    from ttslens.autointerp.job import Job

Example = tuple[dict, dict | None]  # (text context, clip measures or None at a text position)
MIN_SCORED = 3  # held-out activating examples needed for a detection score


def feature_record(job: Job, f: int) -> dict:
    """The labels.jsonl record of feature f (its clips are written by the batch)."""
    col, c = job.col, job.cfg
    fires = int(col.fires[f])
    base = {"feature": f, "fires": fires, "freq": finite(fires / max(1, col.n_positions))}
    if fires == 0:
        return base | {
            "modality": "dead",
            "speech_share": None,
            "label": f"dead (never fired on {col.n_positions} positions)",
            "labeler": job.labeler.name,
            "scores": {},
            "examples": [],
        }
    ranked_i, ranked_a, share = top_activations(job, f)
    modality = "speech" if share >= c.speech_share else "text" if share <= c.text_share else "mixed"
    # the label is chosen on top examples of the feature's modality, as it is scored on held-out ones of it:
    # a few speech positions among a text feature's top would let any audio measure "separate" them from
    # the text negatives
    ranked_i, ranked_a = of_modality(job, ranked_i, ranked_a, modality)
    top_i, top_a = ranked_i[: c.top], ranked_a[: c.top]
    # held-out activating examples: quantiles of the rest of the top pool (as Delphi samples the
    # activation range of a feature's activating contexts), and of a uniform sample of all activations
    q_i, q_a = quantile_sample(job, ranked_i[c.top :], ranked_a[c.top :], modality, set(top_i))
    valid = col.res_idx[f] >= 0
    u_i, _ = quantile_sample(job, col.res_idx[f][valid].tolist(), col.res_act[f][valid].tolist(), modality, set(top_i))
    sel_neg, score_neg = job.pool.negatives(f, modality, c.negatives, c.seed)
    top, quant, uniform = examples(job, top_i), examples(job, q_i), examples(job, u_i)
    neg_sel, neg_score = examples(job, sel_neg), examples(job, score_neg)
    enrich = enrichment(job, top)
    if job.labeler.name == "llm":
        lab = job.labeler.label(f, top, neg_sel, modality, job.asr, _effect_sizes(enrich))
    else:
        lab = job.labeler.label(f, top, neg_sel, modality, job.asr)
    ok = lab.get("label") and not lab.get("failure")
    score = job.labeler.score(f, lab, quant, neg_score) if ok and len(quant) >= MIN_SCORED else math.nan
    score_u = job.labeler.score(f, lab, uniform, neg_score) if ok and len(uniform) >= MIN_SCORED else math.nan
    res = col.res_act[f][valid].numpy()
    counts, edges = np.histogram(res, bins=20) if len(res) else (np.zeros(0), np.zeros(0))
    record = base | {
        "modality": modality,
        "speech_share": finite(share),
        "label": lab.get("label"),
        "labeler": job.labeler.name,
        **{k: v for k, v in lab.items() if k not in ("label", "_hypothesis")},
        "confident": bool(lab.get("confident")) and finite(score) is not None,
        "scores": {
            "detection_auroc": finite(score),
            "detection_auroc_uniform": finite(score_u),
            "selection_auroc": lab.get("selection_auroc"),
            "n_pos": len(quant),
            "n_pos_uniform": len(uniform),
            "n_neg": len(neg_score),
        },
        "max_act": finite(top_a[0]) if top_a else None,
        "mean_act": finite(float(col.act_sum[f]) / fires),
        "evidence": enrich,
        "histogram": {"edges": [round(float(e), 4) for e in edges], "counts": counts.tolist()},
        "examples": [_example(ctx, m, a) for (ctx, m), a in zip(top, top_a, strict=True)],
        "quantile_examples": [
            [int(col.items[int(col.item_of[i])]), int(col.pos[i]), finite(a)] for i, a in zip(q_i, q_a, strict=True)
        ],
    }
    if record.get("failure"):
        record["label"] = None
    return record


# ---- examples ------------------------------------------------------------------------------------------
def top_activations(job: Job, f: int) -> tuple[list[int], list[float], float]:
    """Top activations spread over utterances (speech positions at least half a clip apart; a text position
    whose position and activation another top one has — the same prefix, as at the start of every text —
    only once), and the speech share of the raw top-`top` (the modality vote)."""
    col, c = job.col, job.cfg
    valid = col.top_idx[f] >= 0
    idx, acts = col.top_idx[f][valid].tolist(), col.top_act[f][valid].tolist()
    raw = idx[: c.top]
    share = sum(int(col.modality[i]) == SPEECH for i in raw) / len(raw) if raw else math.nan
    gap = max(1, round(c.clip_s * job.bb.token_rate / 2))
    keep: list[int] = []
    vals: list[float] = []
    taken: dict[int, list[int]] = {}
    prefixes: set[tuple[int, float]] = set()
    for i, a in zip(idx, acts, strict=True):
        j, p = int(col.item_of[i]), int(col.pos[i])
        speech = int(col.modality[i]) == SPEECH
        near = gap if speech else 1
        if any(abs(p - q) < near for q in taken.get(j, [])) or (not speech and (p, a) in prefixes):
            continue
        if not speech:
            prefixes.add((p, a))
        taken.setdefault(j, []).append(p)
        keep.append(i)
        vals.append(a)
    return keep, vals, share


def quantile_sample(job: Job, idx: list[int], acts: list[float], modality: str, exclude: set[int]):
    """Held-out activating examples of the feature's modality: one per activation quantile bin."""
    ok = [(a, i) for i, a in zip(idx, acts, strict=True) if i >= 0 and i not in exclude]
    ok = sorted((a, i) for a, i in ok if _in_modality(job, i, modality))
    if len(ok) <= job.cfg.quantiles:
        return [i for _, i in ok], [a for a, _ in ok]
    bins = np.array_split(np.arange(len(ok)), job.cfg.quantiles)
    pick = [ok[b[len(b) // 2]] for b in bins]
    return [i for _, i in pick], [a for a, _ in pick]


def of_modality(job: Job, idx: list[int], acts: list[float], modality: str) -> tuple[list[int], list[float]]:
    """The positions (and activations) of `modality` (text includes specials; mixed keeps all), in order."""
    keep = [(i, a) for i, a in zip(idx, acts, strict=True) if _in_modality(job, i, modality)]
    return [i for i, _ in keep], [a for _, a in keep]


def _in_modality(job: Job, i: int, modality: str) -> bool:
    speech = int(job.col.modality[i]) == SPEECH
    return modality == "mixed" or speech == (modality == "speech")


def examples(job: Job, idxs: list[int]) -> list[Example]:
    """(context, clip measures) of positions; the pool's are measured already, the others in one batch."""
    pool = job.pool
    fresh = iter(job.ev.measures([i for i in idxs if i not in pool.meas]))
    return [(pool.ctx.get(i) or job.ev.context(i), pool.meas[i] if i in pool.meas else next(fresh)) for i in idxs]


# ---- evidence for the record ------------------------------------------------------------------------------
def enrichment(job: Job, top: list[Example]) -> dict:
    """Top activations vs random positions: effect size (Cohen's d) and log-odds of a tag per measure;
    token counts with log-odds vs random text positions."""
    out: dict = {}
    speech = [(c, m) for c, m in top if m is not None]
    for k, base in job.pool.baseline.items():
        vals = np.array([(c["t_start"] if k == "t_start" else m.get(k, math.nan)) for c, m in speech], float)
        if not len(vals) or not np.isfinite(vals).any():
            continue
        ref = base[np.isfinite(base)]
        cut = 0.5 if k in ("laughter", "p_male") else (float(np.median(ref)) if len(ref) else 0.0)
        hits = int((vals[np.isfinite(vals)] > cut).sum())
        out[k] = {
            "top": finite(np.nanmean(vals)),
            "random": finite(np.mean(ref)) if len(ref) else None,
            "d": finite(cohens_d(vals, ref)),
            "log_odds": finite(log_odds(hits, int(np.isfinite(vals).sum()), int((ref > cut).sum()), len(ref))),
        }
    texts = [c["token"] for c, m in top if m is None]
    if texts:
        base = job.pool.tokens
        counts: dict[str, int] = {}
        for t in texts:
            counts[t] = counts.get(t, 0) + 1
        out["tokens"] = [
            {"token": t, "n": n, "log_odds": finite(log_odds(n, len(texts), base.count(t), max(len(base), 1)))}
            for t, n in sorted(counts.items(), key=lambda kv: -kv[1])[:8]
        ]
    return out


def _effect_sizes(enrich: dict) -> dict:
    return {k: v["d"] for k, v in enrich.items() if isinstance(v, dict) and v.get("d") is not None}


def _example(ctx: dict, meas: dict | None, act: float) -> dict:
    ex = {k: ctx[k] for k in ("idx", "item", "pos", "modality", "token", "window")} | {"act": finite(act)}
    if ctx["modality"] == "speech":
        ex["time"] = ctx["time"]
    if meas is not None:
        ex["padded"] = bool(meas.get("padded"))
        ex["measures"] = {k: (finite(v) if isinstance(v, float) else v) for k, v in meas.items() if k != "padded"}
    return ex

"""Scores: detection AUROC (can a label's predictor tell activating from non-activating examples?),
effect sizes and log-odds for enrichment against random positions."""

from __future__ import annotations

import math

import numpy as np
from scipy.stats import rankdata


def auroc(pos: np.ndarray, neg: np.ndarray) -> float:
    """P(score of a random positive > that of a random negative), ties counted half; nan if a side is empty."""
    pos, neg = np.asarray(pos, float), np.asarray(neg, float)
    if not len(pos) or not len(neg):
        return math.nan
    ranks = rankdata(np.concatenate([pos, neg]))
    return float((ranks[: len(pos)].sum() - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg)))


def cohens_d(a: np.ndarray, b: np.ndarray) -> float:
    """Standardised mean difference (a - b) over the pooled SD; nan when undefined."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    a, b = a[np.isfinite(a)], b[np.isfinite(b)]
    if len(a) < 2 or len(b) < 2:
        return math.nan
    sd = math.sqrt(((len(a) - 1) * a.var(ddof=1) + (len(b) - 1) * b.var(ddof=1)) / (len(a) + len(b) - 2))
    return float((a.mean() - b.mean()) / sd) if sd > 1e-12 else math.nan


def log_odds(hits_a: int, n_a: int, hits_b: int, n_b: int) -> float:
    """Log odds ratio of a tag in group a vs group b (Haldane +0.5 correction)."""
    return math.log((hits_a + 0.5) / (n_a - hits_a + 0.5)) - math.log((hits_b + 0.5) / (n_b - hits_b + 0.5))


def summarise(records: list[dict], key: str = "detection_auroc") -> dict:
    """Detection AUROC per modality (mean, median, count) over labelled features, like the paper's table."""
    out: dict[str, dict] = {}
    for mod in ("text", "speech", "mixed", "all"):
        vals = [
            r["scores"][key]
            for r in records
            if r.get("scores", {}).get(key) is not None and (mod == "all" or r["modality"] == mod)
        ]
        out[mod] = {
            "features": len(vals),
            "mean_auroc": round(float(np.mean(vals)), 4) if vals else None,
            "median_auroc": round(float(np.median(vals)), 4) if vals else None,
        }
    return out

"""Feature stability across seeds (arXiv 2606.12138): which features of an SAE are real, not an accident of its
seed.

For SAEs trained alike but for the seed, each feature of the first is matched into every other by linear
assignment (`scipy.optimize.linear_sum_assignment`) on decoder cosine (optionally averaged with encoder
cosine); its **stability** is the fraction of other seeds holding a match at cosine ≥ `threshold` (default 0.7).
With data at hand, stability is set against firing frequency and reconstruction contribution (drop-one-feature
ΔFVU); the unstable features' span is compared across seeds (principal angles); and a **pooled SAE** keeps the
most stable unique features of all but the last seed, deduplicated by the same matching, and is compared with
each seed on stability (against the held-out last seed) and EV.

`ttslens stability --sae S1 --sae S2 ... | --train-seeds N <train options> --out DIR` writes DIR/stability.jsonl
(one record per feature of the first SAE), DIR/summary.json, DIR/*.png, DIR/pooled/ (the pooled SAE), and
S1/stability.json, which `ttslens label` records and the app's feature browser show.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from ttslens.sae.base import SAE, SAEConfig, make_sae
from ttslens.sae.errors import BadInput
from ttslens.sae.files import atomic_path, atomic_write_json, load_sae, sae_info, save_sae
from ttslens.sae.notes import note
from ttslens.sae.training.config import TrainConfig

STABILITY_FILE = "stability.json"  # SAE_DIR/stability.json: per-feature stability of that SAE


def unit(W: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.normalize(W.detach().float().cpu(), dim=1)


class SeedMatch(NamedTuple):
    perm: np.ndarray  # [F_a] index into B, -1 where unmatched (B narrower)
    cosine: np.ndarray  # [F_a] matched decoder cosine (0 where unmatched)


def match_seeds(a: SAE, b: SAE, encoder: bool = False) -> SeedMatch:
    """A's features matched one to one into B's, maximising decoder (and encoder) cosine."""
    from scipy.optimize import linear_sum_assignment

    if a.cfg.d_in != b.cfg.d_in:
        raise BadInput(f"SAEs of different widths d_in {a.cfg.d_in} and {b.cfg.d_in}: stability compares one model's")
    sim = unit(a.W_dec) @ unit(b.W_dec).T
    score = (sim + unit(a.W_enc) @ unit(b.W_enc).T) / 2 if encoder else sim
    rows, cols = linear_sum_assignment(score.double().numpy(), maximize=True)
    perm = np.full(a.cfg.d_sae, -1, dtype=np.int64)
    perm[rows] = cols
    cos = np.zeros(a.cfg.d_sae)
    cos[rows] = sim[torch.from_numpy(rows), torch.from_numpy(cols)].numpy()
    return SeedMatch(perm, cos)


def stability(saes: list[SAE], threshold: float = 0.7, encoder: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """(stability [F], matched cosines [F, n-1]) of the first SAE's features against the others."""
    check_threshold(threshold)
    if len(saes) < 2:
        raise BadInput("stability needs at least 2 SAEs: give --sae twice or more, or --train-seeds N (N ≥ 2)")
    cos = np.stack([match_seeds(saes[0], s, encoder).cosine for s in saes[1:]], axis=1)
    return (cos >= threshold).mean(1), cos


def check_threshold(threshold: float) -> None:
    if not 0 < threshold <= 1:
        raise BadInput(f"--threshold must lie in (0, 1] (got {threshold})")


@torch.no_grad()
def contributions(sae: SAE, batches) -> dict[str, np.ndarray | float]:
    """Per feature: firing frequency and drop-one ΔFVU (the FVU added by zeroing that latent alone), exactly:
    ΔFVU_f = Σ_t (z_tf² ‖w_f‖² + 2 z_tf w_f·(x_t − x̂_t)) / Σ_t ‖x_t − x̄‖²."""
    F = sae.cfg.d_sae
    fired, delta = torch.zeros(F, dtype=torch.float64), torch.zeros(F, dtype=torch.float64)
    n, sum_x, sum_sq, sse = 0, None, 0.0, 0.0
    W = sae.W_dec.detach().double()
    w2 = W.pow(2).sum(1)
    for x, _ in batches:
        x = x.double()
        z = sae.encode(x.float()).double()
        e = x - (z @ W + sae.b_dec.double())
        fired += (z > 0).sum(0)
        delta += z.pow(2).sum(0) * w2 + 2 * (z * (e @ W.T)).sum(0)
        n += x.shape[0]
        sum_x = x.sum(0) if sum_x is None else sum_x + x.sum(0)
        sum_sq += float(x.pow(2).sum())
        sse += float(e.pow(2).sum())
    if not n:
        raise BadInput("no rows to measure firing frequency and ΔFVU on")
    var = sum_sq - float(sum_x.pow(2).sum()) / n
    return {"freq": (fired / n).numpy(), "delta_fvu": (delta / var).numpy(), "ev": 1 - sse / var, "tokens": n}


def principal_cosines(A: torch.Tensor, B: torch.Tensor, rank: int) -> np.ndarray:
    """Cosines of the principal angles between the top-`rank` principal subspaces of two sets of directions."""

    def basis(W):
        return torch.linalg.svd(W.double(), full_matrices=False).Vh[:rank].T  # [d, r]

    return torch.linalg.svdvals(basis(A).T @ basis(B)).numpy()


def subspaces(saes: list[SAE], stab: list[np.ndarray], rank: int = 8, seed: int = 0) -> dict:
    """Unstable (stability < 0.5) vs stable features' principal subspaces, seed 0 against each other seed, and
    random directions of the same count for chance: the mean principal-angle cosine of each."""
    g = torch.Generator().manual_seed(seed)
    d = saes[0].cfg.d_in
    out = {"rank": rank, "pairs": []}
    for j in range(1, len(saes)):
        row = {"seeds": [0, j]}
        for name, pick in (("unstable", lambda s: s < 0.5), ("stable", lambda s: s >= 0.5)):
            a, b = unit(saes[0].W_dec)[pick(stab[0])], unit(saes[j].W_dec)[pick(stab[j])]
            r = min(rank, len(a), len(b), d // 2)
            if r < 1:
                row[name] = None
                continue
            row[name] = float(principal_cosines(a, b, r).mean())
            ra, rb = torch.randn(len(a), d, generator=g), torch.randn(len(b), d, generator=g)
            row[f"{name}_chance"] = float(principal_cosines(ra, rb, r).mean())
        out["pairs"].append(row)
    return out


@torch.no_grad()
def pooled_sae(saes: list[SAE], stab: list[np.ndarray], threshold: float) -> tuple[SAE, list[tuple[int, int]]]:
    """An SAE as wide as the first, of the most stable unique features of `saes` (most stable first; a feature
    whose decoder cosine to one already kept is ≥ threshold is a duplicate). Each keeps its encoder row, bias
    (moved onto the first SAE's b_dec) and threshold. Returns the SAE and its (seed, feature) sources."""
    order = sorted(((float(s[f]), -i, f) for i, s in enumerate(stab) for f in range(len(s))), reverse=True)
    F, d = saes[0].cfg.d_sae, saes[0].cfg.d_in
    dirs = [unit(s.W_dec) for s in saes]
    kept: list[tuple[int, int]] = []
    kept_dirs = torch.empty(0, d)
    for _s, neg_i, f in order:
        v = dirs[-neg_i][f]
        if len(kept_dirs) and float((kept_dirs @ v).max()) >= threshold:
            continue
        kept.append((-neg_i, f))
        kept_dirs = torch.cat([kept_dirs, v[None]])
        if len(kept) == F:
            break
    b0 = saes[0].b_dec.detach().float().cpu()
    cfg = SAEConfig(arch="batchtopk", d_in=d, d_sae=len(kept), k=saes[0].cfg.k)
    out = make_sae(cfg)
    from ttslens.sae.boost import thresholds

    for row, (i, f) in enumerate(kept):
        s = saes[i]
        w = s.W_enc[f].detach().float().cpu()
        out.W_enc[row] = w
        out.b_enc[row] = s.b_enc[f].detach().float().cpu() + w @ (b0 - s.b_dec.detach().float().cpu())
        out.W_dec[row] = s.W_dec[f].detach().float().cpu()
        out.threshold[row] = thresholds(s)[f]
    out.b_dec.copy_(b0)
    out.threshold_updates.fill_(1)
    return out.eval(), kept


@dataclass
class StabilityConfig(TrainConfig):
    """Feature stability across seeds: match the first SAE's features into the others' (Hungarian on decoder
    cosine), per feature the fraction of seeds holding a match; with data, stability vs frequency and
    reconstruction contribution, the unstable subspace, and a pooled SAE. Give --sae twice or more, or
    --train-seeds N with training options (the data options also feed the frequency and ΔFVU analyses)."""

    saes: list[str] = field(default_factory=list, metadata={"flag": "sae"})
    """Trained SAE directories (same model, layer and width; the first is the one reported per feature)."""
    train_seeds: int = 0
    """Train this many SAEs (seeds --seed, --seed+1, ...) into OUT/seed_N/ instead (resumable: finished seeds
    are kept)."""
    threshold: float = 0.7
    """A match counts when its decoder cosine is at least this (in (0, 1])."""
    encoder: bool = False
    """Match on the mean of decoder and encoder cosine (the reported cosine stays the decoder's)."""
    rank: int = 8
    """Principal directions compared in the subspace view."""
    pool: bool = True
    """Build the pooled SAE (needs 3 or more SAEs: the last is held out to score it)."""
    tokens: int = 500_000
    """Training tokens per seed (with --train-seeds)."""
    out: str = "runs/stability"
    """Output directory."""

    def __post_init__(self) -> None:
        if isinstance(self.sae, dict):
            self.sae = SAEConfig.from_dict(self.sae)
        check_threshold(self.threshold)
        if bool(self.saes) == bool(self.train_seeds):
            raise BadInput("give the SAEs (--sae S1 --sae S2 ...) or --train-seeds N with training options, not both")
        if self.train_seeds == 1 or len(self.saes) == 1:
            raise BadInput("stability needs at least 2 SAEs: give --sae twice or more, or --train-seeds N (N ≥ 2)")
        if self.train_seeds or self.activations or self.model or self.backbone:
            super().__post_init__()

    @property
    def has_data(self) -> bool:
        return bool(self.activations or self.model or self.backbone)


def train_seeds(cfg: StabilityConfig, progress: bool = True) -> list[Path]:
    """cfg.train_seeds SAEs into OUT/seed_N/ (finished ones kept; all seeds read one activations source)."""
    from ttslens.audio.harvest import train_sae

    paths = []
    for i in range(cfg.train_seeds):
        out = Path(cfg.out) / f"seed_{cfg.seed + i}"
        if not (out / "cfg.json").exists():
            d = {k: v for k, v in asdict(cfg).items() if k in TrainConfig.__dataclass_fields__}
            d |= {"sae": SAEConfig(**d["sae"]), "seed": cfg.seed + i, "out": str(out), "overwrite": True}
            d["resume"] = (out / "checkpoint.pt").exists()
            train_sae(TrainConfig(**d), progress=progress)
        paths.append(out)
    return paths


def data_rows(cfg: StabilityConfig, n: int):
    """Held-out rows of the run's data source (a list of (x, meta) batches), or None without one."""
    from ttslens.sae.activations import BatchStream, take_tokens

    if not cfg.has_data:
        return None
    if cfg.backbone:
        from ttslens.audio.backbones.registry import backbone_spec
        from ttslens.audio.harvest import backbone_sources

        spec = backbone_spec(cfg.backbone, cfg.model_dir)
        held = backbone_sources(spec, cfg.layer, cfg.corpus or None, cfg.device, cfg.model_dtype, cfg.hook)[1]
    else:
        from ttslens.sae.training.trainer import build_source

        held = build_source(cfg)[1]
    stream = BatchStream(held, min(n, 4096), cfg.buffer_tokens, cfg.seed + 1, modality=cfg.modality)
    return list(take_tokens(stream, n))


def run_stability(cfg: StabilityConfig, progress: bool = True) -> dict:
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    paths = [Path(p) for p in cfg.saes] if cfg.saes else train_seeds(cfg, progress)
    saes, infos = [load_sae(p) for p in paths], [sae_info(p) for p in paths]
    where = {(str(i.get("backbone") or i.get("model_name")), i.get("layer"), i.get("hook_name")) for i in infos}
    if len(where) > 1:
        raise BadInput(f"the SAEs read different models or layers ({sorted(map(str, where))}): compare one source's")
    seeds = [i.get("train", {}).get("seed") for i in infos]
    if len(set(seeds)) < len(seeds) and None not in seeds:
        note(
            "some SAEs share a --seed: SAEs of one shape and seed start from the same decoder, so they match through it"
        )
    per = [stability([s, *[o for o in saes if o is not s]], cfg.threshold, cfg.encoder) for s in saes]
    stab, cos = per[0]
    summary = {
        "saes": [str(p) for p in paths], "threshold": cfg.threshold, "encoder": cfg.encoder,
        "mean_stability": float(stab.mean()), "share_stable": float((stab >= 0.5).mean()),
        "share_in_all_seeds": float((stab == 1).mean()),
        "mean_stability_per_seed": [float(s[0].mean()) for s in per],
    }  # fmt: skip
    rows = data_rows(cfg, cfg.eval_tokens)
    contrib = contributions(saes[0], rows) if rows is not None else None
    if contrib is None:
        note(
            "no data options: stability vs frequency / ΔFVU and the pooled SAE's EV need --activations, --model "
            "or --backbone"
        )
    else:
        summary["ev"] = [contrib["ev"], *[contributions(s, rows)["ev"] for s in saes[1:]]]
        summary |= correlations(stab, contrib)
    summary["subspaces"] = subspaces(saes, [p[0] for p in per], cfg.rank)
    from ttslens.sae.boost import STITCHABLE

    poolable = all(sae.cfg.arch in STITCHABLE for sae in saes)
    if cfg.pool and not poolable:
        note("the pooled SAE keeps each feature's own threshold, so it needs batchtopk / relu SAEs: skipped")
    elif cfg.pool and len(saes) >= 3:  # ranked by stability among the pooled seeds only: the last one scores it
        among = [
            stability([s, *[o for o in saes[:-1] if o is not s]], cfg.threshold, cfg.encoder)[0] for s in saes[:-1]
        ]
        summary["pooled"] = pool_and_score(saes[:-1], among, saes[-1], cfg, rows, out)
    elif cfg.pool:
        note("the pooled SAE needs 3 or more SAEs (the last one scores it): skipped")
    records = []
    for f in range(len(stab)):
        rec = {"feature": f, "stability": float(stab[f]), "cosines": [round(float(c), 4) for c in cos[f]]}
        if contrib is not None:
            rec |= {"freq": float(contrib["freq"][f]), "delta_fvu": float(contrib["delta_fvu"][f])}
        records.append(rec)
    with atomic_path(out / "stability.jsonl") as tmp:
        Path(tmp).write_text("".join(json.dumps(r) + "\n" for r in records))
    summary["plots"] = plot(stab, cos, contrib, out / "stability.png")
    atomic_write_json(out / "summary.json", summary)
    attach(paths[0], stab, cfg.threshold, out)
    return summary


def correlations(stab: np.ndarray, contrib: dict) -> dict:
    """Spearman correlation of stability with frequency and ΔFVU, and the ΔFVU share of stable features."""
    from scipy.stats import spearmanr

    fired = contrib["freq"] > 0
    out = {"tokens": contrib["tokens"]}
    for k in ("freq", "delta_fvu"):
        r = spearmanr(stab[fired], contrib[k][fired]).statistic if fired.sum() > 2 else float("nan")
        out[f"spearman_stability_{k}"] = None if math.isnan(r) else float(r)
    total = float(contrib["delta_fvu"].sum())
    out["delta_fvu_share_stable"] = float(contrib["delta_fvu"][stab >= 0.5].sum() / total) if total > 0 else None
    return out


def pool_and_score(saes, stab, held_out: SAE, cfg: StabilityConfig, rows, out: Path) -> dict:
    """The pooled SAE of `saes` and each of them scored against the held-out SAE (share of features matched
    at ≥ threshold) and on data (EV, L0)."""
    pooled, kept = pooled_sae(saes, stab, cfg.threshold)
    res = {"sources": {str(i): sum(1 for s, _ in kept if s == i) for i in range(len(saes))}, "d_sae": len(kept)}
    share = [float((match_seeds(s, held_out).cosine >= cfg.threshold).mean()) for s in [pooled, *saes]]
    res["share_matched_in_held_out"] = {"pooled": share[0], "seeds": share[1:]}
    if rows is not None:
        from ttslens.sae.metrics import evaluate

        ev = [evaluate(s, rows) for s in [pooled, *saes]]
        res["ev"] = {"pooled": ev[0]["explained_variance"], "seeds": [e["explained_variance"] for e in ev[1:]]}
        res["l0"] = {"pooled": ev[0]["l0"], "seeds": [e["l0"] for e in ev[1:]]}
    extra = {k: v for k, v in sae_info(cfg.saes[0] if cfg.saes else out / f"seed_{cfg.seed}").items()
             if k in ("layer", "hook_name", "backbone", "model_name", "activation_scale", "dataset_path")}  # fmt: skip
    save_sae(pooled, out / "pooled", {**extra, "pooled_from": res["sources"]})
    res["path"] = str(out / "pooled")
    return res


def attach(sae_dir: Path, stab: np.ndarray, threshold: float, run: Path) -> None:
    """SAE_DIR/stability.json, and a `stability` field in SAE_DIR/labels/labels.jsonl when it exists."""
    atomic_write_json(Path(sae_dir) / STABILITY_FILE, {"run": str(run), "threshold": threshold,
                                                       "stability": [float(s) for s in stab]})  # fmt: skip
    labels = Path(sae_dir) / "labels" / "labels.jsonl"
    if labels.exists():
        recs = [json.loads(x) for x in labels.read_text().splitlines() if x.strip()]
        for r in recs:
            r["stability"] = float(stab[int(r["feature"])])
        with atomic_path(labels) as tmp:
            Path(tmp).write_text("".join(json.dumps(r) + "\n" for r in recs))


def read_stability(sae_dir: str | Path) -> list[float] | None:
    """The per-feature stability a stability run left for this SAE, or None."""
    path = Path(sae_dir) / STABILITY_FILE
    return json.loads(path.read_text())["stability"] if path.exists() else None


def plot(stab: np.ndarray, cos: np.ndarray, contrib: dict | None, path: Path) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = 3 if contrib is not None else 1
    fig, axes = plt.subplots(1, n, figsize=(4.2 * n, 3.4), squeeze=False)
    ax = axes[0][0]
    ax.hist(cos.max(1), bins=40, color="#3b6ea8")
    ax.set_xlabel("best matched decoder cosine in another seed")
    ax.set_ylabel("features")
    if contrib is not None:
        jitter = stab + np.random.default_rng(0).uniform(-0.02, 0.02, len(stab))
        for a, key, name in ((axes[0][1], "freq", "firing frequency"), (axes[0][2], "delta_fvu", "drop-one ΔFVU")):
            v = np.maximum(contrib[key], 1e-9)
            a.scatter(v, jitter, s=4, alpha=0.4)
            a.set_xscale("log")
            a.set_xlabel(name)
            a.set_ylabel("stability")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    return str(path)

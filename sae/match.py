"""SAE Match (arXiv 2410.07656): data-free alignment of the features of SAEs trained on different layers.

1. Fold each SAE's thresholds into its weights (`fold`), so features of different scales compare: for a
   JumpReLU / BatchTopK threshold θ_f, W_enc[f] /= θ_f, b_enc[f] /= θ_f, W_dec[f] *= θ_f and θ_f = 1 (outputs
   unchanged); a ReLU SAE folds its decoder norms instead (ReLU is positively homogeneous); a TopK SAE, whose
   selection a per-feature scale would change, keeps its (unit-norm) decoder.
2. Match the features of two SAEs by linear assignment on the squared distance of their folded decoder rows
   (plus `encoder_weight` x that of their encoder rows): `match_pair`. SAEs of different widths match into the
   larger one; the rest are reported unmatched. `chain` composes matches across many layers.
3. Evaluate by layer skipping (`skip_reconstruction`): layer l's latents, permuted into layer l+1's order,
   decoded by layer l+1's SAE stand in for layer l+1's residual — explained variance here, and the CE with
   it spliced in where the caller has a model (`skip_ce_edits`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from ttslens.sae.base import SAE
from ttslens.sae.errors import BadInput
from ttslens.sae.notes import note


class Folded(NamedTuple):
    """An SAE's parameters with its per-feature scale folded in (threshold 1 where it had one)."""

    W_enc: torch.Tensor  # [F, d]
    b_enc: torch.Tensor  # [F]
    W_dec: torch.Tensor  # [F, d]
    b_dec: torch.Tensor  # [d]
    scale: torch.Tensor  # [F] what was folded (θ, a decoder norm, or 1)
    kind: str  # "threshold" | "decoder_norm" | "none"


@torch.no_grad()
def fold(sae: SAE) -> Folded:
    W_enc, b_enc, W_dec = sae.W_enc.float(), sae.b_enc.float(), sae.W_dec.float()
    theta = getattr(sae, "threshold", None)
    if theta is not None and bool((theta > 0).all()):
        s, kind = theta.float().clone(), "threshold"
    elif sae.cfg.arch == "relu":
        s, kind = W_dec.norm(dim=1).clamp_min(1e-8), "decoder_norm"
    else:
        s, kind = torch.ones(W_enc.shape[0]), "none"
    return Folded(W_enc / s[:, None], b_enc / s, W_dec * s[:, None], sae.b_dec.float().clone(), s, kind)


@torch.no_grad()
def folded_sae(sae: SAE) -> SAE:
    """A copy of `sae` with its scale folded into the weights (threshold 1): the same outputs."""
    import copy

    f = fold(sae)
    out = copy.deepcopy(sae)
    out.W_enc.copy_(f.W_enc)
    out.b_enc.copy_(f.b_enc)
    out.W_dec.copy_(f.W_dec)
    if f.kind == "threshold":
        out.threshold.fill_(1.0)
    return out


class PairMatch(NamedTuple):
    perm: np.ndarray  # [F_a] index in B of each feature of A (-1: unmatched)
    cost: np.ndarray  # [F_a] its squared decoder distance (nan: unmatched)
    cosine: np.ndarray  # [F_a] cosine of the matched decoder rows (nan: unmatched)
    unmatched_b: np.ndarray  # features of B no feature of A matched


def _sq_dist(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a.pow(2).sum(1)[:, None] + b.pow(2).sum(1)[None] - 2 * a @ b.T).clamp_min(0)


@torch.no_grad()
def match_pair(a: SAE, b: SAE, encoder_weight: float = 0.0) -> PairMatch:
    """A's features matched to B's by linear assignment on folded-parameter MSE."""
    from scipy.optimize import linear_sum_assignment

    if a.cfg.d_in != b.cfg.d_in:
        raise BadInput(f"cannot match SAEs of different widths d_in {a.cfg.d_in} and {b.cfg.d_in}: same model only")
    fa, fb = fold(a), fold(b)
    cost = _sq_dist(fa.W_dec, fb.W_dec)
    if encoder_weight:
        cost = cost + encoder_weight * _sq_dist(fa.W_enc, fb.W_enc)
    c = cost.double().cpu().numpy()
    rows, cols = linear_sum_assignment(c)
    Fa, Fb = c.shape
    perm = np.full(Fa, -1, dtype=np.int64)
    perm[rows] = cols
    got = perm >= 0
    per = np.full(Fa, np.nan)
    per[got] = c[np.arange(Fa)[got], perm[got]]
    cos = np.full(Fa, np.nan)
    da, db = torch.nn.functional.normalize(fa.W_dec, dim=1), torch.nn.functional.normalize(fb.W_dec, dim=1)
    cos[got] = (da[torch.from_numpy(np.nonzero(got)[0])] * db[torch.from_numpy(perm[got])]).sum(1).numpy()
    return PairMatch(perm, per, cos, np.setdiff1d(np.arange(Fb), cols))


def _chance(sae: SAE) -> float:
    from ttslens.sae.flow import chance_cosine

    return round(chance_cosine(sae.cfg.d_sae, sae.cfg.d_in), 4)


def chain(perms: list[np.ndarray]) -> np.ndarray:
    """[F_0, n_layers] the feature of the first SAE followed through each match (-1 once it is lost)."""
    path = [np.arange(len(perms[0]))]
    for p in perms:
        prev = path[-1]
        path.append(np.where(prev >= 0, p[np.clip(prev, 0, len(p) - 1)], -1))
    return np.stack(path, 1)


def persistence(paths: np.ndarray, cosines: list[np.ndarray], min_cosine: float = 0.7) -> np.ndarray:
    """[F_0] for how many layers each first-layer feature persists: consecutive matches with decoder cosine
    >= `min_cosine` (1 = only its own layer)."""
    n = np.ones(len(paths), dtype=np.int64)
    alive = np.ones(len(paths), dtype=bool)
    for k, cos in enumerate(cosines):
        at = paths[:, k]
        ok = alive & (at >= 0)
        c = np.where(ok, cos[np.clip(at, 0, len(cos) - 1)], np.nan)
        alive = ok & (np.nan_to_num(c, nan=-1) >= min_cosine)
        n += alive
    return n


@torch.no_grad()
def permuted_latents(a: SAE, b: SAE, perm: np.ndarray, h_ND: torch.Tensor) -> torch.Tensor:
    """A's folded latents of h, moved to B's feature order ([N, F_b]; B's unmatched features zero)."""
    fa = fold(a)
    sa = folded_sae(a) if fa.kind != "none" else a
    z = sa.encode(h_ND.float())
    out = torch.zeros((z.shape[0], b.cfg.d_sae), dtype=z.dtype, device=z.device)
    got = torch.from_numpy(np.nonzero(perm >= 0)[0]).to(z.device)
    out[:, torch.from_numpy(perm[perm >= 0]).to(z.device)] = z[:, got]
    return out


@torch.no_grad()
def skip_reconstruction(a: SAE, b: SAE, perm: np.ndarray, h_a_ND: torch.Tensor) -> torch.Tensor:
    """Layer l's activations → A's latents → permuted → B's folded decoder: a stand-in for layer l+1."""
    fb = fold(b)
    return permuted_latents(a, b, perm, h_a_ND) @ fb.W_dec.to(h_a_ND.device) + fb.b_dec.to(h_a_ND.device)


def explained_variance(x_ND: torch.Tensor, recon_ND: torch.Tensor) -> float:
    x, r = x_ND.float(), recon_ND.float()
    return float(1 - (x - r).pow(2).sum() / (x - x.mean(0)).pow(2).sum().clamp_min(1e-12))


def skip_ce_edits(a: SAE, b: SAE, perm: np.ndarray, layer_a: int, layer_b: int) -> list:
    """Hook edits (`ttslens.sae.hooks`) that replace the residual after `layer_b` by the skip reconstruction
    from the residual after `layer_a` (< layer_b) of the same forward pass, at every position."""
    from ttslens.sae.hooks import Edit

    if layer_a >= layer_b:
        raise BadInput(f"layer skipping goes forward: layer {layer_a} then {layer_b}")
    stash: dict[str, torch.Tensor] = {}

    def keep(h_ND: torch.Tensor) -> torch.Tensor:
        stash["h"] = h_ND
        return h_ND

    def replace(h_ND: torch.Tensor) -> torch.Tensor:
        return skip_reconstruction(a, b, perm, stash["h"].to(h_ND.device)).to(h_ND.dtype)

    return [Edit(layer_a, keep), Edit(layer_b, replace)]


# ---- the command ---------------------------------------------------------------------------------


@dataclass
class MatchConfig:
    """Match the features of SAEs on successive layers of one model (SAE Match): fold thresholds, align
    adjacent layers by linear assignment on decoder MSE, chain them, and measure layer skipping (EV and CE
    with layer l's permuted latents standing in for layer l+1). Writes OUT/matches.json and OUT/match.png."""

    sae: list[str] = field(default_factory=list)
    """SAE directories, one per layer, in layer order (two or more)."""
    out: str = "runs/match"
    """Output directory."""
    encoder_weight: float = 0.0
    """Weight of the encoder rows' MSE in the matching cost (0 = decoders only, as the paper's default)."""
    min_cosine: float = 0.7
    """A match counts as the same feature persisting when its decoder cosine is at least this."""
    items: int = 32
    """Utterances / text sequences for the layer-skip evaluation (0 = matching only)."""
    backbone: str = ""
    """TTS backbone for the evaluation (default: the one the SAEs were trained on)."""
    model_dir: str = ""
    """The backbone's model directory or hub id (the same as --backbone NAME:DIR)."""
    device: str = "cpu"
    """Torch device for the model and the SAEs: cpu, cuda, cuda:N or auto."""
    dtype: str = "float32"
    """Model weights' dtype: float32, bfloat16 or float16."""


class Evaluator:
    """What layer skipping is measured on: residuals at layers, and the model's CE under hook edits."""

    def acts(self, layers: list[int]) -> dict[int, torch.Tensor]:
        raise NotImplementedError

    def ce(self, edits: list) -> float:
        raise NotImplementedError


def load_chain(dirs: list[str], device: str = "cpu") -> tuple[list[SAE], list[int], list[dict]]:
    """The SAEs in layer order, checked: one model, one width, layers strictly increasing."""
    from ttslens.sae.files import load_sae, sae_info

    if len(dirs) < 2:
        raise BadInput("give at least two SAEs (--sae A --sae B ...), one per layer")
    saes = [load_sae(d, device) for d in dirs]
    infos = [sae_info(d) for d in dirs]
    layers = [int(i.get("layer", -1)) for i in infos]
    widths = {s.cfg.d_in for s in saes}
    if len(widths) > 1:
        raise BadInput(f"the SAEs read different widths {sorted(widths)}: match SAEs of one model")
    sources = {str(i.get("backbone") or i.get("model_name") or "") for i in infos}
    if len(sources) > 1:
        raise BadInput(f"the SAEs come from different models ({', '.join(sorted(sources))}): match one model's")
    if any(b <= a for a, b in zip(layers, layers[1:], strict=False)) or min(layers) < 0:
        raise BadInput(f"the SAEs' layers {layers} are not strictly increasing: give one SAE per layer, in order")
    return saes, layers, infos


@torch.no_grad()
def run_match(cfg: MatchConfig, evaluator: Evaluator | None = None) -> dict:
    from ttslens.sae.files import atomic_write_json

    saes, layers, infos = load_chain(cfg.sae)
    seeds = [i.get("train", {}).get("seed") for i in infos]
    if len({s for s in seeds if s is not None}) < len([s for s in seeds if s is not None]):
        note(
            f"some of these SAEs were trained with the same --seed ({seeds}): SAEs of one shape and seed start from "
            "the same decoder, so matches may follow that initialisation rather than the features; train each "
            "layer's SAE with its own --seed"
        )
    pairs, perms, cosines = [], [], []
    acts = evaluator.acts(layers) if evaluator is not None else None
    ce_clean = evaluator.ce([]) if evaluator is not None else None
    for k, (a, b) in enumerate(zip(saes, saes[1:], strict=False)):
        m = match_pair(a, b, cfg.encoder_weight)
        perms.append(m.perm)
        cosines.append(m.cosine)
        row = {
            "layers": [layers[k], layers[k + 1]],
            "fold": [fold(a).kind, fold(b).kind],
            "matched": int((m.perm >= 0).sum()),
            "unmatched_b": m.unmatched_b.tolist(),
            "median_cosine": float(np.nanmedian(m.cosine)),
            "chance_cosine": _chance(b),  # what the best of B's directions gives a random direction
            "share_cosine_above": float(np.nanmean(m.cosine >= cfg.min_cosine)),
            "mean_cost": float(np.nanmean(m.cost)),
            "perm": m.perm.tolist(),
            "cost": [round(float(c), 5) for c in m.cost],
            "cosine": [round(float(c), 4) for c in m.cosine],
        }
        if acts is not None:
            h_a, h_b = acts[layers[k]], acts[layers[k + 1]]
            row["ev_skip"] = explained_variance(h_b, skip_reconstruction(a, b, m.perm, h_a))
            row["ev_own"] = explained_variance(h_b, b.reconstruct(h_b.float()))
            row["ev_identity"] = explained_variance(h_b, h_a)  # no SAE at all: layer l's residual as it is
            from ttslens.sae.hooks import Edit

            row["ce_clean"] = ce_clean
            row["ce_own"] = evaluator.ce([Edit(layers[k + 1], lambda h, b=b: b.reconstruct(h.float()).to(h.dtype))])
            row["ce_skip"] = evaluator.ce(skip_ce_edits(a, b, m.perm, layers[k], layers[k + 1]))
            row["delta_ce_skip"] = row["ce_skip"] - ce_clean
        pairs.append(row)
    paths = chain(perms)
    lasting = persistence(paths, cosines, cfg.min_cosine)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    summary = {
        "saes": cfg.sae,
        "layers": layers,
        "encoder_weight": cfg.encoder_weight,
        "min_cosine": cfg.min_cosine,
        "pairs": pairs,
        "persists_layers": {str(n): int((lasting == n).sum()) for n in range(1, len(layers) + 1)},
        "chains": paths.tolist(),
    }
    atomic_write_json(out / "matches.json", summary)
    plot_match(summary, out / "match.png")
    brief = {k: v for k, v in summary.items() if k not in ("pairs", "chains")}
    brief["pairs"] = [{k: v for k, v in p.items() if k not in ("perm", "cost", "cosine", "unmatched_b")} for p in pairs]
    return {"out": str(out), **brief}


def plot_match(summary: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ttslens.sae.files import atomic_path

    pairs = summary["pairs"]
    x = [f"{p['layers'][0]}→{p['layers'][1]}" for p in pairs]
    fig, axes = plt.subplots(1, 2 if "ev_skip" in pairs[0] else 1, figsize=(10, 3.6), squeeze=False)
    ax = axes[0, 0]
    ax.plot(x, [p["median_cosine"] for p in pairs], "o-", label="median decoder cosine")
    ax.plot(x, [p["share_cosine_above"] for p in pairs], "s--", label=f"share ≥ {summary['min_cosine']}")
    ax.set_ylim(0, 1)
    ax.set_title("match quality by layer pair")
    ax.legend(fontsize=8)
    if "ev_skip" in pairs[0]:
        ax = axes[0, 1]
        for key, lab in (("ev_own", "own SAE"), ("ev_skip", "layer-skip (matched)"), ("ev_identity", "no SAE")):
            ax.plot(x, [p[key] for p in pairs], "o-", label=lab)
        ax.set_title("EV of layer l+1's residual")
        ax.legend(fontsize=8)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)

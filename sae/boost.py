"""SAE Boost (arXiv 2507.12990): teach a frozen SAE a new domain with a small residual SAE.

The base SAE stays frozen; the residual SAE's encoder reads x and its decoder (no bias) reconstructs the
base's error e = x − x̂_base(x); inference is x̂ = x̂_base + ê. Both parts of the threshold family (batchtopk /
JumpReLU, relu) fold into **one stitched SAE** of that family — base latents first, then each boost's — whose
output equals base + boosts exactly:

    z = [z_base, z_boost],  h_boost = (x − b_base) W_boost^T + (b_boost + W_boost b_base),  x̂ = z W_dec + b_base

so the stitched directory saves, loads, evaluates, labels and steers like any other (SAELens reads it as
jumprelu). Before it is written, the boost latents' thresholds are calibrated for retention (`calibrate_retention`:
each latent stops firing where it costs the general data more than it gives the domain); the residual SAE's own
directory keeps its trained thresholds. `ttslens boost --base SAE --out DIR` trains the residual SAE into
DIR/residual/ and writes the stitched SAE into DIR itself, with the domain / general evaluation in DIR/boost.json.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import NamedTuple

import torch

from ttslens.sae.base import SAE, SAEConfig, centred_sq_sum, make_sae
from ttslens.sae.errors import BadInput
from ttslens.sae.files import atomic_write_json, load_sae, sae_info, save_sae
from ttslens.sae.hooks import hook_name, hook_of
from ttslens.sae.training.config import TrainConfig

STITCHABLE = ("batchtopk", "relu")  # threshold-family SAEs: z = h · 1[h > θ] (relu: θ = 0)
RESIDUAL = "residual"  # DIR/residual/: the boost's own training run (checkpoint, log, the residual SAE)


def thresholds(sae: SAE) -> torch.Tensor:
    """θ per latent of a threshold-family SAE (relu: 0)."""
    if sae.cfg.arch not in STITCHABLE:
        raise BadInput(
            f"a {sae.cfg.arch} SAE cannot be stitched into one SAE (its code is not a per-latent threshold): "
            f"use --arch {' or '.join(STITCHABLE)} for the residual SAE and a base of those kinds"
        )
    if sae.cfg.arch == "relu":
        return torch.zeros(sae.cfg.d_sae)
    return sae.threshold.detach().clamp_min(0).cpu().float()


@torch.no_grad()
def stitch(base: SAE, *boosts: SAE) -> SAE:
    """One batchtopk SAE whose code is [base latents, boost latents ...] and whose output is base + boosts,
    exactly (each boost reads x: its encoder bias absorbs the base's b_dec; it has no decoder bias)."""
    parts = [base, *boosts]
    for b in boosts:
        if b.cfg.d_in != base.cfg.d_in:
            raise BadInput(f"a residual SAE of width {b.cfg.d_in} cannot boost a base SAE of width {base.cfg.d_in}")
        if float(b.b_dec.abs().max()) > 0:
            raise BadInput("a boost's residual SAE has no decoder bias (b_dec = 0): train it with `ttslens boost`")
    theta = torch.cat([thresholds(p) for p in parts])
    b_base = base.b_dec.detach().cpu().float()
    b_enc = [base.b_enc.detach().cpu().float()]
    b_enc += [b.b_enc.detach().cpu().float() + b.W_enc.detach().cpu().float() @ b_base for b in boosts]
    k = sum(p.cfg.k for p in parts if p.uses_k) or 1
    out = make_sae(SAEConfig(arch="batchtopk", d_in=base.cfg.d_in, d_sae=len(theta), k=k))
    out.W_enc.copy_(torch.cat([p.W_enc.detach().cpu().float() for p in parts]))
    out.b_enc.copy_(torch.cat(b_enc))
    out.W_dec.copy_(torch.cat([p.W_dec.detach().cpu().float() for p in parts]))
    out.b_dec.copy_(b_base)
    out.threshold.copy_(theta)
    out.threshold_updates.fill_(1)
    return out.eval()


@dataclass
class BoostConfig(TrainConfig):
    """SAE Boost: train a small residual SAE on a frozen base SAE's error on domain data (the data options
    below; layer and hook are the base's), and write base + residual as one stitched SAE to --out."""

    sae: SAEConfig = field(default_factory=lambda: SAEConfig(d_sae=1024, k=5))
    """The residual SAE's architecture and size (the paper: 1,024 latents, k = 5; d_in is the base's)."""
    base: str = ""
    """The frozen base SAE directory (or a stitched one: boosts stack)."""
    general: str = ""
    """General data for the retention check, of the same kind as the domain data: an activations file, a
    --dataset for --model, or a corpus for --backbone (default: the domain data's held-out part, all rows)."""
    general_modality: str = ""
    """Rows of the general data compared (all | text | speech; default: the modality the base was trained on)."""
    tokens: int = 500_000
    """Training tokens of the residual SAE."""
    retain: float = 1.0
    """Retention calibration: after training, each boost latent's threshold is raised to where it minimises
    domain FVU + RETAIN × general FVU on training rows of both (the boost's latents stop firing where they hurt
    the general data); 0 keeps the trained thresholds."""
    retain_tokens: int = 32_768
    """Rows of each of the domain and the general data the retention calibration reads (training split)."""
    out: str = "runs/boost"
    """The stitched SAE's directory (the residual SAE's run goes in OUT/residual/)."""


class BoostData(NamedTuple):
    """What `run_boost` trains and evaluates on."""

    domain: tuple  # (train, held-out, metadata) sources, as `train` takes them
    general: object  # the general-data source (the retention check)
    ce: Callable | None = None  # ce(sae) → CE-recovered dict, where the model is at hand
    general_train: object = None  # general rows for the retention calibration (default: the domain's train source)


def check_base(cfg: BoostConfig) -> tuple[SAE, dict]:
    """The base SAE, checked against the run's options (one line per mismatch); sets cfg.layer / cfg.hook to the
    base's."""
    if not cfg.base:
        raise BadInput("give the frozen base SAE: --base SAE_DIR")
    base, info = load_sae(cfg.base), sae_info(cfg.base)
    thresholds(base)
    if cfg.sae.arch not in STITCHABLE:
        raise BadInput(
            f"a {cfg.sae.arch} residual SAE cannot be stitched to its base (its code is not a per-latent threshold): "
            f"use --arch {' or '.join(STITCHABLE)}"
        )
    layer, hook = info.get("layer"), hook_of(info.get("hook_name"))
    if layer is None:
        raise BadInput(f"the base SAE {cfg.base} records no layer: train it with `ttslens train`")
    if cfg.layer not in (0, layer) or cfg.hook not in ("resid", hook):
        raise BadInput(f"the base SAE reads {hook_name(layer, hook)}: drop --layer / --hook (the base's are used)")
    cfg.layer, cfg.hook = int(layer), hook
    where = info.get("backbone") or info.get("model_name")
    asked = cfg.backbone or cfg.model
    if asked and where and not (str(where).endswith(asked) or str(asked).endswith(str(where))):
        raise BadInput(f"the base SAE was trained on {where}, not {asked}: boost it with data of {where}")
    return base, info


def check_out(cfg: BoostConfig) -> Path:
    out = Path(cfg.out)
    mine = (out / RESIDUAL).is_dir() or (out / "boost.json").exists()
    if out.exists() and any(out.iterdir()) and not mine and not cfg.overwrite:
        raise BadInput(f"{out} holds another run: choose a new --out, or pass --overwrite")
    if (out / "boost.json").exists() and not (cfg.resume or cfg.overwrite):
        raise BadInput(f"{out} holds a finished boost: pass --overwrite to redo it, or choose a new --out")
    if cfg.overwrite and out.exists() and not cfg.resume:
        shutil.rmtree(out)
    return out


@torch.no_grad()
def calibrate_retention(
    stitched: SAE, first: int, domain_batches, general_batches, weight: float = 1.0, passes: int = 4
) -> dict:
    """Raise the thresholds of latents `first:` of a stitched SAE (its boost latents), each to the value that
    minimises FVU_domain + weight · FVU_general over the given batches, in place.

    Each firing event of latent j (a row where it is on) has an exact removal cost, the SSE added by dropping it
    with every other latent kept: 2 a_j d_j·r + a_j² |d_j|² (r the row's residual). Raising θ_j to t drops the
    events with pre-activation ≤ t; per latent the best t is the prefix (events sorted by pre-activation) whose
    summed cost, each set's costs divided by its total variance and the general ones times `weight`, is most
    negative. Thresholds only rise. Latents are treated one at a time (the others as trained)."""
    stitched.eval()
    domain_batches, general_batches = list(domain_batches), list(general_batches)
    trained = stitched.threshold[first:].clone().clamp_min(0)
    out = {"weight": weight, "passes": 0, "objective_change": 0.0}
    for _ in range(passes):
        step = _raise_once(stitched, first, domain_batches, general_batches, weight)
        out["passes"] += 1
        out["objective_change"] += step["objective_change"]
        out["events"] = out.get("events", step["events"])
        if not step["raised"]:
            break
    out["latents_raised"] = int((stitched.threshold[first:] > trained).sum())
    return out


def _raise_once(stitched: SAE, first: int, domain_batches, general_batches, weight: float) -> dict:
    theta = stitched.threshold
    W_dec = stitched.W_dec[first:]
    sq = (W_dec**2).sum(1)
    pre, cost, col = [], [], []
    for batches, w in ((domain_batches, 1.0), (general_batches, weight)):
        xs = [x.to(W_dec.device).float() for x, _ in batches]
        if not xs or w == 0:
            continue
        total = float(centred_sq_sum(torch.cat(xs)))
        for x_BD in xs:
            h_BF = stitched.preacts(x_BD)
            z_BF = h_BF * (h_BF > theta.clamp_min(0))
            r_BD = x_BD - stitched.decode(z_BF)
            z_BG, h_BG = z_BF[:, first:], h_BF[:, first:]
            rows, cols = z_BG.nonzero(as_tuple=True)
            a = z_BG[rows, cols]
            c = 2 * a * (r_BD[rows] * W_dec[cols]).sum(1) + a**2 * sq[cols]
            pre.append(h_BG[rows, cols])
            cost.append(c * (w / total))
            col.append(cols)
    n_boost = stitched.cfg.d_sae - first
    pre_E, cost_E, col_E = (torch.cat(v) if v else torch.zeros(0) for v in (pre, cost, col))
    if not len(pre_E):
        return {"raised": 0, "events": 0, "objective_change": 0.0}
    order = pre_E.argsort(stable=True)
    order = order[col_E[order].argsort(stable=True)]  # by latent, then by pre-activation
    pre_E, cost_E, col_E = pre_E[order], cost_E[order].double(), col_E[order]
    cum_E = cost_E.cumsum(0)
    starts = torch.searchsorted(col_E, torch.arange(n_boost, device=col_E.device))
    before = torch.cat([cum_E.new_zeros(1), cum_E])[starts]  # the summed cost of the latents before each one
    gain_E = cum_E - before[col_E]  # cost of dropping this event and every lower one of its latent
    best = torch.full((n_boost,), 0.0, dtype=gain_E.dtype, device=gain_E.device)
    best = best.scatter_reduce(0, col_E, gain_E, "amin", include_self=True)
    at = (gain_E == best[col_E]) & (best[col_E] < 0)
    new = theta[first:].clone().clamp_min(0)
    new.scatter_reduce_(0, col_E[at], pre_E[at].to(new.dtype), "amax", include_self=True)
    raised = int((new > theta[first:].clamp_min(0)).sum())
    theta[first:] = torch.maximum(new, theta[first:])
    return {"raised": raised, "events": int(len(pre_E)), "objective_change": float(best.clamp_max(0).sum())}


def evaluate_parts(base: SAE, stitched: SAE, domain_batches, general_batches) -> dict:
    """EV / FVU / L0 of the base and the stitched SAE, per modality, on domain and on general data, and the
    general-data retention (stitched EV / base EV)."""
    from ttslens.sae.metrics import evaluate

    out = {}
    for name, batches in (("domain", domain_batches), ("general", general_batches)):
        out[name] = {"base": evaluate(base, batches), "stitched": evaluate(stitched, batches)}
    g = out["general"]
    b_ev, s_ev = g["base"].get("explained_variance"), g["stitched"].get("explained_variance")
    out["general_retention"] = None if not b_ev else s_ev / b_ev
    d = out["domain"]
    if d["base"].get("explained_variance") is not None:
        out["domain_ev_gain"] = d["stitched"]["explained_variance"] - d["base"]["explained_variance"]
    return out


def run_boost(cfg: BoostConfig, data: BoostData | None = None, progress: bool = True) -> dict:
    """Train the residual SAE, stitch, evaluate; the stitched SAE lands in cfg.out (see the module doc)."""
    from ttslens.sae.activations import MODALITIES, BatchStream, take_tokens
    from ttslens.sae.training.trainer import build_source, train

    base, info = check_base(cfg)
    if not cfg.retain >= 0:
        raise BadInput(f"--retain {cfg.retain}: give a weight ≥ 0 (0 keeps the trained thresholds)")
    out = check_out(cfg)
    if data is None:
        domain = build_source(cfg)
        general, general_train = domain[1], None
        if cfg.general:
            general_train, general, _ = build_source(_with_data(cfg, cfg.general))
        data = BoostData(domain, general, general_train=general_train)
    if data.domain[0].d != base.cfg.d_in:
        raise BadInput(f"the base SAE reads width {base.cfg.d_in} but the data has width {data.domain[0].d}")
    sub = TrainConfig(**{k: v for k, v in asdict(cfg).items() if k in TrainConfig.__dataclass_fields__})
    sub.sae, sub.out = SAEConfig(**asdict(cfg.sae)), str(out / RESIDUAL)
    res = train(sub, source=data.domain, progress=progress, boost_base=base)
    stitched = stitch(base, res.sae)
    g_mod = cfg.general_modality or info.get("train", {}).get("modality", "all")
    n = cfg.eval_tokens

    def rows(src, modality, n=n, seed=cfg.seed + 1):
        return list(take_tokens(BatchStream(src, min(n, 4096), cfg.buffer_tokens, seed, modality=modality), n))

    def only(batches, modality):
        if modality == "all":
            return batches
        keep = MODALITIES.index(modality)
        return [(x[m["modality"] == keep], {k: v[m["modality"] == keep] for k, v in m.items()}) for x, m in batches]

    if data.general is data.domain[1]:  # one pass over the held-out data serves both
        both = rows(data.domain[1], "all", 2 * n)
        domain_rows, general_rows = only(both, cfg.modality), only(both, g_mod)
    else:
        domain_rows, general_rows = rows(data.domain[1], cfg.modality), rows(data.general, g_mod)
    if cfg.retain > 0:
        before = evaluate_parts(base, stitched, domain_rows, general_rows)
        m = cfg.retain_tokens
        if data.general_train is None:  # the domain's training rows serve both, in one pass
            both = rows(data.domain[0], "all", 2 * m, cfg.seed + 2)
            calib = only(both, cfg.modality), only(both, g_mod)
        else:
            calib = (
                rows(data.domain[0], cfg.modality, m, cfg.seed + 2),
                rows(data.general_train, g_mod, m, cfg.seed + 3),
            )
        calibration = calibrate_retention(stitched, base.cfg.d_sae, *calib, cfg.retain)
    metrics = evaluate_parts(base, stitched, domain_rows, general_rows)
    metrics["domain_modality"], metrics["general_modality"] = cfg.modality, g_mod
    if cfg.retain > 0:
        metrics["retention_calibration"] = calibration | {
            "before": {k: before[k] for k in ("general_retention", "domain_ev_gain") if k in before},
            "tokens": cfg.retain_tokens,
        }
    if data.ce is not None:
        metrics["ce"] = {"base": data.ce(base), "stitched": data.ce(stitched)}
    parts = [*info.get("boost", {}).get("parts", [{"path": str(cfg.base), "d_sae": base.cfg.d_sae}])]
    parts.append({"path": str(out / RESIDUAL), "d_sae": res.sae.cfg.d_sae, "arch": res.sae.cfg.arch})
    extra = {k: v for k, v in info.items() if k not in ("sae", "train", "metrics", "boost", "threshold_calibration")}
    extra |= {"boost": {"base": str(cfg.base), "parts": parts, "config": asdict(cfg)}, "metrics": metrics}
    save_sae(stitched, out, extra)
    summary = {"out": str(out), "d_sae": stitched.cfg.d_sae, "parts": parts, **metrics}
    atomic_write_json(out / "boost.json", summary)
    return summary


def _with_data(cfg: BoostConfig, general: str) -> TrainConfig:
    """The run's data options pointed at the general data (the same kind as the domain data's)."""
    d = {k: v for k, v in asdict(cfg).items() if k in TrainConfig.__dataclass_fields__}
    d["sae"] = SAEConfig(**d["sae"])
    if cfg.activations:
        d["activations"] = general
    elif cfg.model:
        d["dataset"] = general
    else:
        d["corpus"] = general
    return TrainConfig(**d)

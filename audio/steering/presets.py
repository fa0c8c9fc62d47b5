"""Steering presets: `laughter`, `gender` (+ male / − female), `rate` (+ faster / − slower).

A preset is resolved once per SAE and saved beside it (`SAE_DIR/presets.json`): for each attribute, the
features to push for a positive strength (`plus`) and, where the data give them, for a negative one
(`minus`), each with its mean activation when active (Z, the unit of the paper's edit z' = z + alpha Z).

Two ways to find them:
- `probe` (the reference paper's way): one teacher-forced pass over labelled speech of the backbone's
  corpus; at every speech position the SAE latents; an L1 logistic-regression probe per attribute
  (laughter: inside a laughter span; gender: the speaker is male; rate: the utterance is in the
  fastest vs slowest third). The largest positive / negative coefficients give plus / minus.
  Labels are the corpus truth where it has them, else what `ttslens.audio.measures` hears in the decoded audio.
- `labels`: the SAE's `labels.jsonl` from `ttslens label`: speech features whose label (or a close
  runner-up, AUROC ≥ 0.75) is the attribute's audio measure, best AUROC first.
- `auto` (the default): per attribute, the labels where some feature is labelled as it, the probe for
  the others (a partial `ttslens label` run labels some attributes only); each preset records its source.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ttslens.audio.corpus import item_audio, load_corpus, with_tokens
from ttslens.audio.measures import laughter_detector_for
from ttslens.sae.activations import SPEECH
from ttslens.sae.errors import BadInput, MissingFile
from ttslens.sae.files import atomic_write_json, sae_info
from ttslens.sae.steering import PRESET_NAMES, load_steer_saes, note, read_labels

PRESETS = dict(
    zip(PRESET_NAMES, ("+ laughter", "+ male voice / - female voice", "+ faster speech / - slower speech"), strict=True)
)
# label keys written by autointerp's evidence labeler for each side of each attribute
LABEL_KEYS = {
    "laughter": ("speech:measure:laughter:+", None),
    "gender": ("speech:measure:p_male:+", "speech:measure:p_male:-"),
    "rate": ("speech:measure:syllable_rate:+", "speech:measure:syllable_rate:-"),
}
FILE = "presets.json"
SOURCES = ("auto", "probe", "labels")


# ---- what the backbone provides (one place each, to switch with the backbone interface) ------------
def l1_logistic(C: float, **kwargs):
    """An L1-penalised LogisticRegression on any scikit-learn: `l1_ratio=1.0` where `penalty` is deprecated
    (≥ 1.8, where l1_ratio alone sets the penalty), else `penalty="l1"` (below 1.8 `l1_ratio` alone is
    ignored and the fit is silently L2)."""
    import inspect

    from sklearn.linear_model import LogisticRegression

    penalty = inspect.signature(LogisticRegression).parameters.get("penalty")
    if penalty is None or penalty.default == "deprecated":
        return LogisticRegression(l1_ratio=1.0, C=C, **kwargs)
    return LogisticRegression(penalty="l1", C=C, **kwargs)


@dataclass
class PresetConfig:
    """Find the features behind the steering presets (laughter, gender ±, rate ±) for one SAE and save
    them beside it (SAE_DIR/presets.json), from logistic-regression probes on labelled speech of the
    backbone's corpus or from the SAE's auto-interp labels."""

    sae: str = ""
    """SAE directory (trained on a TTS backbone with `ttslens train --backbone`)."""
    backbone: str = ""
    """Backbone name or directory (default: the one the SAE was trained on)."""
    model_dir: str = ""
    """The backbone's model directory or hub id (e.g. the Fun-CosyVoice3-0.5B-2512 files for cosyvoice3); the
    same as --backbone NAME:DIR."""
    device: str = "cpu"
    """Torch device for the backbone and the SAE(s): cpu, cuda, cuda:N or auto."""
    dtype: str = "float32"
    """Backbone weights' dtype: float32, bfloat16 or float16."""
    source: str = "auto"
    """probe | labels | auto (per attribute: the labels where a feature is labelled as it, else the probe)."""
    labels: str = ""
    """A labels.jsonl from `ttslens label` (default: SAE_DIR/labels/labels.jsonl)."""
    features: int = 3
    """Features per preset side (plus / minus)."""
    corpus: str = ""
    """What the probes read: empty = the backbone's own corpus; or (text, audio) pairs (a .jsonl/.csv/.parquet
    file, a saved `datasets` directory or hf:NAME), labelled by what the audio measures hear in their audio."""
    items: int = 800
    """Corpus utterances the probes read."""
    seed: int = 0
    """Which utterances and positions the probes read."""
    force: bool = False
    """Recompute even when SAE_DIR/presets.json is up to date."""
    progress: bool = True
    """Show a progress bar."""


def weights_digest(sae_dir: str | Path) -> str:
    """A short hash of the SAE's weights: presets computed for other weights are stale."""
    h = hashlib.sha256()
    with open(Path(sae_dir) / "sae_weights.safetensors", "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:16]


def read_presets(sae_dir: str | Path) -> dict | None:
    """The saved presets of an SAE, or None when absent or computed for other weights."""
    path = Path(sae_dir) / FILE
    if not path.exists():
        return None
    try:
        saved = json.loads(path.read_text())
    except json.JSONDecodeError:
        return None
    return saved if saved.get("weights") == weights_digest(sae_dir) else None


def preset_edits(preset: dict, alpha: float) -> list[tuple[int, float, float]]:
    """(feature, coefficient, mean_act) for a strength: alpha > 0 pushes `plus`; alpha < 0 pushes
    `minus` by |alpha| when the preset has a minus side, else pulls `plus` back by alpha."""
    if alpha >= 0 or not preset.get("minus"):
        return [(f["feature"], alpha, f["mean_act"]) for f in preset["plus"]]
    return [(f["feature"], -alpha, f["mean_act"]) for f in preset["minus"]]


# ---- probes -------------------------------------------------------------------------------------
def _labels_of(item, tf_seq, bb) -> dict[str, np.ndarray]:
    """Per speech position: laughter (0/1), male (0/1), rate (words per minute) — NaN where unknown."""
    times = tf_seq.times[tf_seq.modality == SPEECH].numpy()
    truth = item.truth or {}
    n = len(times)
    if "gender" in truth and "rate_wpm" in truth and "laughter" in truth:
        male, wpm, spans = float(truth["gender"] == "male"), float(truth["rate_wpm"]), truth["laughter"]
    else:  # no truth: what the audio measures hear in its recording (or, for tokens only, the decoded audio)
        from ttslens.audio.measures.signal import measure

        wave = item_audio(item, bb.sample_rate)
        wave = bb.decode(item.tokens) if wave is None else wave
        m = measure(wave, bb.sample_rate, laughter_detector_for(bb))
        male = float(m.p_male > 0.5) if m.p_male == m.p_male else math.nan
        wpm = 60 * m.syllables_per_s / 1.4 if m.syllables_per_s == m.syllables_per_s else math.nan
        spans = [[0, m.duration_s]] if (m.laughter or 0) > 0.5 else []
    laugh = np.zeros(n, dtype=np.float32)
    for a, b in spans:
        laugh[(times + 0.5 / bb.token_rate >= a) & (times < b)] = 1
    return {"laughter": laugh, "gender": np.full(n, male, np.float32), "rate": np.full(n, wpm, np.float32)}


def probe_presets(
    bb,
    sae,
    layer: int,
    items: int = 800,
    n_features: int = 3,
    seed: int = 0,
    progress=None,
    names=tuple(PRESETS),
    corpus: str = "",
) -> tuple[dict, list[float]]:
    """One L1 logistic-regression probe per attribute (of `names`) on SAE latents at speech positions →
    (presets, every feature's mean activation when active). `corpus`: see `PresetConfig.corpus`."""
    from scipy import sparse

    data = load_corpus(corpus or None, backbone=bb).items("train")
    if not data:
        raise BadInput(f"backbone {bb.name} has no corpus to fit probes on: give --corpus or use --source labels")
    rng = np.random.default_rng(seed)
    pick = rng.choice(len(data), size=min(items, len(data)), replace=False)
    corpus = {int(i): with_tokens(data[int(i)], bb) for i in pick}
    rows, cols, vals, labels = [], [], [], {k: [] for k in PRESETS}
    F = sae.cfg.d_sae
    act_sum, act_n, n_rows = np.zeros(F), np.zeros(F), 0
    it = pick if progress is None else progress(pick)
    for i in it:
        item = corpus[int(i)]
        tf = bb.teacher_forced(item.text, item.tokens, item.instruct, layers=[layer])
        speech = tf.sequence.modality == SPEECH
        z = sae.encode(tf.hidden[layer][speech].to(bb.device)).cpu().numpy()
        r, c = np.nonzero(z)
        rows.append(r + n_rows)
        cols.append(c)
        vals.append(z[r, c])
        np.add.at(act_sum, c, z[r, c])
        np.add.at(act_n, c, 1)
        n_rows += z.shape[0]
        for k, v in _labels_of(item, tf.sequence, bb).items():
            labels[k].append(v)
    Z = sparse.csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(n_rows, F))
    scale = np.sqrt(np.asarray(Z.multiply(Z).mean(0)).ravel()) + 1e-6  # per-feature RMS: comparable coefficients
    Zs = Z @ sparse.diags(1 / scale)
    mean_act = np.where(act_n > 0, act_sum / np.maximum(act_n, 1), 0)
    out = {}
    for name in names:
        y = np.concatenate(labels[name])
        keep = ~np.isnan(y)
        if name == "rate":  # fastest vs slowest third of utterances
            lo, hi = np.nanquantile(y, [1 / 3, 2 / 3])
            keep &= (y <= lo) | (y >= hi)
            y = (y >= hi).astype(np.float32)
        X, t = Zs[keep], y[keep]
        if len(np.unique(t)) < 2:  # e.g. no laughter in a read-speech corpus: the other presets still stand
            why = f"the probe for {name} has only one class in {len(corpus)} utterances"
            note(f"{why}: no {name} preset (raise --items, or give a --corpus where {name} varies)")
            out[name] = {"plus": [], "minus": [], "positions": int(keep.sum()), "source": "probe", "skipped": why}
            continue
        clf = l1_logistic(C=0.05, solver="liblinear", max_iter=500, class_weight="balanced")
        clf.fit(X, t)
        coef = clf.coef_[0]
        acc = float(clf.score(X, t))

        def side(order, coef=coef):
            return [
                {"feature": int(f), "coef": round(float(coef[f]), 4), "mean_act": round(float(mean_act[f]), 4)}
                for f in order[:n_features]
                if coef[f] != 0 and mean_act[f] > 0
            ]

        order = np.argsort(-coef)
        out[name] = {
            "plus": side(order),
            "minus": side(order[::-1]) if name != "laughter" else [],
            "probe_accuracy": round(acc, 4),
            "positions": int(keep.sum()),
            "nonzero_coefs": int((coef != 0).sum()),  # L1: fewer than the features seen (L2: all of them)
            "features_seen": int((X.getnnz(axis=0) > 0).sum()),
            "source": "probe",
        }
    return out, [round(float(v), 4) for v in mean_act]


# ---- labels -------------------------------------------------------------------------------------
def label_presets(labels_path: str | Path, n_features: int = 3) -> dict:
    """The presets the labels give: only the attributes with a feature labelled as their plus side."""
    recs = list(read_labels(labels_path).values())
    out = {}
    for name, keys in LABEL_KEYS.items():
        sides = []
        for key in keys:
            found = []
            for r in recs:
                if r.get("modality") != "speech" or not r.get("mean_act") or not r.get("confident", True):
                    continue
                if r.get("hypothesis") == key:
                    score = (r.get("scores") or {}).get("detection_auroc") or r.get("selection_auroc") or 0
                else:
                    score = max((a for k, a in r.get("alternatives") or [] if k == key), default=0)
                    score = score if score >= 0.75 else 0
                if score > 0:
                    found.append((score, r["feature"], r["mean_act"]))
            found.sort(key=lambda t: (-t[0], t[1]))
            sides.append(
                [{"feature": f, "auroc": round(s, 4), "mean_act": round(z, 4)} for s, f, z in found[:n_features]]
            )
        if sides[0]:
            out[name] = {"plus": sides[0], "minus": sides[1] if keys[1] else [], "source": "labels"}
    return out


def preset_sources(saved: dict) -> dict[str, str]:
    """attribute → where its preset came from ("labels" or "probe")."""
    return {n: p.get("source", saved.get("source", "")) for n, p in saved["presets"].items()}


def resolve_presets(cfg: PresetConfig) -> dict:
    """Compute (or read, when current) the presets of `cfg.sae` and save them in SAE_DIR/presets.json.
    `source` in the file: probe, labels, or labels+probe (auto with labels for some attributes only)."""
    sae_dir = Path(cfg.sae)
    if not cfg.sae:
        raise BadInput("no SAE given: pass --sae DIR")
    if cfg.source not in SOURCES:
        raise BadInput(f"unknown preset source {cfg.source!r}: use {', '.join(SOURCES)}")
    info = sae_info(sae_dir)
    saved = read_presets(sae_dir)
    same_corpus = saved is not None and saved.get("config", {}).get("corpus", "") == cfg.corpus
    if saved and same_corpus and not cfg.force and cfg.source in ("auto", saved.get("source")):
        return saved
    labels = Path(cfg.labels) if cfg.labels else sae_dir / "labels" / "labels.jsonl"
    if cfg.source == "labels" and not labels.exists():
        raise MissingFile(f"no labels at {labels}: run `ttslens label --sae {sae_dir}` or use --source probe")
    presets = label_presets(labels, cfg.features) if cfg.source != "probe" and labels.exists() else {}
    missing = [n for n in PRESETS if n not in presets]
    if cfg.source == "labels" and missing:
        raise BadInput(
            f"no feature in {labels} is labelled as {', '.join(missing)}: use --source auto "
            "(the probe for those) or --source probe"
        )
    mean_act = None
    if missing and presets:
        note(f"no feature in {labels} is labelled as {', '.join(missing)}: fitting the probe for those")
    if missing:
        presets_probe, mean_act = _probe(cfg, sae_dir, info, missing)
        presets |= presets_probe
    presets = {n: presets[n] for n in PRESETS}
    used = sorted({p["source"] for p in presets.values()})
    saved = {
        "source": "+".join(used),
        "layer": info.get("layer"),
        "weights": weights_digest(sae_dir),
        "meaning": PRESETS,
        "presets": presets,
        "config": {"features": cfg.features, "items": cfg.items, "seed": cfg.seed, "corpus": cfg.corpus}
        | ({"labels": str(labels)} if "labels" in used else {}),
    } | ({"mean_act": mean_act} if mean_act else {})
    atomic_write_json(sae_dir / FILE, saved)
    return saved


def _probe(cfg: PresetConfig, sae_dir: Path, info: dict, names: list[str]) -> tuple[dict, list[float]]:
    """The probe presets of `names` (one pass over the backbone's corpus)."""
    from ttslens.audio import load_backbone
    from ttslens.audio.backbones.registry import backbone_spec

    spec = backbone_spec(cfg.backbone, cfg.model_dir) or info.get("backbone") or "demo"
    bb = load_backbone(spec, device=cfg.device, dtype=cfg.dtype)
    (loaded,) = load_steer_saes(sae_dir, bb.d_model, bb.n_layers, f"backbone {bb.name}", str(bb.device))
    check_trained_on(info, bb, sae_dir)
    bar = None
    if cfg.progress:
        from tqdm import tqdm

        def bar(it):
            return tqdm(it, desc="probe pass", unit="utt", leave=False)

    with torch.no_grad():
        return probe_presets(
            bb, loaded.sae, loaded.layer, cfg.items, cfg.features, cfg.seed, bar, tuple(names), cfg.corpus
        )


def run_presets(cfg: PresetConfig) -> dict:
    """`ttslens presets`: resolve and save, then report each preset's features and where they came from."""
    saved = resolve_presets(cfg)
    sides = ("plus", "minus")
    return {
        "out": str(Path(cfg.sae) / FILE),
        "source": saved["source"],
        "sources": preset_sources(saved),
        "layer": saved["layer"],
        "presets": {n: {s: [f["feature"] for f in p[s]] for s in sides} for n, p in saved["presets"].items()},
    }


def check_trained_on(info: dict, bb, sae_dir) -> None:
    """One clear line when an SAE records another backbone (by name) than the one given."""
    trained_on = str(info.get("backbone") or "")
    if trained_on and "/" not in trained_on and trained_on != bb.name:  # a name, not a build directory
        raise BadInput(
            f"SAE {sae_dir} was trained on backbone {trained_on!r}, not {bb.name!r}: pass --backbone {trained_on}"
        )

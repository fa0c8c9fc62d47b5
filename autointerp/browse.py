"""Browse an SAE's labelled features: filter and search the labels, a feature's card, its nearest
features by decoder cosine, its audio clips. The app, the API and scripts share this.

    idx = FeatureIndex.load("runs/demo_l3")            # SAE_DIR/labels/labels.jsonl + the SAE decoder
    idx.filter("speech", "laughter", min_auroc=0.8)     # table rows
    idx.card(361), idx.nearest(361, 8), idx.clip_path(361, 0)

Clip paths come from the labels file; `clip_path` only returns files inside the labels directory.
"""

from __future__ import annotations

import math
from pathlib import Path, PurePath

import torch

from ttslens.sae.errors import BadInput
from ttslens.sae.files import load_sae
from ttslens.sae.steering import read_labels

MODALITIES = ("all", "text", "speech", "mixed")
MARK_OPEN, MARK_CLOSE = "«", "»"  # how autointerp marks the firing token in a text window


def auroc(rec: dict) -> float | None:
    """The record's detection AUROC (None when it was not scored)."""
    a = (rec.get("scores") or {}).get("detection_auroc")
    return float(a) if a is not None else None


def split_window(window: str) -> tuple[str, str, str]:
    """A text window → (before, firing token, after); a window without marks is all `before`."""
    a = window.find(MARK_OPEN)
    b = window.find(MARK_CLOSE, a + 1) if a >= 0 else -1
    if a < 0 or b < 0:
        return window, "", ""
    return window[:a], window[a + 1 : b], window[b + 1 :]


class FeatureIndex:
    """One SAE's labels and unit-norm decoder rows."""

    def __init__(self, records: dict[int, dict], W_dec: torch.Tensor, labels_dir: Path, name: str = "", stability=None):
        self.records, self.labels_dir, self.name = records, Path(labels_dir), name
        self.stability: list[float] | None = stability  # per feature, from a `ttslens stability` run
        self.n_features = W_dec.shape[0]
        self.unit = W_dec.float() / W_dec.float().norm(dim=1, keepdim=True).clamp_min(1e-12)

    @classmethod
    def load(cls, sae_dir: str | Path, labels_dir: str | Path | None = None) -> FeatureIndex:
        """The SAE at `sae_dir` and its labels (default SAE_DIR/labels; none there is an empty index)."""
        sae_dir = Path(sae_dir)
        labels_dir = Path(labels_dir) if labels_dir else sae_dir / "labels"
        path = labels_dir / "labels.jsonl"
        records = read_labels(path)
        W = load_sae(sae_dir).W_dec.detach()
        bad = [f for f in records if not 0 <= f < W.shape[0]]
        if bad:
            raise BadInput(f"{path} labels feature {bad[0]}, but the SAE at {sae_dir} has 0..{W.shape[0] - 1}")
        from ttslens.sae.stability import read_stability

        stability = read_stability(sae_dir)
        if stability is not None and len(stability) != W.shape[0]:
            stability = None  # left by a run on another SAE of this directory: not this one's
        return cls(records, W, labels_dir, str(sae_dir), stability)

    def stability_of(self, f: int) -> float | None:
        r = self.records.get(f) or {}
        return r.get("stability", self.stability[f] if self.stability else None)

    # ---- the table -------------------------------------------------------------------------------
    def filter(self, modality: str = "all", query: str = "", min_auroc: float = 0.0) -> list[dict]:
        """Rows of the labelled features of `modality` whose label holds every word of `query` (or whose id
        is `query`) with detection AUROC ≥ `min_auroc` (unscored features only pass at 0)."""
        if modality not in MODALITIES:
            raise BadInput(f"unknown modality {modality!r}: use one of {', '.join(MODALITIES)}")
        if not math.isfinite(min_auroc) or not 0 <= min_auroc <= 1:
            raise BadInput(f"minimum AUROC must be between 0 and 1 (got {min_auroc})")
        words = (query or "").lower().split()
        rows = []
        for f in sorted(self.records):
            r = self.records[f]
            label, a = str(r.get("label", "")), auroc(r)
            if modality != "all" and r.get("modality") != modality:
                continue
            if words and not (words == [str(f)] or all(w in label.lower() for w in words)):
                continue
            if min_auroc > 0 and (a is None or a < min_auroc):
                continue
            rows.append(
                {
                    "feature": f,
                    "modality": r.get("modality", ""),
                    "label": label,
                    "auroc": a,
                    "fires": r.get("fires"),
                    "freq": r.get("freq"),
                    "max_act": r.get("max_act"),
                    "stability": self.stability_of(f),
                }
            )
        return rows

    def choices(self) -> list[tuple[str, str]]:
        """(display, value) pairs for a feature picker: "361 · laughter (speech, AUROC 1.00)" → "361";
        plain ids when nothing is labelled."""
        if not self.records:
            return [(str(f), str(f)) for f in range(min(self.n_features, 4096))]
        out = []
        for f in sorted(self.records):
            r, a = self.records[f], auroc(self.records[f])
            score = f", AUROC {a:.2f}" if a is not None else ""
            out.append((f"{f} · {r.get('label', '')} ({r.get('modality', '?')}{score})", str(f)))
        return out

    # ---- one feature -----------------------------------------------------------------------------
    def _check(self, feature) -> int:
        try:
            f = int(feature)
        except (TypeError, ValueError):
            raise BadInput(f"feature must be a whole number, got {feature!r}") from None
        if f != feature and not isinstance(feature, str):
            raise BadInput(f"feature must be a whole number, got {feature!r}")
        if not 0 <= f < self.n_features:
            raise BadInput(f"feature {f} out of range: this SAE has features 0..{self.n_features - 1}")
        return f

    def record(self, feature) -> dict:
        """The labels record of `feature` (ValueError when it is not labelled)."""
        f = self._check(feature)
        if f not in self.records:
            have = f"{len(self.records)} labelled features" if self.records else "no labels (run `ttslens label`)"
            raise BadInput(f"feature {f} is not labelled: {self.name or 'this SAE'} has {have}")
        return self.records[f]

    def card(self, feature, n_examples: int = 10, n_nearest: int = 8) -> dict:
        """Everything a feature card shows: label, scores, text windows split at the firing token, clips
        (their indices for `clip_path`), the activation histogram, the nearest features."""
        r = self.record(feature)
        f = int(r["feature"])
        examples = r.get("examples") or []
        windows, clips = [], []
        for i, ex in enumerate(examples):
            act = ex.get("act", ex.get("activation"))
            if len(windows) < n_examples:
                windows.append(
                    {"activation": act, "token": ex.get("token", ""), "split": split_window(str(ex.get("window", "")))}
                )
            if ex.get("clip") and len(clips) < n_examples:
                clips.append(
                    {"index": i, "activation": act, "time": ex.get("time"), "measures": ex.get("measures") or {}}
                )
        keys = (
            "modality",
            "speech_share",
            "label",
            "labeler",
            "hypothesis",
            "confident",
            "fires",
            "freq",
            "max_act",
            "mean_act",
        )
        return {
            "feature": f,
            **{k: r.get(k) for k in keys},
            "stability": self.stability_of(f),
            "scores": r.get("scores") or {},
            "failure": r.get("failure"),
            "histogram": r.get("histogram") or {"edges": [], "counts": []},
            "windows": windows,
            "clips": clips,
            "nearest": self.nearest(f, n_nearest),
        }

    def nearest(self, feature, n: int = 8) -> list[tuple[int, float, str]]:
        """The n features whose decoder rows have the largest cosine with `feature`'s: (id, cosine, label)."""
        f = self._check(feature)
        cos = self.unit @ self.unit[f]
        cos[f] = -math.inf
        top = torch.topk(cos, min(n, self.n_features - 1))
        return [
            (int(g), round(float(c), 4), str((self.records.get(int(g)) or {}).get("label", "")))
            for c, g in zip(top.values, top.indices, strict=True)
        ]

    def clip_path(self, feature, i: int) -> Path:
        """The audio clip of `feature`'s i-th example, a file inside the labels directory (else ValueError)."""
        examples = self.record(feature).get("examples") or []
        if not isinstance(i, int) or not 0 <= i < len(examples):
            raise BadInput(f"feature {feature} has no example {i!r} (it has {len(examples)})")
        rel = examples[i].get("clip")
        if not rel:
            raise BadInput(f"example {i} of feature {feature} has no audio clip (a text example)")
        return self.resolve_clip(str(rel))

    def resolve_clip(self, rel: str) -> Path:
        """A clip path relative to the labels directory → the file, refusing anything outside it
        (absolute paths, '..', symlinks leading out) and anything that is not an existing .wav file."""
        p = PurePath(rel)
        if p.is_absolute() or ".." in p.parts or "\x00" in rel or p.suffix.lower() != ".wav":
            raise BadInput(f"refusing clip path {rel!r}: clips are .wav files inside the labels directory")
        root = self.labels_dir.resolve()
        full = (root / p).resolve()  # follows symlinks
        if not full.is_relative_to(root):
            raise BadInput(f"refusing clip path {rel!r}: it leads outside the labels directory")
        if not full.is_file():
            raise BadInput(f"clip {rel!r} is missing from {self.labels_dir}")
        return full

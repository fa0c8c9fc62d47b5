"""`ttslens label`: modality-aware auto-interp of an SAE's features on a TTS backbone, in resumable batches.

1. collect: one teacher-forced pass over the backbone's corpus (top activations, a uniform sample of
   activations, random positions) — cached in OUT/collect.safetensors;
2. per feature: modality from its top-20 (speech share ≥ 0.8 speech, ≤ 0.2 text, else mixed); examples
   (top activations spread over utterances, quantile samples, random non-activating negatives of the
   feature's modality); evidence (text windows; measures of 1-s clips; enrichment vs random clips);
   a label (evidence or LLM labeler) chosen on the top activations and scored by detection AUROC on the
   held-out quantile samples vs other negatives;
3. every batch of features is written atomically to OUT/parts/ (kill and re-run: it continues, no
   duplicates), then OUT/labels.jsonl, OUT/summary.json, OUT/report.html and the Neuronpedia export.
"""

from __future__ import annotations

import json
import math
import random
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from ttslens.audio.corpus import load_corpus
from ttslens.audio.measures import laughter_detector_for
from ttslens.audio.measures.clips import MEASURES
from ttslens.autointerp.collect import Collection, collect, load_or_collect
from ttslens.autointerp.evidence import ClipModels, Evidence, finite
from ttslens.autointerp.scoring import cohens_d, log_odds, summarise
from ttslens.sae.activations import SPEECH
from ttslens.sae.errors import BadInput
from ttslens.sae.files import atomic_path, atomic_write_json, load_sae, read_cfg, sae_info

MIN_ITEMS = 8


@dataclass
class LabelConfig:
    """Label every feature of an SAE from where it fires on a TTS backbone: text windows for text
    features, 1-second speech clips (ASR, laughter, gender, pitch, rate, loudness) for speech features,
    both for mixed ones. Writes OUT/labels.jsonl, clips, report.html and a Neuronpedia export; resumable."""

    sae: str = ""
    """SAE directory (from `ttslens train --backbone ...`)."""
    backbone: str = ""
    """TTS backbone the SAE reads (demo or a build directory); empty = the one named in the SAE's metadata."""
    layer: int = -1
    """Layer the SAE reads; -1 = the one in the SAE's metadata (a different value is an error)."""
    out: str = ""
    """Output directory; empty = SAE_DIR/labels. Re-running the same command continues where it stopped."""
    features: str = ""
    """Features to label: empty = all, or ranges and ids like 0:512 or 3,17,40:60."""
    labeler: str = "evidence"
    """evidence (offline, deterministic) | llm (an OpenAI-compatible chat endpoint; see --llm-*)."""
    items: int = 1000
    """Corpus utterances scanned for activations."""
    top: int = 20
    """Top activations per feature (evidence for the label; also the modality vote)."""
    quantiles: int = 20
    """Held-out activating examples per feature, spread over activation quantiles (for scoring)."""
    negatives: int = 40
    """Random non-activating examples per feature for scoring (the rest of --pool, separate, choose the label)."""
    pool: int = 600
    """Random positions that supply the negatives and the random-clip baseline (measured once per run)."""
    speech_share: float = 0.8
    """A feature whose top-20 lie on speech positions at least this often is a speech feature."""
    text_share: float = 0.2
    """... at most this often: a text feature (in between: mixed)."""
    clip_s: float = 1.0
    """Length of the audio clip centred on a speech position (zero-padded at utterance edges)."""
    clips: int = 3
    """WAV clips written per speech feature (its top activations), for the report and the app."""
    batch: int = 64
    """Features per batch (the unit of resumption)."""
    workers: int = 1
    """Processes labelling batches in parallel."""
    asr: str = "tiny"
    """Whisper model for ASR evidence (size name or .pt path); empty = off. Skipped, with a note, if absent."""
    laughter_model: str = "MIT/ast-finetuned-audioset-10-10-0.4593"
    """AudioSet AST for laughter (hub id or path); empty or absent = the backbone's own laughter detector."""
    gender_model: str = "alefiury/wav2vec2-large-xlsr-53-gender-recognition-librispeech"
    """wav2vec2 gender classifier (hub id or path); empty or absent = P(male) from pitch."""
    download: bool = False
    """Allow downloading the ASR / classifier weights from their hubs (off: local copies only)."""
    llm_base_url: str = ""
    """LLM labeler: endpoint base URL; empty = $TTSLENS_LLM_BASE_URL."""
    llm_model: str = ""
    """LLM labeler: model name; empty = $TTSLENS_LLM_MODEL."""
    llm_key_env: str = "TTSLENS_LLM_API_KEY"
    """LLM labeler: environment variable holding the API key (never logged or stored)."""
    llm_concurrency: int = 4
    """LLM labeler: requests in flight."""
    seed: int = 0
    """Seed for item order and example sampling."""
    progress: bool = True
    """Show progress bars."""


def parse_features(spec: str, n: int) -> list[int]:
    """'0:512' / '3,17,40:60' / '' (all) → sorted feature ids, each checked against n."""
    if not spec.strip():
        return list(range(n))
    out: set[int] = set()
    for part in spec.replace(" ", "").split(","):
        try:
            if ":" in part:
                a, b = part.split(":")
                lo, hi = int(a or 0), int(b) if b else n
                if lo >= hi:
                    raise ValueError
                if lo < 0 or hi > n:
                    raise IndexError
                out.update(range(lo, hi))
            else:
                i = int(part)
                if not 0 <= i < n:
                    raise IndexError
                out.add(i)
        except IndexError:
            raise BadInput(f"--features {part!r} is out of range: the SAE has features 0..{n - 1}") from None
        except ValueError:
            raise BadInput(f"--features {part!r} is not a range like 0:512 or a list like 3,17,40:60") from None
    return sorted(out)


class Job:
    """Everything one `ttslens label` run needs, shared by its batches (and by forked workers)."""

    def __init__(self, cfg: LabelConfig):
        from ttslens.audio import load_backbone

        if not cfg.sae:
            raise BadInput("give the SAE directory with --sae DIR")
        if cfg.labeler not in ("evidence", "llm"):
            raise BadInput(f"unknown --labeler {cfg.labeler!r}: use evidence or llm")
        if not 0 <= cfg.text_share < cfg.speech_share <= 1:
            raise BadInput("need 0 <= --text-share < --speech-share <= 1")
        if cfg.top < 2 or cfg.quantiles < 2 or cfg.negatives < 2 or cfg.batch < 1 or cfg.workers < 1:
            raise BadInput("--top, --quantiles and --negatives must be at least 2; --batch and --workers at least 1")
        if cfg.pool < cfg.top + cfg.negatives:
            raise BadInput(f"--pool must be at least --top + --negatives = {cfg.top + cfg.negatives}")
        self.cfg = cfg
        sae_dir = Path(cfg.sae)
        read_cfg(sae_dir)  # clear error if missing
        info = sae_info(sae_dir)
        trained_on, trained_layer = info.get("backbone"), info.get("layer")
        name = cfg.backbone or trained_on
        if not name:
            raise BadInput(f"{sae_dir} does not say which TTS backbone it was trained on: pass --backbone")
        if trained_on and cfg.backbone and not _same_backbone(cfg.backbone, trained_on):
            raise BadInput(
                f"the SAE in {sae_dir} was trained on backbone {trained_on!r}, not {cfg.backbone!r}: "
                f"pass --backbone {trained_on} or an SAE trained on {cfg.backbone}"
            )
        self.layer = cfg.layer if cfg.layer >= 0 else trained_layer
        if self.layer is None:
            raise BadInput(f"{sae_dir} does not say which layer it reads: pass --layer")
        if trained_layer is not None and self.layer != trained_layer:
            raise BadInput(
                f"the SAE in {sae_dir} reads layer {trained_layer}, not {self.layer}: drop --layer or use an SAE for it"
            )
        self.sae = load_sae(sae_dir)
        self.bb = load_backbone(name)
        if self.sae.cfg.d_in != self.bb.d_model:
            raise BadInput(f"the SAE reads width {self.sae.cfg.d_in} but {name} has d_model {self.bb.d_model}")
        self.features = parse_features(cfg.features, self.sae.cfg.d_sae)
        self.out = Path(cfg.out) if cfg.out else sae_dir / "labels"
        self.skip_special = bool(info.get("train", {}).get("exclude_special", False))
        corpus = load_corpus(None, backbone=self.bb).items("all")
        if len(corpus) < MIN_ITEMS:
            raise BadInput(
                f"the {name} corpus has {len(corpus)} utterances; labelling needs at least {MIN_ITEMS} "
                "(rebuild the backbone with more --utterances)"
            )
        order = list(range(len(corpus)))
        random.Random(cfg.seed).shuffle(order)
        self.corpus_index = order[: max(MIN_ITEMS, cfg.items)]
        self.items = [corpus[i] for i in self.corpus_index]
        self.backbone_name, self.sae_dir = name, sae_dir
        self.notes: list[str] = []
        if len(corpus) < cfg.items:
            self.notes.append(f"the corpus has {len(corpus)} utterances, fewer than --items {cfg.items}: using all")
        self._stamp()
        self.col: Collection | None = None
        self.ev: Evidence | None = None
        self.labeler = None

    # ---- set-up --------------------------------------------------------------------------------
    def _stamp(self) -> None:
        """OUT remembers the settings its records depend on; a re-run with others is refused."""
        c = self.cfg
        w = self.sae_dir / "sae_weights.safetensors"
        stamp = {
            "sae": str(self.sae_dir.resolve()),
            "sae_weights": [w.stat().st_size, int(w.stat().st_mtime)] if w.exists() else None,
            "backbone": self.backbone_name,
            "layer": self.layer,
            **{k: getattr(c, k) for k in ("labeler", "items", "top", "quantiles", "negatives", "pool", "speech_share")},
            **{k: getattr(c, k) for k in ("text_share", "clip_s", "seed", "asr", "laughter_model", "gender_model")},
            "llm_model": c.llm_model if c.labeler == "llm" else None,
        }
        path = self.out / "label_config.json"
        if path.exists():
            old = json.loads(path.read_text())
            diff = {k: (old.get(k), v) for k, v in stamp.items() if old.get(k) != v}
            if diff:
                what = ", ".join(f"{k} {a!r} → {b!r}" for k, (a, b) in diff.items())
                raise BadInput(
                    f"{self.out} holds labels made with other settings ({what}): use another --out or delete it"
                )
        else:
            atomic_write_json(path, stamp)

    def prepare(self) -> None:
        """Collect activations (or reuse them), load the clip models, build the labeler."""
        c = self.cfg
        meta = {
            "sae": str(self.sae_dir.resolve()),
            "layer": self.layer,
            "items": self.corpus_index,
            "skip_special": self.skip_special,
            "seed": c.seed,
        }
        self.col = load_or_collect(
            self.out / "collect.safetensors",
            meta,
            lambda: collect(
                self.bb,
                self.sae,
                self.layer,
                self.items,
                self.corpus_index,
                skip_special=self.skip_special,
                seed=c.seed,
                progress=c.progress,
            ),
        )
        if not bool((self.col.modality == SPEECH).any()):
            raise BadInput("the scanned corpus has no speech positions: is it a TTS corpus with speech tokens?")
        models = self._models()
        self.ev = Evidence(self.bb, self.items, self.col, c.clip_s, laughter_detector_for(self.bb), models)
        self.asr = models.asr is not None
        if c.labeler == "llm":
            from ttslens.autointerp.labelers import LLMLabeler
            from ttslens.autointerp.llm import ChatClient, LLMConfig

            client = ChatClient(
                LLMConfig(base_url=c.llm_base_url, model=c.llm_model, api_key_env=c.llm_key_env),
                self.out / "llm_cache.jsonl",
            )
            client.check()
            self.labeler = LLMLabeler(client)
        else:
            from ttslens.autointerp.labelers import EvidenceLabeler

            self.labeler = EvidenceLabeler()
        self._negative_pool()

    def _models(self) -> ClipModels:
        """Load the optional clip models; a missing one becomes a note (printed once, one line each)."""
        import sys
        import warnings

        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            models = self._load_models()
        for w in caught:
            print(f"ttslens label: note: {w.message}", file=sys.stderr)
        return models

    def _load_models(self) -> ClipModels:
        c = self.cfg
        asr = lau = gen = None
        if c.asr:
            from ttslens.audio.measures.asr import ASR

            asr = ASR.load(c.asr, download=c.download)
            if asr is None:
                self.notes.append(f"ASR: whisper {c.asr!r} weights are not available here; ASR evidence skipped")
        if c.laughter_model:
            from ttslens.audio.measures.classifiers import LaughterClassifier

            lau = LaughterClassifier.load(c.laughter_model, download=c.download)
            if lau is None:
                self.notes.append(
                    f"laughter: {c.laughter_model!r} is not available here; using the backbone's laughter detector"
                )
        if c.gender_model:
            from ttslens.audio.measures.classifiers import GenderClassifier

            gen = GenderClassifier.load(c.gender_model, download=c.download)
            if gen is None:
                self.notes.append(f"gender: {c.gender_model!r} is not available here; P(male) from pitch")
        return ClipModels(asr, lau, gen)

    def _negative_pool(self) -> None:
        """Random positions that supply negatives (and the random-clip baseline), measured once."""
        col = self.col
        n = min(len(col.rand_idx), self.cfg.pool)
        self.pool_idx = col.rand_idx[:n].tolist()
        self.pool_act = col.rand_act[:n].float()
        self.pool_speech = np.array([int(col.modality[i]) == SPEECH for i in self.pool_idx])
        self.pool_ctx = {i: self.ev.context(i) for i in self.pool_idx}
        speech = [i for i, s in zip(self.pool_idx, self.pool_speech, strict=True) if s]
        self.pool_meas = dict(zip(speech, self.ev.measures(speech), strict=True))
        self.baseline = {k: np.array([m.get(k, math.nan) for m in self.pool_meas.values()], float) for k in MEASURES}
        self.baseline["t_start"] = np.array([self.pool_ctx[i]["t_start"] for i in speech], float)
        self.base_tokens = [self.pool_ctx[i]["token"] for i in self.pool_idx if not self.pool_ctx[i].get("time")]

    # ---- one feature ---------------------------------------------------------------------------
    def _top(self, f: int) -> tuple[list[int], list[float], float]:
        """Top activations spread over utterances (speech positions at least half a clip apart), and
        the speech share of the raw top-`top` (the modality vote)."""
        col, c = self.col, self.cfg
        idx = col.top_idx[f]
        acts = col.top_act[f]
        valid = idx >= 0
        idx, acts = idx[valid].tolist(), acts[valid].tolist()
        raw = idx[: c.top]
        share = sum(int(col.modality[i]) == SPEECH for i in raw) / len(raw) if raw else math.nan
        gap = max(1, round(c.clip_s * self.bb.token_rate / 2))
        keep: list[int] = []
        vals: list[float] = []
        taken: dict[int, list[int]] = {}
        for i, a in zip(idx, acts, strict=True):
            j, p = int(col.item_of[i]), int(col.pos[i])
            near = gap if int(col.modality[i]) == SPEECH else 1
            if any(abs(p - q) < near for q in taken.get(j, [])):
                continue
            taken.setdefault(j, []).append(p)
            keep.append(i)
            vals.append(a)
        return keep, vals, share

    def _in_modality(self, i: int, modality: str) -> bool:
        speech = int(self.col.modality[i]) == SPEECH
        return modality == "mixed" or speech == (modality == "speech")

    def _quantiles(self, idx: list[int], acts: list[float], modality: str, exclude: set[int]):
        """Held-out activating examples of the feature's modality: one per activation quantile bin."""
        ok = [(a, i) for i, a in zip(idx, acts, strict=True) if i >= 0 and i not in exclude]
        ok = sorted((a, i) for a, i in ok if self._in_modality(i, modality))
        if len(ok) <= self.cfg.quantiles:
            return [i for _, i in ok], [a for a, _ in ok]
        bins = np.array_split(np.arange(len(ok)), self.cfg.quantiles)
        pick = [ok[b[len(b) // 2]] for b in bins]
        return [i for _, i in pick], [a for a, _ in pick]

    def _negatives(self, f: int, modality: str) -> tuple[list[int], list[int]]:
        zero = (self.pool_act[:, f] == 0).numpy()
        if modality == "speech":
            zero &= self.pool_speech
        elif modality == "text":
            zero &= ~self.pool_speech
        cand = [i for i, z in zip(self.pool_idx, zero, strict=True) if z]
        random.Random(self.cfg.seed * 1_000_003 + f).shuffle(cand)
        n = self.cfg.negatives
        return cand[n:], cand[:n]  # (for choosing the label: all the others; for scoring it)

    def _examples(self, idxs: list[int]) -> list[tuple[dict, dict | None]]:
        meas = self.ev.measures([i for i in idxs if i not in self.pool_meas])
        it = iter(meas)
        out = []
        for i in idxs:
            ctx = self.pool_ctx.get(i) or self.ev.context(i)
            m = self.pool_meas[i] if i in self.pool_meas else next(it)
            out.append((ctx, m))
        return out

    def _enrichment(self, top: list[tuple[dict, dict | None]]) -> dict:
        """Top activations vs random positions: effect size (Cohen's d) and log-odds of a tag per measure;
        token counts with log-odds vs random text positions."""
        out: dict = {}
        speech = [(c, m) for c, m in top if m is not None]
        for k, base in self.baseline.items():
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
            base = self.base_tokens
            counts: dict[str, int] = {}
            for t in texts:
                counts[t] = counts.get(t, 0) + 1
            out["tokens"] = [
                {"token": t, "n": n, "log_odds": finite(log_odds(n, len(texts), base.count(t), max(len(base), 1)))}
                for t, n in sorted(counts.items(), key=lambda kv: -kv[1])[:8]
            ]
        return out

    def feature(self, f: int) -> dict:
        """The labels.jsonl record of feature f (clips are written by the batch)."""
        col, c = self.col, self.cfg
        fires = int(col.fires[f])
        base = {"feature": f, "fires": fires, "freq": finite(fires / max(1, col.n_positions))}
        if fires == 0:
            return base | {
                "modality": "dead",
                "speech_share": None,
                "label": f"dead (never fired on {col.n_positions} positions)",
                "labeler": self.labeler.name,
                "scores": {},
                "examples": [],
            }
        ranked_i, ranked_a, share = self._top(f)
        top_i, top_a = ranked_i[: c.top], ranked_a[: c.top]
        modality = "speech" if share >= c.speech_share else "text" if share <= c.text_share else "mixed"
        # held-out activating examples: quantiles of the rest of the top pool (as Delphi samples the
        # activation range of a feature's activating contexts), and of a uniform sample of all activations
        q_i, q_a = self._quantiles(ranked_i[c.top :], ranked_a[c.top :], modality, set(top_i))
        valid = col.res_idx[f] >= 0
        u_i, _ = self._quantiles(col.res_idx[f][valid].tolist(), col.res_act[f][valid].tolist(), modality, set(top_i))
        sel_neg, score_neg = self._negatives(f, modality)
        top = self._examples(top_i)
        quant = self._examples(q_i)
        uniform = self._examples(u_i)
        neg_sel = self._examples(sel_neg)
        neg_score = self._examples(score_neg)
        enrich = self._enrichment(top)
        if self.labeler.name == "llm":
            lab = self.labeler.label(f, top, neg_sel, modality, self.asr, _effect_sizes(enrich))
        else:
            lab = self.labeler.label(f, top, neg_sel, modality, self.asr)
        ok = lab.get("label") and not lab.get("failure")
        score = self.labeler.score(f, lab, quant, neg_score) if ok and len(quant) >= 3 else math.nan
        score_u = self.labeler.score(f, lab, uniform, neg_score) if ok and len(uniform) >= 3 else math.nan
        res = col.res_act[f][col.res_idx[f] >= 0].numpy()
        counts, edges = np.histogram(res, bins=20) if len(res) else (np.zeros(0), np.zeros(0))
        record = base | {
            "modality": modality,
            "speech_share": finite(share),
            "label": lab.get("label"),
            "labeler": self.labeler.name,
            **{k: v for k, v in lab.items() if k not in ("label", "_hypothesis")},
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

    # ---- a batch -------------------------------------------------------------------------------
    def part_path(self, feats: list[int]) -> Path:
        return self.out / "parts" / f"{feats[0]:06d}-{feats[-1]:06d}-{len(feats)}.jsonl"

    def run_batch(self, feats: list[int]) -> tuple[str, int, float]:
        t0 = time.time()
        if self.labeler.name == "llm" and self.cfg.llm_concurrency > 1:
            with ThreadPoolExecutor(self.cfg.llm_concurrency) as ex:
                records = list(ex.map(self.feature, feats))
        else:
            records = [self.feature(f) for f in feats]
        for r in records:
            self._write_clips(r)
        with atomic_path(self.part_path(feats)) as tmp:
            tmp.write_text("".join(json.dumps(r) + "\n" for r in records))
        return str(self.part_path(feats)), len(records), time.time() - t0

    def _write_clips(self, record: dict) -> None:
        import soundfile as sf

        n = 0
        for rank, ex in enumerate(record["examples"]):
            if ex["modality"] != "speech" or n >= self.cfg.clips:
                continue
            rel = f"clips/{record['feature']:06d}-{rank:02d}.wav"
            path = self.out / rel
            if not path.exists():
                clip, _ = self.ev.clip(ex["idx"])
                with atomic_path(path) as tmp:
                    sf.write(str(tmp), clip, self.bb.sample_rate, subtype="PCM_16", format="WAV")
            ex["clip"] = rel
            n += 1


def _same_backbone(a: str, b: str) -> bool:
    if a == b:
        return True
    pa, pb = Path(a), Path(b)
    return pa.exists() and pb.exists() and pa.resolve() == pb.resolve()


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


# ---- forked workers ---------------------------------------------------------------------------
_JOB: Job | None = None


def _init_worker() -> None:
    torch.set_num_threads(1)


def _work(feats: list[int]) -> tuple[str, int, float]:
    return _JOB.run_batch(feats)


def read_records(out: Path) -> list[dict]:
    """All feature records under OUT/parts (the newest part wins for a feature labelled twice)."""
    recs: dict[int, dict] = {}
    parts = sorted((out / "parts").glob("*.jsonl"), key=lambda p: p.stat().st_mtime)
    for p in parts:
        for line in p.read_text().splitlines():
            r = json.loads(line)
            recs[r["feature"]] = r
    return [recs[k] for k in sorted(recs)]


def run_label(cfg: LabelConfig) -> dict:
    """Label the features (resumable); returns the summary (also OUT/summary.json)."""
    global _JOB
    t_start = time.time()
    job = Job(cfg)
    job.prepare()
    t_ready = time.time()
    todo = [b for b in _batches(job.features, cfg.batch) if not job.part_path(b).exists()]
    done_before = len(job.features) - sum(len(b) for b in todo)
    bar = tqdm(
        total=len(job.features), initial=done_before, desc="label features", unit="feat", disable=not cfg.progress
    )
    n_new = 0
    if cfg.workers > 1 and len(todo) > 1:
        import multiprocessing as mp

        _JOB = job
        try:
            with ProcessPoolExecutor(cfg.workers, mp_context=mp.get_context("fork"), initializer=_init_worker) as ex:
                for _, n, _ in ex.map(_work, todo):
                    bar.update(n)
                    n_new += n
        finally:
            _JOB = None
    else:
        for b in todo:
            _, n, _ = job.run_batch(b)
            bar.update(n)
            n_new += n
    bar.close()
    t_done = time.time()
    wanted = set(job.features)
    records = [r for r in read_records(job.out) if r["feature"] in wanted]
    from ttslens.autointerp.report import write_outputs

    summary = {
        "out": str(job.out),
        "sae": str(job.sae_dir),
        "backbone": job.backbone_name,
        "layer": job.layer,
        "labeler": cfg.labeler,
        "features": len(records),
        "labelled_now": n_new,
        "modalities": {m: sum(r["modality"] == m for r in records) for m in ("text", "speech", "mixed", "dead")},
        "detection_auroc": summarise(records),
        "detection_auroc_uniform": summarise(records, "detection_auroc_uniform"),
        "failures": sum(1 for r in records if r.get("failure")),
        "padded_clips": sum(1 for r in records for e in r["examples"] if e.get("padded")),
        "seconds": {"prepare": round(t_ready - t_start, 1), "label": round(t_done - t_ready, 1)},
        "features_per_min": round(60 * n_new / max(t_done - t_ready, 1e-9), 1) if n_new else None,
        "notes": job.notes,
    }
    if summary["padded_clips"]:
        job.notes.append(
            f"{summary['padded_clips']} example clips crossed an utterance edge and were zero-padded to "
            f"{cfg.clip_s:g} s (marked padded in labels.jsonl)"
        )
    write_outputs(job, records, summary)
    return summary


def _batches(feats: list[int], size: int) -> list[list[int]]:
    return [feats[i : i + size] for i in range(0, len(feats), size)]

"""What one `ttslens label` run prepares once and shares with every batch (and forked worker): the
checked settings, the SAE and backbone, the scanned corpus items, the activation collection, the
optional clip models, the labeler and the pool of random positions that supplies negatives.
"""

from __future__ import annotations

import json
import math
import os
import random
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from ttslens.audio.backbones.registry import backbone_spec
from ttslens.audio.corpus import load_corpus, with_tokens
from ttslens.audio.measures import laughter_detector_for
from ttslens.audio.measures.clips import MEASURES
from ttslens.autointerp.collect import Collection, collect, load_or_collect
from ttslens.autointerp.evidence import ClipModels, Evidence
from ttslens.sae import notes
from ttslens.sae.activations import SPEECH
from ttslens.sae.errors import BadInput
from ttslens.sae.files import atomic_write_json, load_sae, read_cfg, sae_info

if TYPE_CHECKING:
    from ttslens.autointerp.pipeline import LabelConfig

MIN_ITEMS = 8
STAMPED = ("labeler", "items", "top", "quantiles", "negatives", "pool", "speech_share", "text_share", "clip_s")
STAMPED += ("seed", "asr", "laughter_model", "gender_model", "corpus")


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


def check_settings(cfg: LabelConfig) -> None:
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


def _same_backbone(a: str, b: str) -> bool:
    if a == b:
        return True
    pa, pb = Path(a), Path(b)
    return pa.exists() and pb.exists() and pa.resolve() == pb.resolve()


class Job:
    """Everything one `ttslens label` run needs, shared by its batches. `Job(cfg)` checks the settings and
    loads the SAE, the backbone and the corpus items; `prepare()` does the slow part."""

    def __init__(self, cfg: LabelConfig):
        from ttslens.audio import load_backbone

        check_settings(cfg)
        self.cfg = cfg
        self.sae_dir = Path(cfg.sae)
        read_cfg(self.sae_dir)  # clear error if missing
        info = sae_info(self.sae_dir)
        self.backbone_name, self.layer = self._backbone_and_layer(info)
        self.bb = load_backbone(self.backbone_name, device=cfg.device, dtype=cfg.dtype)
        self.sae = load_sae(self.sae_dir, str(self.bb.device))
        if self.sae.cfg.d_in != self.bb.d_model:
            raise BadInput(
                f"the SAE reads width {self.sae.cfg.d_in} but {self.backbone_name} has d_model {self.bb.d_model}"
            )
        self.features = parse_features(cfg.features, self.sae.cfg.d_sae)
        self.out = Path(cfg.out) if cfg.out else self.sae_dir / "labels"
        self.skip_special = bool(info.get("train", {}).get("exclude_special", False))
        self.corpus_index, self.items = self._scanned_items()
        self._stamp()
        self.col: Collection | None = None
        self.ev: Evidence | None = None
        self.pool: NegativePool | None = None
        self.labeler = None
        self.models: ClipModels | None = None
        self.models_used: dict = {}
        self.asr = False

    def _backbone_and_layer(self, info: dict) -> tuple[str, int]:
        """The backbone and layer to use: the SAE's own unless given, and a different given one is refused."""
        cfg, sae_dir = self.cfg, self.sae_dir
        trained_on, trained_layer = info.get("backbone"), info.get("layer")
        given = backbone_spec(cfg.backbone, cfg.model_dir)
        name = given or trained_on
        if not name:
            raise BadInput(f"{sae_dir} does not say which TTS backbone it was trained on: pass --backbone")
        if trained_on and given and not _same_backbone(given, trained_on):
            raise BadInput(
                f"the SAE in {sae_dir} was trained on backbone {trained_on!r}, not {given!r}: "
                f"pass --backbone {trained_on} or an SAE trained on {given}"
            )
        layer = cfg.layer if cfg.layer >= 0 else trained_layer
        if layer is None:
            raise BadInput(f"{sae_dir} does not say which layer it reads: pass --layer")
        if trained_layer is not None and layer != trained_layer:
            raise BadInput(
                f"the SAE in {sae_dir} reads layer {trained_layer}, not {layer}: drop --layer or use an SAE for it"
            )
        return name, layer

    def _scanned_items(self) -> tuple[list[int], list]:
        """--items corpus utterances in a seeded order: (their corpus indices, the items)."""
        cfg = self.cfg
        corpus = load_corpus(cfg.corpus or None, backbone=self.bb).items("all")
        if len(corpus) < MIN_ITEMS:
            raise BadInput(
                f"the {self.backbone_name} corpus has {len(corpus)} utterances; labelling needs at least {MIN_ITEMS} "
                + ("(give a larger --corpus)" if cfg.corpus else "(rebuild the backbone with more --utterances)")
            )
        if len(corpus) < cfg.items:
            notes.note(f"the corpus has {len(corpus)} utterances, fewer than --items {cfg.items}: using all")
        order = list(range(len(corpus)))
        random.Random(cfg.seed).shuffle(order)
        index = order[: max(MIN_ITEMS, cfg.items)]
        return index, [with_tokens(corpus[i], self.bb) for i in index]

    def _stamp(self) -> None:
        """OUT remembers the settings its records depend on; a re-run with others is refused."""
        c = self.cfg
        w = self.sae_dir / "sae_weights.safetensors"
        stamp = {
            "sae": str(self.sae_dir.resolve()),
            "sae_weights": [w.stat().st_size, int(w.stat().st_mtime)] if w.exists() else None,
            "backbone": self.backbone_name,
            "layer": self.layer,
            **{k: getattr(c, k) for k in STAMPED},
            "llm_model": c.llm_model if c.labeler == "llm" else None,
        }
        path = self.out / "label_config.json"
        if not path.exists():
            atomic_write_json(path, stamp)
            return
        old = json.loads(path.read_text())
        diff = {k: (old.get(k), v) for k, v in stamp.items() if old.get(k) != v}
        if diff:
            what = ", ".join(f"{k} {a!r} → {b!r}" for k, (a, b) in diff.items())
            raise BadInput(f"{self.out} holds labels made with other settings ({what}): use another --out or delete it")

    def prepare(self) -> None:
        """Collect activations (or reuse them), load the clip models, build the labeler and the negatives pool."""
        c = self.cfg
        meta = {
            "sae": str(self.sae_dir.resolve()),
            "layer": self.layer,
            "items": self.corpus_index,
            "skip_special": self.skip_special,
            "seed": c.seed,
        }
        scan = lambda: collect(  # noqa: E731
            self.bb,
            self.sae,
            self.layer,
            self.items,
            self.corpus_index,
            skip_special=self.skip_special,
            seed=c.seed,
            progress=c.progress,
        )
        self.col = load_or_collect(self.out / "collect.safetensors", meta, scan)
        if not bool((self.col.modality == SPEECH).any()):
            raise BadInput("the scanned corpus has no speech positions: is it a TTS corpus with speech tokens?")
        detector = laughter_detector_for(self.bb)
        self.models = load_clip_models(c, detector is not None)
        self.models_used = clip_models_used(c, self.models, detector is not None)
        self.ev = Evidence(self.bb, self.items, self.col, c.clip_s, detector, self.models, c.progress)
        self.asr = self.models.asr is not None
        self.labeler = make_labeler(c, self.out)
        self.pool = NegativePool.measure(self.col, self.ev, c.pool)


# ---- the optional clip models --------------------------------------------------------------------------
def _unavailable(model: str, what: str, download: bool, where: str = "the Hugging Face cache") -> str:
    """Why `model` is not there, in the command line's words, with the fix."""
    if download:
        return f"{what} {model!r} could not be downloaded (check the network, or pass a local copy)"
    return f"{what} {model!r} not found in {where} (pass --download to fetch them)"


def load_clip_models(cfg: LabelConfig, has_detector: bool) -> ClipModels:
    """The optional clip models the settings ask for; each missing one is one note saying what is used
    instead and how to get it."""
    asr = lau = gen = None
    if cfg.asr:
        from ttslens.audio.measures.asr import ASR, missing_package, weights_places

        if missing := missing_package():
            why = f"{missing}; or --asr '' to turn ASR off"
        elif cfg.asr.endswith(".pt") or os.sep in cfg.asr:
            why = f"the whisper model {cfg.asr} does not exist"
        else:
            why = _unavailable(cfg.asr, "whisper weights", cfg.download, weights_places())
        asr = notes.load_optional(lambda: ASR.load(cfg.asr, download=cfg.download), f"ASR evidence is skipped: {why}")
    if cfg.laughter_model:
        from ttslens.audio.measures.classifiers import LaughterClassifier

        instead = "uses the backbone's laughter detector" if has_detector else "is skipped"
        why = _unavailable(cfg.laughter_model, "AST weights", cfg.download)
        lau = notes.load_optional(
            lambda: LaughterClassifier.load(cfg.laughter_model, download=cfg.download),
            f"laughter evidence {instead}: {why}",
        )
    if cfg.gender_model:
        from ttslens.audio.measures.classifiers import GenderClassifier

        why = _unavailable(cfg.gender_model, "wav2vec2 gender weights", cfg.download)
        gen = notes.load_optional(
            lambda: GenderClassifier.load(cfg.gender_model, download=cfg.download), f"P(male) comes from pitch: {why}"
        )
    return ClipModels(asr, lau, gen)


def clip_models_used(cfg: LabelConfig, models: ClipModels, has_detector: bool) -> dict:
    """What really measured ASR, laughter and P(male) (for summary.json)."""
    return {
        "asr": cfg.asr if models.asr is not None else None,
        "laughter": cfg.laughter_model if models.laughter is not None else "backbone" if has_detector else None,
        "p_male": cfg.gender_model if models.gender is not None else "pitch",
    }


def make_labeler(cfg: LabelConfig, out: Path):
    if cfg.labeler == "llm":
        from ttslens.autointerp.labelers import LLMLabeler
        from ttslens.autointerp.llm import ChatClient, LLMConfig

        client = ChatClient(
            LLMConfig(base_url=cfg.llm_base_url, model=cfg.llm_model, api_key_env=cfg.llm_key_env),
            out / "llm_cache.jsonl",
        )
        client.check()
        return LLMLabeler(client)
    from ttslens.autointerp.labelers import EvidenceLabeler

    return EvidenceLabeler()


# ---- random positions: negatives and the random-clip baseline ------------------------------------------------
@dataclass
class NegativePool:
    """Random positions of the collection with their evidence, measured once per run."""

    idx: list[int]  # position indices
    act: torch.Tensor  # [n, F] latents there
    speech: np.ndarray  # [n] bool
    ctx: dict[int, dict]  # position → text context
    meas: dict[int, dict]  # speech position → clip measures
    baseline: dict[str, np.ndarray]  # measure → its values at the random speech positions (and t_start)
    tokens: list[str]  # the tokens at the random text positions

    @classmethod
    def measure(cls, col: Collection, ev: Evidence, n: int) -> NegativePool:
        n = min(len(col.rand_idx), n)
        idx = col.rand_idx[:n].tolist()
        speech = np.array([int(col.modality[i]) == SPEECH for i in idx])
        ctx = {i: ev.context(i) for i in idx}
        at_speech = [i for i, s in zip(idx, speech, strict=True) if s]
        meas = dict(zip(at_speech, ev.measures(at_speech), strict=True))
        baseline = {k: np.array([m.get(k, math.nan) for m in meas.values()], float) for k in MEASURES}
        baseline["t_start"] = np.array([ctx[i]["t_start"] for i in at_speech], float)
        tokens = [ctx[i]["token"] for i in idx if not ctx[i].get("time")]
        return cls(idx, col.rand_act[:n].float(), speech, ctx, meas, baseline, tokens)

    def negatives(self, f: int, modality: str, n: int, seed: int) -> tuple[list[int], list[int]]:
        """Positions of `modality` where feature f is 0, shuffled per feature: (the rest, for choosing the
        label; the first n, for scoring it)."""
        zero = (self.act[:, f] == 0).numpy()
        if modality == "speech":
            zero &= self.speech
        elif modality == "text":
            zero &= ~self.speech
        cand = [i for i, z in zip(self.idx, zero, strict=True) if z]
        random.Random(seed * 1_000_003 + f).shuffle(cand)
        return cand[n:], cand[:n]

"""What the app's page does (`Studio`): the loaded backbone, SAEs, feature indexes and text model, one
plain method per action, each raising BadInput with one line on bad input. No gradio here: the tabs
(app/tabs.py) call these methods and show their results or errors.
"""

from __future__ import annotations

import math
import sys
import tempfile
import threading
from pathlib import Path
from typing import TYPE_CHECKING

from ttslens.app.render import fmt
from ttslens.audio.measures import laughter_detector_for, timbre_gender_for
from ttslens.audio.voices import voice_names
from ttslens.sae.devices import resolve_device
from ttslens.sae.errors import BadInput
from ttslens.sae.steering import PRESET_NAMES

if TYPE_CHECKING:
    from ttslens.app.web import AppConfig

MAX_STRENGTH = 50.0  # anything beyond is refused (API callers can send what sliders cannot)
N_CLIPS = 4  # audio players on a feature card


# ---- input checks: one clear line per bad value ---------------------------------------------------------
def number(x, what: str, lo: float, hi: float) -> float:
    """`x` as a finite float in [lo, hi]."""
    try:
        v = float(x if x not in (None, "") else 0)
    except (TypeError, ValueError):
        raise BadInput(f"{what} must be a number (got {x!r})") from None
    if not math.isfinite(v) or not lo <= v <= hi:
        raise BadInput(f"{what} must be between {lo:g} and {hi:g} (got {x!r})")
    return v


def whole(x, what: str, lo: int, hi: int) -> int:
    """`x` as an integer in [lo, hi]."""
    v = number(x, what, lo, hi)
    if v != int(v):
        raise BadInput(f"{what} must be a whole number (got {x!r})")
    return int(v)


def parse_alphas(text: str) -> list[float]:
    """ "−4,−2,0,2,4" (typographic minus signs accepted) → strengths."""
    parts = [p.strip() for p in str(text or "").replace("−", "-").replace(";", ",").split(",") if p.strip()]
    if not parts:
        raise BadInput("no strengths given: write them comma-separated, e.g. -4,-2,0,2,4")
    if len(parts) > 15:
        raise BadInput(f"{len(parts)} strengths: give at most 15")
    return [number(p, f"strength {p!r}", -MAX_STRENGTH, MAX_STRENGTH) for p in parts]


# ---- what the page does -------------------------------------------------------------------------------
class Studio:
    """The loaded backbone, SAEs, feature indexes and text model; one method per action of the page."""

    def __init__(self, cfg: AppConfig):
        from ttslens.audio.steering.api import SteerableTTS
        from ttslens.autointerp.browse import FeatureIndex

        self.cfg = cfg
        from ttslens.audio.backbones.registry import backbone_spec

        spec = backbone_spec(cfg.backbone, cfg.model_dir)
        self.tts = SteerableTTS.load(spec, cfg.sae, device=cfg.device, dtype=cfg.dtype)
        self.index = {str(s.layer): FeatureIndex.load(s.path) for s in self.tts.saes}
        if cfg.work_dir:
            Path(cfg.work_dir).mkdir(parents=True, exist_ok=True)
        self.work = Path(cfg.work_dir or tempfile.mkdtemp(prefix="ttslens-app-")).resolve()
        # generation hooks live on the shared model: one synthesis (and one sweep, one text job) at a time
        self.tts_lock, self.sweep_lock, self.text_lock = threading.Lock(), threading.Lock(), threading.Lock()
        self.text, self.text_note = self._load_text(cfg)

    @staticmethod
    def _load_text(cfg: AppConfig):
        if not cfg.text_model:
            return None, "No text model loaded: start the app with `--text-model MODEL --text-sae SAE_DIR`."
        try:
            from ttslens.sae.lm.steer import TextSteerer
        except ImportError as e:
            return None, f"Text-LLM steering is not available in this install ({e})."
        try:
            return TextSteerer.load(cfg.text_model, cfg.text_sae, device=str(resolve_device(cfg.device))), ""
        except Exception as e:  # the other tabs still work
            print(f"ttslens app: text model not loaded: {e}", file=sys.stderr)
            return None, f"Could not load the text model {cfg.text_model!r}: {e}"

    # ---- SAEs and their features -------------------------------------------------------------------
    def sae_choices(self) -> list[tuple[str, str]]:
        return [(f"layer {s.layer} · {s.path}", str(s.layer)) for s in self.tts.saes]

    def _sae(self, layer):
        if not self.tts.saes:
            raise BadInput("no SAE loaded: start the app with --sae SAE_DIR to steer and browse features")
        for s in self.tts.saes:
            if str(s.layer) == str(layer):
                return s
        raise BadInput(f"no SAE loaded for layer {layer!r}: loaded layers are {[s.layer for s in self.tts.saes]}")

    def voice_names(self) -> list[str]:
        return voice_names(self.tts.bb)

    def has_presets(self, layer) -> bool:
        return bool(self.tts.saes) and self.tts.saved_presets(self._sae(layer)) is not None

    def feature_choices(self, layer) -> list[tuple[str, str]]:
        return self.index[str(self._sae(layer).layer)].choices() if self.tts.saes else []

    def steer_request(self, layer, presets: dict[str, float], picks: list[tuple[str, float]]) -> dict[str, float]:
        """Slider values → a `SteerableTTS.synthesize` steer dict ("3/laughter": 2.0, "3/361": 1.5); zeros omitted."""
        steer: dict[str, float] = {}
        wanted = [(name, a) for name, a in presets.items()] + [(f, a) for f, a in picks if str(f or "").strip()]
        for target, a in wanted:
            a = number(a, f"strength of {target}", -MAX_STRENGTH, MAX_STRENGTH)
            if a == 0:
                continue
            s, key = self._sae(layer), str(target).strip()
            if key in PRESET_NAMES and not self.has_presets(layer):
                raise BadInput(f"the SAE at {s.path} has no presets: run `ttslens presets --sae {s.path}` first")
            key = key if "/" in key else f"{s.layer}/{key}"
            steer[key] = steer.get(key, 0.0) + a
        return steer

    # ---- tab 1: synthesize & steer -----------------------------------------------------------------
    def synthesize(
        self,
        text: str,
        instruct: str = "",
        layer=None,
        presets: dict[str, float] | None = None,
        picks: list[tuple[str, float]] = (),
        seed=0,
        scope: str = "speech",
        replace: bool = False,
        progress=None,
        voice: str = "",
        vectors: str = "",
    ) -> dict:
        """Default and steered synthesis of `text` with the same seed (and voice), their measures, the edits.
        `vectors`: trained steering vectors added too, "DIR=STRENGTH" entries separated by commas."""
        from ttslens.audio.backbones.base import SCOPES
        from ttslens.audio.measures.signal import measure

        if not str(text or "").strip():
            raise BadInput("empty text: type the words to speak")
        if scope not in SCOPES:
            raise BadInput(f"unknown scope {scope!r}: use one of {', '.join(SCOPES)}")
        seed = whole(seed, "seed", 0, 2**31 - 1)
        steer = self.steer_request(layer, presets or {}, list(picks)) if self.tts.saes else {}
        tick = progress or (lambda *_: None)
        kw = {"seed": seed, "instruct": str(instruct or "").strip() or None, "voice": str(voice or "") or None}
        with self.tts_lock:
            tick(0.1, "default synthesis")
            default = self.tts.synthesize(text, None, **kw)
            tick(0.5, "steered synthesis")
            vecs = [v.strip() for v in str(vectors or "").split(",") if v.strip()]
            steered = self.tts.synthesize(
                text, steer, scope=scope, replace=replace, record=bool(self.tts.saes), vectors=vecs, **kw
            )
        tick(0.9, "measuring")
        det = laughter_detector_for(self.tts.bb)
        timbre = timbre_gender_for(self.tts.bb)
        m0, m1 = (measure(o.wave, o.sample_rate, det, gender_model=timbre) for o in (default, steered))
        names = {
            "duration_s": "duration (s)",
            "voiced_s": "voiced (s)",
            "median_f0_hz": "median F0 (Hz)",
            "p_male": "P(male) by pitch",
            "p_male_timbre": "P(male) by timbre",
            "syllables_per_s": "syllables/s",
            "laughter": "laughter",
        }
        measures = [
            {"measure": n, "default": fmt(getattr(m0, k)), "steered": fmt(getattr(m1, k))} for k, n in names.items()
        ]
        edits = [
            {
                "layer": e.layer,
                "feature": e.edit.feature,
                "op": e.edit.op,
                "alpha": e.edit.alpha,
                "mean act": round(e.edit.mean_act, 4),
                "source": e.source,
                "label": e.label,
            }
            for e in steered.edits
        ]
        edits += [{"layer": "vectors", "source": v} for v in vecs]
        return {"default": default, "steered": steered, "steer": steer, "measures": measures, "edits": edits}

    # ---- tab 2: feature browser ----------------------------------------------------------------------
    def browse(self, layer, modality: str = "all", query: str = "", min_auroc=0.0) -> list[dict]:
        """The labelled features passing the filters (autointerp.browse.FeatureIndex.filter)."""
        s = self._sae(layer)
        return self.index[str(s.layer)].filter(modality, str(query or ""), number(min_auroc, "minimum AUROC", 0, 1))

    def card(self, layer, feature) -> dict:
        """A feature's card data plus its first clips as (sample_rate, wave) (paths checked by the index)."""
        import soundfile as sf

        idx = self.index[str(self._sae(layer).layer)]
        if feature in (None, ""):
            raise BadInput("no feature chosen: pick a row of the table or type a feature id")
        c = idx.card(whole(feature, "feature id", 0, idx.n_features - 1))
        audio = []
        for clip in c["clips"][:N_CLIPS]:
            wave, sr = sf.read(idx.clip_path(c["feature"], clip["index"]), dtype="float32")
            audio.append({**clip, "audio": (int(sr), wave)})
        return {**c, "audio": audio}

    def flow(self, layer, feature, depth: int = 3) -> dict:
        """A feature's flow graph (`ttslens.sae.flow`) over the loaded SAEs, or over --flow-dir's (which may
        hold MLP / attention SAEs too): {"graph", "svg", "notes"}; graph None when nothing can be traced."""
        from ttslens.sae import notes
        from ttslens.sae.flow import SAESet, flow_graph, flow_svg

        s = self._sae(layer)
        f = whole(feature, "feature id", 0, s.sae.cfg.d_sae - 1)
        with notes.collect() as got:
            if self.cfg.flow_dir:
                ss = SAESet(self.cfg.flow_dir)
                if ss.layers() and ("resid", s.layer) not in ss.saes:
                    raise BadInput(f"--flow-dir {self.cfg.flow_dir} has no residual SAE for layer {s.layer}")
            else:
                ss = SAESet.of({("resid", x.layer): x.sae for x in self.tts.saes})
            if len(ss.layers()) < 2 and not ss.layers("mlp") and not ss.layers("attn"):
                msg = "one SAE loaded: start the app with the neighbouring layers' --sae, or --flow-dir DIR"
                return {"graph": None, "svg": "", "notes": [msg]}
            graph = flow_graph(ss, s.layer, f, depth)
        labels = {}
        for n in graph["nodes"]:
            if n["kind"] == "resid" and str(n["layer"]) in self.index:
                labels[n["id"]] = (self.index[str(n["layer"])].records.get(n["feature"]) or {}).get("label", "")
        return {"graph": graph, "svg": flow_svg(graph, labels), "notes": got}

    # ---- tab 3: dose-response --------------------------------------------------------------------------
    def dose(self, layer, attribute: str, target: str, alphas: str, voices=6, texts=5, seed=0, progress=None) -> dict:
        """One `run_steer_eval` sweep into a fresh directory under the work dir."""
        from ttslens.audio.steering.evaluate import ATTRIBUTES, SteerEvalConfig, run_steer_eval

        s = self._sae(layer)
        if attribute not in ATTRIBUTES:
            raise BadInput(f"unknown attribute {attribute!r}: use one of {', '.join(ATTRIBUTES)}")
        target = str(target or "").strip()
        if not target:
            raise BadInput("nothing to steer: choose a preset or a feature")
        cfg = SteerEvalConfig(
            sae=[str(s.path)],
            attribute=attribute,
            steer="" if target == attribute else target,
            alphas=parse_alphas(alphas),
            voices=whole(voices, "voices", 2, 16),
            texts=whole(texts, "texts", 1, 20),
            seed=whole(seed, "seed", 0, 2**31 - 1),
            backbone=self.cfg.backbone,
            asr="",
            out=tempfile.mkdtemp(prefix="sweep-", dir=self.work),
            progress=False,
        )
        with self.sweep_lock:
            return run_steer_eval(cfg, progress=progress)

    # ---- tab 4: text LLM -------------------------------------------------------------------------------
    def text_compare(
        self, prompt: str, picks: list[tuple[str, float]] = (), seed=0, max_new_tokens=40
    ) -> tuple[str, str]:
        """(default, steered) continuations of `prompt` with the same seed."""
        if self.text is None:
            raise BadInput(self.text_note)
        if not str(prompt or "").strip():
            raise BadInput("empty prompt: type the start of a text")
        steer: dict[str, float] = {}
        for f, a in picks:
            a = number(a, f"strength of {f}", -MAX_STRENGTH, MAX_STRENGTH)
            if str(f or "").strip() and a:
                steer[str(f).strip()] = steer.get(str(f).strip(), 0.0) + a
        n = whole(max_new_tokens, "max new tokens", 1, 512)
        with self.text_lock:
            return self.text.compare(prompt, steer, seed=whole(seed, "seed", 0, 2**31 - 1), max_new_tokens=n)

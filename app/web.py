"""The Gradio app (`ttslens app`): UI only; every action calls audio/, autointerp/ or sae/.

Four tabs: synthesize & steer (default vs steered audio, their measures, the edits, the steered
features' activations), the feature browser (autointerp.browse), dose-response sweeps
(audio.steer_eval) and text-LLM steering (sae.textsteer). `Studio` holds the loaded models and has one
plain method per action, raising ValueError with one line on bad input; `build_app` wires them to the
page and shows any exception as a message there. gradio is imported inside functions only: the CLI
imports `AppConfig` at start-up. (No `from __future__ import annotations`: gradio reads the callbacks'
annotations, e.g. gr.SelectData, as objects.)
"""

import html
import math
import os
import sys
import tempfile
import threading
import traceback
from dataclasses import dataclass, field
from pathlib import Path

from ttslens.audio.measures import laughter_detector_for
from ttslens.sae.errors import BadInput


@dataclass
class AppConfig:
    """The web app: synthesize & steer, the feature browser, dose-response sweeps, text-LLM steering.
    Serves on 127.0.0.1 (this machine only) unless --host says otherwise; never a public share link
    unless --share."""

    backbone: str = "demo"
    """TTS backbone name or `ttslens demo build` directory."""
    sae: list[str] = field(default_factory=list)
    """SAE directories on that backbone (one per layer); their labels (SAE_DIR/labels) feed the browser."""
    text_model: str = ""
    """Optional: a Hugging Face causal LM (hub id or local directory) for the text-LLM tab."""
    text_sae: list[str] = field(default_factory=list)
    """SAE directories trained on --text-model (for the text-LLM tab)."""
    host: str = "127.0.0.1"
    """Interface to listen on (0.0.0.0 exposes the app to your network)."""
    port: int = 7860
    """Port."""
    share: bool = False
    """Ask Gradio for a public share link (off by default)."""
    concurrency: int = 2
    """Jobs run at once; further users wait in the queue."""
    queue_size: int = 64
    """Requests that may wait in the queue (more are refused with a message)."""
    work_dir: str = ""
    """Where the app writes its files (sweep outputs, Gradio's cache); default: a new temporary directory."""


PRESET_NAMES = ("laughter", "gender", "rate")
PRESET_HELP = {"laughter": "+ laughter", "gender": "+ male / − female", "rate": "+ faster / − slower"}
SLIDER = 8.0  # slider range: strengths are multiples of the feature's mean activation
MAX_STRENGTH = 50.0  # anything beyond is refused (API callers can send what sliders cannot)
N_PICKS = 3  # extra feature pickers per tab
N_CLIPS = 4  # audio players on a feature card
EDIT_COLUMNS = ["layer", "feature", "op", "alpha", "mean act", "source", "label"]
DOSE_COLUMNS = ["alpha", "mean", "ci_lo", "ci_hi", "content", "n"]


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


def n_features(n: int) -> str:
    return f"{n} feature" + ("" if n == 1 else "s")


def _fmt(v, digits: int = 3) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    return f"{v:.{digits}g}" if isinstance(v, float) else str(v)


# ---- what the page does -------------------------------------------------------------------------------
class Studio:
    """The loaded backbone, SAEs, feature indexes and text model; one method per action of the page."""

    def __init__(self, cfg: AppConfig):
        from ttslens.audio.steering.api import SteerableTTS
        from ttslens.autointerp.browse import FeatureIndex

        self.cfg = cfg
        self.tts = SteerableTTS.load(cfg.backbone, cfg.sae)
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
            return TextSteerer.load(cfg.text_model, cfg.text_sae), ""
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
    ) -> dict:
        """Default and steered synthesis of `text` with the same seed, their measures, the edits."""
        from ttslens.audio.backbones.base import SCOPES
        from ttslens.audio.measures.signal import measure

        if not str(text or "").strip():
            raise BadInput("empty text: type the words to speak")
        if scope not in SCOPES:
            raise BadInput(f"unknown scope {scope!r}: use one of {', '.join(SCOPES)}")
        seed = whole(seed, "seed", 0, 2**31 - 1)
        steer = self.steer_request(layer, presets or {}, list(picks)) if self.tts.saes else {}
        tick = progress or (lambda *_: None)
        kw = {"seed": seed, "instruct": str(instruct or "").strip() or None}
        with self.tts_lock:
            tick(0.1, "default synthesis")
            default = self.tts.synthesize(text, None, **kw)
            tick(0.5, "steered synthesis")
            steered = self.tts.synthesize(text, steer, scope=scope, replace=replace, record=bool(self.tts.saes), **kw)
        tick(0.9, "measuring")
        det = laughter_detector_for(self.tts.bb)
        m0, m1 = (measure(o.wave, o.sample_rate, det) for o in (default, steered))
        names = {
            "duration_s": "duration (s)",
            "voiced_s": "voiced (s)",
            "median_f0_hz": "median F0 (Hz)",
            "p_male": "P(male)",
            "syllables_per_s": "syllables/s",
            "laughter": "laughter",
        }
        measures = [
            {"measure": n, "default": _fmt(getattr(m0, k)), "steered": _fmt(getattr(m1, k))} for k, n in names.items()
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


# ---- rendering: HTML and figures ------------------------------------------------------------------------
CSS = """
mark{background:#ffb347;padding:0 1px}.w{font-family:monospace;white-space:pre-wrap}
.card table{border-collapse:collapse}.card td,.card th{padding:2px 8px;border-bottom:1px solid #ddd;text-align:left}
"""


def card_html(c: dict) -> str:
    """A feature card's header, scores and text windows (every string escaped; the firing token marked)."""
    e = html.escape
    sc = c.get("scores") or {}
    head = (
        f"<h3>#{c['feature']} · {e(str(c.get('label') or ''))}</h3><p>{e(str(c.get('modality')))} · speech share "
        f"{_fmt(c.get('speech_share'))} · labeler {e(str(c.get('labeler')))} · confident {e(str(c.get('confident')))}"
        f" · fires {_fmt(c.get('fires'))} · freq {_fmt(c.get('freq'))} · max act {_fmt(c.get('max_act'))}"
        f" · mean act {_fmt(c.get('mean_act'))}</p>"
    )
    scores = "".join(f"<tr><td>{e(str(k))}</td><td>{e(_fmt(v))}</td></tr>" for k, v in sc.items())
    rows = "".join(
        f"<tr><td>{e(_fmt(w['activation']))}</td><td class='w'>{e(w['split'][0])}"
        f"{'<mark>' + e(w['split'][1]) + '</mark>' if w['split'][1] else ''}{e(w['split'][2])}</td></tr>"
        for w in c.get("windows", [])
    )
    fail = f"<p>LLM failure: {e(str(c['failure']))}</p>" if c.get("failure") else ""
    return (
        f"<div class='card'>{head}{fail}<table><tr><th>score</th><th></th></tr>{scores}</table>"
        f"<h4>Top activations</h4><table><tr><th>act</th><th>window</th></tr>{rows}</table></div>"
    )


def histogram_figure(hist: dict):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5, 2.6), tight_layout=True)
    ax = fig.add_subplot()
    edges, counts = hist.get("edges") or [], hist.get("counts") or []
    if len(edges) == len(counts) + 1 and counts:
        ax.bar(edges[:-1], counts, width=[b - a for a, b in zip(edges[:-1], edges[1:], strict=True)], align="edge")
    ax.set_xlabel("activation")
    ax.set_ylabel("count")
    ax.set_title("activation histogram", fontsize=10)
    return fig


def activation_figure(out):
    """The steered features' activations over every position of `out` (speech positions shaded)."""
    import numpy as np
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 3), tight_layout=True)
    ax = fig.add_subplot()
    modality = out.sequence.modality.numpy()
    speech = np.flatnonzero(modality == 1)
    if speech.size:
        breaks = np.flatnonzero(np.diff(speech) > 1)
        for a, b in zip(np.r_[speech[0], speech[breaks + 1]], np.r_[speech[breaks], speech[-1]], strict=True):
            ax.axvspan(a - 0.5, b + 0.5, color="#1565c0", alpha=0.08, lw=0)
    seen = set()
    for e in out.edits:
        key = (e.layer, e.edit.feature)
        if key in seen or not out.activations or e.layer not in out.activations or len(seen) >= 10:
            continue
        seen.add(key)
        ax.plot(
            out.activations[e.layer][:, e.edit.feature].numpy(),
            lw=1,
            label=f"{e.layer}/{e.edit.feature} {e.label}"[:48],
        )
    ax.set_xlabel("position (text, then shaded speech)")
    ax.set_ylabel("activation")
    ax.set_title("steered features over the steered output" if seen else "no feature steered", fontsize=10)
    if seen:
        ax.legend(fontsize=7, loc="upper left")
    return fig


def _message(e: BaseException) -> str:
    if isinstance(e, ValueError | FileNotFoundError | KeyError):
        return str(e).strip("'\"")
    traceback.print_exc()
    return f"{type(e).__name__}: {e}"


# ---- the page --------------------------------------------------------------------------------------------
def build_app(cfg: AppConfig, studio: Studio | None = None):
    """The gradio.Blocks page over a `Studio` (loaded from `cfg` unless given)."""
    studio = studio or Studio(cfg)
    import gradio as gr
    import numpy as np
    import pandas as pd

    from ttslens.audio.backbones.base import SCOPES
    from ttslens.audio.steering.evaluate import ATTRIBUTES

    def table(rows: list[dict], columns: list[str]):
        return pd.DataFrame(rows, columns=columns)

    def pcm(sample_rate: int, wave):
        """(rate, int16 wave) for a browser player (plain <audio> elements, no waveform widget)."""
        return int(sample_rate), (np.clip(wave, -1, 1) * 32767).astype(np.int16)

    player = {
        "type": "numpy",
        "interactive": False,
        "waveform_options": gr.WaveformOptions(show_recording_waveform=False),
    }

    def fail(e: BaseException, n: int):
        """Leave the n-1 other outputs as they are; the last output (a Markdown) shows the error."""
        msg = _message(e)
        gr.Warning(msg)
        return (*[gr.skip()] * (n - 1), f"**Error:** {html.escape(msg, quote=False)}")

    has_sae = bool(studio.tts.saes)
    sae_choices = studio.sae_choices()
    first = sae_choices[0][1] if sae_choices else None
    feature_choices = studio.feature_choices(first) if has_sae else []
    browse_cols = ["feature", "modality", "label", "auroc", "fires", "freq", "max_act"]

    with gr.Blocks(title="ttslens") as demo:
        gr.Markdown(
            f"## ttslens · backbone `{cfg.backbone}`" + ("" if has_sae else " · no SAE loaded (`--sae DIR` to steer)")
        )
        with gr.Tabs():
            # ---- 1: synthesize & steer -----------------------------------------------------------------
            with gr.Tab("Synthesize & steer"):
                with gr.Row():
                    with gr.Column(scale=3):
                        text = gr.Textbox(
                            label="Text", value="that is the funniest thing i have heard.", lines=2, elem_id="text"
                        )
                        instruct = gr.Textbox(label="Instruct (optional)", placeholder="a woman speaking quickly.")
                    with gr.Column(scale=2):
                        seed = gr.Number(label="Seed", value=0, precision=0, minimum=0)
                        scope = gr.Dropdown(
                            list(SCOPES), value="speech", label="Scope (positions steered)", visible=has_sae
                        )
                        replace = gr.Checkbox(label="replace (paper-exact)", visible=has_sae)
                with gr.Group(visible=has_sae):
                    sae = gr.Dropdown(sae_choices, value=first, label="SAE")
                    with gr.Row():
                        preset_ok = has_sae and studio.has_presets(first)
                        sliders = [
                            gr.Slider(
                                -SLIDER,
                                SLIDER,
                                value=0,
                                step=0.5,
                                label=name,
                                info=PRESET_HELP[name],
                                interactive=preset_ok,
                                elem_id=f"slider-{name}",
                            )
                            for name in PRESET_NAMES
                        ]
                    picks = []
                    for i in range(N_PICKS):
                        with gr.Row():
                            picks.append(
                                gr.Dropdown(
                                    feature_choices,
                                    value=None,
                                    label=f"Feature {i + 1}",
                                    allow_custom_value=True,
                                    filterable=True,
                                    scale=3,
                                    info="type to search labels; or an id like 361, 361:clamp",
                                )
                            )
                            picks.append(gr.Slider(-SLIDER, SLIDER, value=0, step=0.5, label="strength", scale=2))
                go = gr.Button("Synthesize", variant="primary", elem_id="synthesize")
                synth_status = gr.Markdown()
                with gr.Row():
                    audio_default = gr.Audio(label="Default (unsteered)", **player, elem_id="audio-default")
                    audio_steered = gr.Audio(label="Steered", **player, elem_id="audio-steered")
                with gr.Row():
                    measures = gr.Dataframe(
                        headers=["measure", "default", "steered"], label="Measures", interactive=False
                    )
                    edits = gr.Dataframe(
                        headers=EDIT_COLUMNS, label="Resolved edits", interactive=False, elem_id="edits"
                    )
                act_plot = gr.Plot(label="Steered features' activations", visible=has_sae)

            def on_synthesize(text, instruct, seed, scope, replace, sae, *rest, progress=gr.Progress()):  # noqa: B008 (how gradio injects its bar)
                try:
                    presets = dict(zip(PRESET_NAMES, rest[: len(PRESET_NAMES)], strict=True))
                    p = rest[len(PRESET_NAMES) :]
                    r = studio.synthesize(
                        text,
                        instruct,
                        sae,
                        presets,
                        list(zip(p[::2], p[1::2], strict=True)),
                        seed,
                        scope,
                        replace,
                        progress=lambda f, m: progress(f, desc=m),
                    )
                except Exception as e:
                    return fail(e, 6)
                d, s = r["default"], r["steered"]
                note = (
                    "no steering (all strengths 0)"
                    if not r["steer"]
                    else "steered: " + ", ".join(f"{k}={v:g}" for k, v in r["steer"].items())
                )
                return (
                    pcm(d.sample_rate, d.wave),
                    pcm(s.sample_rate, s.wave),
                    table(r["measures"], ["measure", "default", "steered"]),
                    table(r["edits"], EDIT_COLUMNS),
                    activation_figure(s) if has_sae else None,
                    f"{note} · seed {seed} · {s.seconds:.1f} s generation"
                    + ("" if s.stopped else " · cut at the length limit"),
                )

            go.click(
                on_synthesize,
                [text, instruct, seed, scope, replace, sae, *sliders, *picks],
                [audio_default, audio_steered, measures, edits, act_plot, synth_status],
                api_name="synthesize",
            )

            # ---- 2: feature browser --------------------------------------------------------------------
            with gr.Tab("Feature browser"):
                if not has_sae:
                    gr.Markdown("No SAE loaded: start the app with `--sae SAE_DIR` (labels from `ttslens label`).")
                with gr.Row(visible=has_sae):
                    sae_b = gr.Dropdown(sae_choices, value=first, label="SAE")
                    modality = gr.Radio(["all", "text", "speech", "mixed"], value="all", label="Modality")
                    query = gr.Textbox(
                        label="Search labels", placeholder="laughter, female, the word…", elem_id="query"
                    )
                    min_auroc = gr.Slider(0, 1, value=0, step=0.05, label="Minimum detection AUROC")
                rows0 = studio.browse(first) if has_sae else []
                results = gr.Dataframe(
                    table(rows0, browse_cols),
                    label=n_features(len(rows0)),
                    interactive=False,
                    visible=has_sae,
                    elem_id="results",
                    max_height=360,
                )
                with gr.Row(visible=has_sae):
                    feature = gr.Number(
                        None, label="Feature id (or click a row)", precision=0, minimum=0, elem_id="feature"
                    )
                    show = gr.Button("Show card")
                browse_status = gr.Markdown()
                card = gr.HTML()
                with gr.Row():
                    hist = gr.Plot(label="Histogram", visible=has_sae)
                    nearest = gr.Dataframe(
                        headers=["feature", "cosine", "label"],
                        label="Nearest features (decoder cosine)",
                        interactive=False,
                        visible=has_sae,
                    )
                with gr.Row():
                    clips = [gr.Audio(label=f"clip {i + 1}", **player, visible=False) for i in range(N_CLIPS)]

            def on_browse(sae, modality, query, min_auroc):
                try:
                    rows = studio.browse(sae, modality, query, min_auroc)
                except Exception as e:
                    return fail(e, 2)
                return gr.update(value=table(rows, browse_cols), label=n_features(len(rows))), ""

            def on_card(sae, feature):
                try:
                    c = studio.card(sae, feature)
                except Exception as e:
                    return fail(e, 4 + N_CLIPS)
                near = table(
                    [{"feature": f, "cosine": cos, "label": lab} for f, cos, lab in c["nearest"]],
                    ["feature", "cosine", "label"],
                )
                players = [
                    gr.update(
                        value=pcm(*a["audio"]),
                        visible=True,
                        label=f"clip · act {_fmt(a['activation'])} · t {_fmt(a['time'])} s",
                    )
                    for a in c["audio"]
                ]
                players += [gr.update(value=None, visible=False)] * (N_CLIPS - len(players))
                return (card_html(c), histogram_figure(c["histogram"]), near, *players, "")

            def on_select(sae, evt: gr.SelectData):
                try:
                    f = int(evt.row_value[0])
                except Exception as e:
                    return (gr.skip(), *fail(e, 4 + N_CLIPS))
                return (f, *on_card(sae, f))

            filters = [sae_b, modality, query, min_auroc]
            for comp in filters:
                comp.change(on_browse, filters, [results, browse_status], api_name="browse" if comp is query else False)
            card_outputs = [card, hist, nearest, *clips, browse_status]
            show.click(on_card, [sae_b, feature], card_outputs, api_name="card")
            feature.submit(on_card, [sae_b, feature], card_outputs, api_name=False)
            results.select(on_select, [sae_b], [feature, *card_outputs], api_name=False)

            # ---- 3: dose-response --------------------------------------------------------------------------
            with gr.Tab("Dose-response"):
                if not has_sae:
                    gr.Markdown("No SAE loaded: start the app with `--sae SAE_DIR`.")
                with gr.Row(visible=has_sae):
                    sae_d = gr.Dropdown(sae_choices, value=first, label="SAE")
                    attribute = gr.Dropdown(list(ATTRIBUTES), value="laughter", label="Measure")
                    target = gr.Dropdown(
                        [(f"preset: {p}", p) for p in PRESET_NAMES] + feature_choices,
                        value="laughter",
                        label="Steer",
                        allow_custom_value=True,
                        filterable=True,
                    )
                with gr.Row(visible=has_sae):
                    alphas = gr.Textbox(label="Strengths", value="−4,−2,0,2,4")
                    voices = gr.Number(label="Voices", value=2, precision=0, minimum=2, maximum=16)
                    texts = gr.Number(label="Texts", value=2, precision=0, minimum=1, maximum=20)
                    seed_d = gr.Number(label="Seed", value=0, precision=0, minimum=0)
                run = gr.Button("Run sweep", variant="primary", visible=has_sae)
                dose_status = gr.Markdown()
                with gr.Row():
                    dose_png = gr.Image(label="Dose-response", type="filepath", interactive=False, visible=has_sae)
                    dose_rows = gr.Dataframe(
                        headers=DOSE_COLUMNS, label="Per strength", interactive=False, visible=has_sae
                    )
                dose_csv = gr.File(label="CSV", interactive=False, visible=has_sae)

            def on_dose(sae, attribute, target, alphas, voices, texts, seed, progress=gr.Progress()):  # noqa: B008 (how gradio injects its bar)
                try:
                    r = studio.dose(
                        sae, attribute, target, alphas, voices, texts, seed, lambda f, m: progress(f, desc=m)
                    )
                except Exception as e:
                    return fail(e, 4)
                return (
                    r["png"],
                    table(r.get("rows") or [], DOSE_COLUMNS),
                    r.get("csv"),
                    f"written to `{html.escape(str(Path(r['png']).parent))}`",
                )

            run.click(
                on_dose,
                [sae_d, attribute, target, alphas, voices, texts, seed_d],
                [dose_png, dose_rows, dose_csv, dose_status],
                api_name="dose",
            )

            # ---- 4: text LLM -------------------------------------------------------------------------------
            with gr.Tab("Text LLM"):
                ready = studio.text is not None
                gr.Markdown(
                    f"Text LM `{cfg.text_model}`: SAE-feature steering of its generations."
                    if ready
                    else studio.text_note
                )
                text_choices = list(studio.text.choices()) if ready else []
                with gr.Column(visible=ready):
                    prompt = gr.Textbox(label="Prompt", value="Once upon a time", lines=2)
                    tpicks = []
                    for i in range(N_PICKS):
                        with gr.Row():
                            tpicks.append(
                                gr.Dropdown(
                                    text_choices,
                                    value=None,
                                    label=f"Feature {i + 1}",
                                    allow_custom_value=True,
                                    filterable=True,
                                    scale=3,
                                )
                            )
                            tpicks.append(gr.Slider(-SLIDER, SLIDER, value=0, step=0.5, label="strength", scale=2))
                    with gr.Row():
                        tseed = gr.Number(label="Seed", value=0, precision=0, minimum=0)
                        max_tokens = gr.Slider(1, 200, value=40, step=1, label="Max new tokens")
                    tgo = gr.Button("Generate", variant="primary")
                    text_status = gr.Markdown()
                    with gr.Row():
                        out_default = gr.Textbox(label="Default", lines=6, interactive=False)
                        out_steered = gr.Textbox(label="Steered", lines=6, interactive=False)

                def on_text(prompt, seed, max_tokens, *p):
                    try:
                        a, b = studio.text_compare(prompt, list(zip(p[::2], p[1::2], strict=True)), seed, max_tokens)
                    except Exception as e:
                        return fail(e, 3)
                    return a, b, ""

                tgo.click(
                    on_text,
                    [prompt, tseed, max_tokens, *tpicks],
                    [out_default, out_steered, text_status],
                    api_name="text",
                )

        def on_sae(layer):
            ok = studio.has_presets(layer)
            return (
                *[gr.update(interactive=ok)] * len(PRESET_NAMES),
                *[gr.update(choices=studio.feature_choices(layer), value=None)] * N_PICKS,
            )

        if len(sae_choices) > 1:
            sae.change(on_sae, [sae], [*sliders, *picks[::2]], api_name=False)
            sae_d.change(
                lambda layer: gr.update(
                    choices=[(f"preset: {p}", p) for p in PRESET_NAMES] + studio.feature_choices(layer)
                ),
                [sae_d],
                [target],
                api_name=False,
            )
    demo.queue(default_concurrency_limit=cfg.concurrency, max_size=cfg.queue_size)
    demo.studio = studio
    return demo


def run_app(cfg: AppConfig) -> dict:
    """Serve the app on cfg.host:cfg.port until interrupted (Ctrl-C)."""
    if cfg.concurrency < 1 or cfg.queue_size < 1:
        raise BadInput("--concurrency and --queue-size must be at least 1")
    studio = Studio(cfg)
    os.environ["GRADIO_TEMP_DIR"] = str(studio.work / "gradio")  # Gradio's file cache: under the work dir too
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    demo = build_app(cfg, studio)
    try:
        _app, url, share_url = demo.launch(
            server_name=cfg.host,
            server_port=cfg.port,
            share=cfg.share,
            prevent_thread_lock=True,
            quiet=True,
            ssr_mode=False,
            allowed_paths=[str(studio.work)],
            css=CSS,
        )
    except OSError as e:
        raise BadInput(f"cannot serve on {cfg.host}:{cfg.port} ({e}): pass another --port") from None
    print(f"ttslens app: {url}" + (f" (public: {share_url})" if share_url else ""), flush=True)
    print(f"ttslens app: work files in {studio.work}; Ctrl-C stops", flush=True)
    try:
        demo.block_thread()
    finally:
        demo.close()
    return {"url": url, "share_url": share_url, "work_dir": str(studio.work)}

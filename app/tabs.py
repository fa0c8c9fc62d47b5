"""The app's four tabs, one function each, built inside the page's `gr.Blocks` (app/web.py): each lays
out its components and wires them to a `Studio` method, showing any exception as a message in the tab.

Imported only when the page is built (it imports gradio). No `from __future__ import annotations`:
gradio reads the callbacks' annotations (gr.SelectData, gr.Progress) as objects.
"""

import html
from pathlib import Path

import gradio as gr
import numpy as np
import pandas as pd

from ttslens.app.render import activation_figure, card_html, fmt, histogram_figure, message, n_features
from ttslens.app.studio import N_CLIPS, PRESET_NAMES, Studio

PRESET_HELP = {"laughter": "+ laughter", "gender": "+ male / − female", "rate": "+ faster / − slower"}
SLIDER = 8.0  # slider range: strengths are multiples of the feature's mean activation
N_PICKS = 3  # extra feature pickers per tab
EDIT_COLUMNS = ["layer", "feature", "op", "alpha", "mean act", "source", "label"]
DOSE_COLUMNS = ["alpha", "mean", "ci_lo", "ci_hi", "content", "n"]
BROWSE_COLUMNS = ["feature", "modality", "label", "auroc", "fires", "freq", "max_act", "stability"]
NEAREST_COLUMNS = ["feature", "cosine", "label"]


# ---- shared by the tabs ------------------------------------------------------------------------------------
def table(rows: list[dict], columns: list[str]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=columns)


def pcm(sample_rate: int, wave):
    """(rate, int16 wave) for a browser player (plain <audio> elements, no waveform widget)."""
    return int(sample_rate), (np.clip(wave, -1, 1) * 32767).astype(np.int16)


def player(**kw) -> gr.Audio:
    return gr.Audio(
        type="numpy", interactive=False, waveform_options=gr.WaveformOptions(show_recording_waveform=False), **kw
    )


def fail(e: BaseException, n: int) -> tuple:
    """Leave the n-1 other outputs as they are; the last output (a Markdown) shows the error."""
    msg = message(e)
    gr.Warning(msg)
    return (*[gr.skip()] * (n - 1), f"**Error:** {html.escape(msg, quote=False)}")


def sae_menu(studio: Studio) -> tuple[list[tuple[str, str]], str | None]:
    """The SAE dropdown's choices and its first value (None without SAEs)."""
    choices = studio.sae_choices()
    return choices, choices[0][1] if choices else None


def clip_label(a: dict) -> str:
    return f"clip · act {fmt(a['activation'])} · t {fmt(a['time'])} s"


def feature_picker(choices, label: str, **kw) -> gr.Dropdown:
    return gr.Dropdown(choices, value=None, label=label, allow_custom_value=True, filterable=True, scale=3, **kw)


# ---- 1: synthesize & steer --------------------------------------------------------------------------------
def synthesize_tab(studio: Studio) -> None:
    from ttslens.audio.backbones.base import SCOPES

    has_sae = bool(studio.tts.saes)
    sae_choices, first = sae_menu(studio)
    with gr.Tab("Synthesize & steer"):
        with gr.Row():
            with gr.Column(scale=3):
                text = gr.Textbox(
                    label="Text", value="that is the funniest thing i have heard.", lines=2, elem_id="text"
                )
                instruct = gr.Textbox(label="Instruct (optional)", placeholder="a woman speaking quickly.")
                voice = gr.Dropdown(
                    ["", *studio.voice_names()],
                    value="",
                    label="Voice (a named voice prompt; empty: the seed's voice)",
                    elem_id="voice",
                )
            with gr.Column(scale=2):
                seed = gr.Number(label="Seed", value=0, precision=0, minimum=0)
                scope = gr.Dropdown(list(SCOPES), value="speech", label="Scope (positions steered)", visible=has_sae)
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
            choices = studio.feature_choices(first) if has_sae else []
            picks = []
            for i in range(N_PICKS):
                with gr.Row():
                    info = "type to search labels; or an id like 361, 361:clamp, 361:flow (with its flow graph)"
                    picks.append(feature_picker(choices, f"Feature {i + 1}", info=info))
                    picks.append(gr.Slider(-SLIDER, SLIDER, value=0, step=0.5, label="strength", scale=2))
        vectors = gr.Textbox(
            label="Trained steering vectors (optional)",
            placeholder="runs/vec_laugh=1.5, runs/vec_male=-1   (ttslens vectors train --backbone ...)",
            elem_id="vectors",
        )
        go = gr.Button("Synthesize", variant="primary", elem_id="synthesize")
        status = gr.Markdown()
        with gr.Row():
            audio_default = player(label="Default (unsteered)", elem_id="audio-default")
            audio_steered = player(label="Steered", elem_id="audio-steered")
        with gr.Row():
            measures = gr.Dataframe(headers=["measure", "default", "steered"], label="Measures", interactive=False)
            edits = gr.Dataframe(headers=EDIT_COLUMNS, label="Resolved edits", interactive=False, elem_id="edits")
        act_plot = gr.Plot(label="Steered features' activations", visible=has_sae)

    def on_synthesize(text, instruct, seed, scope, replace, sae, *rest, progress=gr.Progress()):  # noqa: B008 (how gradio injects its bar)
        try:
            *rest, voice, vecs = rest
            presets = dict(zip(PRESET_NAMES, rest[: len(PRESET_NAMES)], strict=True))
            p = rest[len(PRESET_NAMES) :]
            picked = list(zip(p[::2], p[1::2], strict=True))
            tick = lambda f, m: progress(f, desc=m)  # noqa: E731
            r = studio.synthesize(
                text, instruct, sae, presets, picked, seed, scope, replace, progress=tick, voice=voice, vectors=vecs
            )
        except Exception as e:
            return fail(e, 6)
        d, s = r["default"], r["steered"]
        steer = ", ".join(f"{k}={v:g}" for k, v in r["steer"].items())
        steer = ", ".join(x for x in (steer, str(vecs or "").strip()) if x)
        note = f"steered: {steer}" if steer else "no steering (all strengths 0)"
        cut = "" if s.stopped else " · cut at the length limit"
        return (
            pcm(d.sample_rate, d.wave),
            pcm(s.sample_rate, s.wave),
            table(r["measures"], ["measure", "default", "steered"]),
            table(r["edits"], EDIT_COLUMNS),
            activation_figure(s) if has_sae else None,
            f"{note} · {'voice ' + voice + ' · ' if voice else ''}seed {seed} · {s.seconds:.1f} s generation{cut}",
        )

    go.click(
        on_synthesize,
        [text, instruct, seed, scope, replace, sae, *sliders, *picks, voice, vectors],
        [audio_default, audio_steered, measures, edits, act_plot, status],
        api_name="synthesize",
    )

    def on_sae(layer):
        ok = studio.has_presets(layer)
        return (
            *[gr.update(interactive=ok)] * len(PRESET_NAMES),
            *[gr.update(choices=studio.feature_choices(layer), value=None)] * N_PICKS,
        )

    if len(sae_choices) > 1:
        sae.change(on_sae, [sae], [*sliders, *picks[::2]], api_name=False)


# ---- 2: feature browser -----------------------------------------------------------------------------------
def browser_tab(studio: Studio) -> None:
    has_sae = bool(studio.tts.saes)
    sae_choices, first = sae_menu(studio)
    with gr.Tab("Feature browser"):
        if not has_sae:
            gr.Markdown("No SAE loaded: start the app with `--sae SAE_DIR` (labels from `ttslens label`).")
        with gr.Row(visible=has_sae):
            sae = gr.Dropdown(sae_choices, value=first, label="SAE")
            modality = gr.Radio(["all", "text", "speech", "mixed"], value="all", label="Modality")
            query = gr.Textbox(label="Search labels", placeholder="laughter, female, the word…", elem_id="query")
            min_auroc = gr.Slider(0, 1, value=0, step=0.05, label="Minimum detection AUROC")
        rows0 = studio.browse(first) if has_sae else []
        results = gr.Dataframe(
            table(rows0, BROWSE_COLUMNS),
            label=n_features(len(rows0)),
            interactive=False,
            visible=has_sae,
            elem_id="results",
            max_height=360,
        )
        with gr.Row(visible=has_sae):
            feature = gr.Number(None, label="Feature id (or click a row)", precision=0, minimum=0, elem_id="feature")
            show = gr.Button("Show card")
        status = gr.Markdown()
        card = gr.HTML()
        with gr.Row():
            hist = gr.Plot(label="Histogram", visible=has_sae)
            nearest = gr.Dataframe(
                headers=NEAREST_COLUMNS, label="Nearest features (decoder cosine)", interactive=False, visible=has_sae
            )
        with gr.Row():
            clips = [player(label=f"clip {i + 1}", visible=False) for i in range(N_CLIPS)]
        flow = gr.HTML(elem_id="flow")

    def on_browse(sae, modality, query, min_auroc):
        try:
            rows = studio.browse(sae, modality, query, min_auroc)
        except Exception as e:
            return fail(e, 2)
        return gr.update(value=table(rows, BROWSE_COLUMNS), label=n_features(len(rows))), ""

    def on_card(sae, feature):
        try:
            c = studio.card(sae, feature)
        except Exception as e:
            return fail(e, 5 + N_CLIPS)
        near = table([dict(zip(NEAREST_COLUMNS, n, strict=True)) for n in c["nearest"]], NEAREST_COLUMNS)
        players = [gr.update(value=pcm(*a["audio"]), visible=True, label=clip_label(a)) for a in c["audio"]]
        players += [gr.update(value=None, visible=False)] * (N_CLIPS - len(players))
        return (card_html(c), histogram_figure(c["histogram"]), near, *players, flow_html(sae, feature), "")

    def flow_html(sae, feature) -> str:
        try:
            g = studio.flow(sae, feature)
        except Exception as e:  # the card still shows
            return f"<p>No flow graph: {html.escape(str(e))}</p>"
        notes = "".join(f"<p><i>{html.escape(n)}</i></p>" for n in g["notes"])
        return f"<h4>Feature flow across layers</h4>{notes}{g['svg']}"

    def on_select(sae, evt: gr.SelectData):
        try:
            f = int(evt.row_value[0])
        except Exception as e:
            return (gr.skip(), *fail(e, 5 + N_CLIPS))
        return (f, *on_card(sae, f))

    filters = [sae, modality, query, min_auroc]
    for comp in filters:
        comp.change(on_browse, filters, [results, status], api_name="browse" if comp is query else False)
    card_outputs = [card, hist, nearest, *clips, flow, status]
    show.click(on_card, [sae, feature], card_outputs, api_name="card")
    feature.submit(on_card, [sae, feature], card_outputs, api_name=False)
    results.select(on_select, [sae], [feature, *card_outputs], api_name=False)


# ---- 3: dose-response -------------------------------------------------------------------------------------
def dose_tab(studio: Studio) -> None:
    from ttslens.audio.steering.evaluate import ATTRIBUTES

    has_sae = bool(studio.tts.saes)
    sae_choices, first = sae_menu(studio)

    def targets(layer) -> list[tuple[str, str]]:
        return [(f"preset: {p}", p) for p in PRESET_NAMES] + (studio.feature_choices(layer) if has_sae else [])

    with gr.Tab("Dose-response"):
        if not has_sae:
            gr.Markdown("No SAE loaded: start the app with `--sae SAE_DIR`.")
        with gr.Row(visible=has_sae):
            sae = gr.Dropdown(sae_choices, value=first, label="SAE")
            attribute = gr.Dropdown(list(ATTRIBUTES), value="laughter", label="Measure")
            target = gr.Dropdown(
                targets(first), value="laughter", label="Steer", allow_custom_value=True, filterable=True
            )
        with gr.Row(visible=has_sae):
            alphas = gr.Textbox(label="Strengths", value="−4,−2,0,2,4")
            voices = gr.Number(label="Voices", value=2, precision=0, minimum=2, maximum=16)
            texts = gr.Number(label="Texts", value=2, precision=0, minimum=1, maximum=20)
            seed = gr.Number(label="Seed", value=0, precision=0, minimum=0)
        run = gr.Button("Run sweep", variant="primary", visible=has_sae)
        status = gr.Markdown()
        with gr.Row():
            png = gr.Image(label="Dose-response", type="filepath", interactive=False, visible=has_sae)
            rows = gr.Dataframe(headers=DOSE_COLUMNS, label="Per strength", interactive=False, visible=has_sae)
        csv = gr.File(label="CSV", interactive=False, visible=has_sae)

    def on_dose(sae, attribute, target, alphas, voices, texts, seed, progress=gr.Progress()):  # noqa: B008 (how gradio injects its bar)
        try:
            tick = lambda f, m: progress(f, desc=m)  # noqa: E731
            r = studio.dose(sae, attribute, target, alphas, voices, texts, seed, tick)
        except Exception as e:
            return fail(e, 4)
        where = f"written to `{html.escape(str(Path(r['png']).parent))}`"
        return r["png"], table(r.get("rows") or [], DOSE_COLUMNS), r.get("csv"), where

    run.click(on_dose, [sae, attribute, target, alphas, voices, texts, seed], [png, rows, csv, status], api_name="dose")
    if len(sae_choices) > 1:
        sae.change(lambda layer: gr.update(choices=targets(layer)), [sae], [target], api_name=False)


# ---- 4: text LLM ------------------------------------------------------------------------------------------
def text_tab(studio: Studio) -> None:
    ready = studio.text is not None
    with gr.Tab("Text LLM"):
        intro = f"Text LM `{studio.cfg.text_model}`: SAE-feature steering of its generations."
        gr.Markdown(intro if ready else studio.text_note)
        choices = list(studio.text.choices()) if ready else []
        with gr.Column(visible=ready):
            prompt = gr.Textbox(label="Prompt", value="Once upon a time", lines=2)
            picks = []
            for i in range(N_PICKS):
                with gr.Row():
                    picks.append(feature_picker(choices, f"Feature {i + 1}"))
                    picks.append(gr.Slider(-SLIDER, SLIDER, value=0, step=0.5, label="strength", scale=2))
            with gr.Row():
                seed = gr.Number(label="Seed", value=0, precision=0, minimum=0)
                max_tokens = gr.Slider(1, 200, value=40, step=1, label="Max new tokens")
            go = gr.Button("Generate", variant="primary")
            status = gr.Markdown()
            with gr.Row():
                out_default = gr.Textbox(label="Default", lines=6, interactive=False)
                out_steered = gr.Textbox(label="Steered", lines=6, interactive=False)

    def on_text(prompt, seed, max_tokens, *p):
        try:
            a, b = studio.text_compare(prompt, list(zip(p[::2], p[1::2], strict=True)), seed, max_tokens)
        except Exception as e:
            return fail(e, 3)
        return a, b, ""

    go.click(on_text, [prompt, seed, max_tokens, *picks], [out_default, out_steered, status], api_name="text")

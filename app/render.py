"""How the app shows things: numbers, feature cards (HTML), the activation histogram and the steered
features' activations (matplotlib figures), error messages. No gradio here."""

from __future__ import annotations

import html
import math
import traceback


def fmt(v, digits: int = 3) -> str:
    """A value for a table cell: floats to `digits` significant digits, None and nan as a dash."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    return f"{v:.{digits}g}" if isinstance(v, float) else str(v)


def n_features(n: int) -> str:
    return f"{n} feature" + ("" if n == 1 else "s")


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
        f"{fmt(c.get('speech_share'))} · labeler {e(str(c.get('labeler')))} · confident {e(str(c.get('confident')))}"
        f" · fires {fmt(c.get('fires'))} · freq {fmt(c.get('freq'))} · max act {fmt(c.get('max_act'))}"
        f" · mean act {fmt(c.get('mean_act'))}"
        + (f" · stability across seeds {fmt(c['stability'])}" if c.get("stability") is not None else "")
        + "</p>"
    )
    scores = "".join(f"<tr><td>{e(str(k))}</td><td>{e(fmt(v))}</td></tr>" for k, v in sc.items())
    rows = "".join(
        f"<tr><td>{e(fmt(w['activation']))}</td><td class='w'>{e(w['split'][0])}"
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


def message(e: BaseException) -> str:
    """One line for the page: the text of an error of the user's making; the type and text (and the
    traceback on stderr) of anything else."""
    if isinstance(e, ValueError | FileNotFoundError | KeyError):
        return str(e).strip("'\"")
    traceback.print_exc()
    return f"{type(e).__name__}: {e}"

"""Outputs of a labelling run: labels.jsonl, summary.json, report.html and a Neuronpedia-style export.

Neuronpedia export (OUT/neuronpedia/, the layout of Neuronpedia's public exports, gzipped JSON lines):
- `features/batch-0.jsonl.gz`: {modelId, layer, index, maxActApprox, frac_nonzero, ttslens: {modality, speech_share}}
- `activations/batch-0.jsonl.gz`: one per top example: {modelId, layer, index, tokens, values, maxValue,
  maxValueTokenIndex, minValue, ttslens: {item, pos, modality, time, clip}} — `tokens` is the text window
  (or the utterance text for a speech example) split into tokens, `values` the activation at the marked
  token and 0 elsewhere (the collection keeps peak values only);
- `explanations/batch-0.jsonl.gz`: {modelId, layer, index, description, explanationModelName, typeName,
  ttslens: {detection_auroc, modality}}.
`modelId` is the backbone name, `layer` the source id "<layer>-ttslens-<arch>-<latents>".
"""

from __future__ import annotations

import gzip
import html
import json
from pathlib import Path

from ttslens.sae.files import atomic_path, atomic_write_json


def write_outputs(job, records: list[dict], summary: dict) -> None:
    from ttslens.sae.stability import read_stability

    out: Path = job.out
    stability = read_stability(job.sae_dir)  # a `ttslens stability` run on this SAE: each record carries its own
    if stability is not None and len(stability) == job.sae.cfg.d_sae:
        records = [{**r, "stability": stability[int(r["feature"])]} for r in records]
    with atomic_path(out / "labels.jsonl") as tmp:
        tmp.write_text("".join(json.dumps(r) + "\n" for r in records))
    atomic_write_json(out / "summary.json", summary)
    write_report(out / "report.html", records, summary)
    c = job.sae.cfg
    source = f"{job.layer}-ttslens-{c.arch}-{c.d_sae}"
    write_neuronpedia(out / "neuronpedia", records, model_id=str(job.backbone_name), source=source)


def _gz_jsonl(path: Path, rows) -> None:
    with atomic_path(path) as tmp, gzip.open(tmp, "wt", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")


def _window_tokens(ex: dict) -> tuple[list[str], int]:
    """The example's window as tokens with the index of the marked one."""
    w = ex["window"]
    if "«" in w and "»" in w:
        a, rest = w.split("«", 1)
        mid, b = rest.split("»", 1)
        return [*a, mid, *b], len(a)
    return [w, ex["token"]], 1


def write_neuronpedia(root: Path, records: list[dict], model_id: str, source: str) -> None:
    base = {"modelId": model_id, "layer": source}
    feats, acts, expl = [], [], []
    for r in records:
        idx = str(r["feature"])
        feats.append(
            base
            | {
                "index": idx,
                "maxActApprox": r.get("max_act") or 0.0,
                "frac_nonzero": r.get("freq") or 0.0,
                "ttslens": {"modality": r["modality"], "speech_share": r.get("speech_share")},
            }
        )
        for ex in r.get("examples", []):
            toks, at = _window_tokens(ex)
            values = [0.0] * len(toks)
            values[at] = ex.get("act") or 0.0
            acts.append(
                base
                | {
                    "index": idx,
                    "tokens": toks,
                    "values": values,
                    "maxValue": values[at],
                    "maxValueTokenIndex": at,
                    "minValue": 0.0,
                    "ttslens": {k: ex.get(k) for k in ("item", "pos", "modality", "time", "clip")},
                }
            )
        if r.get("label"):
            expl.append(
                base
                | {
                    "index": idx,
                    "description": r["label"],
                    "explanationModelName": r["labeler"],
                    "typeName": f"ttslens-{r['labeler']}",
                    "ttslens": {
                        "detection_auroc": r.get("scores", {}).get("detection_auroc"),
                        "modality": r["modality"],
                    },
                }
            )
    _gz_jsonl(root / "features" / "batch-0.jsonl.gz", feats)
    _gz_jsonl(root / "activations" / "batch-0.jsonl.gz", acts)
    _gz_jsonl(root / "explanations" / "batch-0.jsonl.gz", expl)


CSS = """
body{font:14px system-ui,sans-serif;margin:24px;max-width:1200px}
table{border-collapse:collapse}td,th{padding:3px 8px;border-bottom:1px solid #ddd;text-align:left;vertical-align:top}
mark{background:#ffb347;padding:0 1px}.speech{color:#1565c0}.text{color:#2e7d32}.mixed{color:#8e24aa}.dead{color:#999}
.card{border:1px solid #ccc;border-radius:6px;padding:8px 12px;margin:10px 0}.w{font-family:monospace;white-space:pre}
audio{height:28px;vertical-align:middle}
"""


def _mark(window: str) -> str:
    e = html.escape(window)
    return e.replace("«", "<mark>").replace("»", "</mark>")


def write_report(path: Path, records: list[dict], summary: dict) -> None:
    """One self-contained HTML page: the per-modality AUROC table, then a card per feature."""
    rows = "".join(
        f"<tr><td>{m}</td><td>{v['features']}</td><td>{v['mean_auroc']}</td><td>{v['median_auroc']}</td></tr>"
        for m, v in summary["detection_auroc"].items()
    )
    cards = []
    for r in records:
        sc = r.get("scores", {})
        head = (
            f"<b>#{r['feature']}</b> <span class='{r['modality']}'>{r['modality']}</span> "
            f"(speech share {r.get('speech_share')}) — <b>{html.escape(str(r.get('label')))}</b> "
            f"· detection AUROC {sc.get('detection_auroc')} · fires {r.get('fires')}"
        )
        ex_rows = []
        for ex in r.get("examples", [])[:8]:
            audio = f"<audio controls preload='none' src='{html.escape(ex['clip'])}'></audio>" if ex.get("clip") else ""
            meas = ex.get("measures") or {}
            m = ", ".join(f"{k} {v}" for k, v in meas.items() if v is not None and k in ("laughter", "p_male", "f0_hz"))
            ex_rows.append(
                f"<tr><td>{ex.get('act')}</td><td class='w'>{_mark(ex['window'])}</td><td>{audio}</td>"
                f"<td>{html.escape(m)}</td></tr>"
            )
        fail = f"<p>failure: {html.escape(r['failure'])}</p>" if r.get("failure") else ""
        cards.append(f"<div class='card' id='f{r['feature']}'>{head}{fail}<table>{''.join(ex_rows)}</table></div>")
    notes = "".join(f"<li>{html.escape(n)}</li>" for n in summary.get("notes", []))
    page = (
        f"<!doctype html><html><head><meta charset='utf-8'><title>ttslens labels</title><style>{CSS}</style></head>"
        f"<body><h1>Feature labels</h1><p>SAE {html.escape(summary['sae'])} · backbone "
        f"{html.escape(str(summary['backbone']))} · layer {summary['layer']} · labeler {summary['labeler']}</p>"
        f"<ul>{notes}</ul><h2>Detection AUROC by modality</h2><table><tr><th>modality</th><th>features</th>"
        f"<th>mean</th><th>median</th></tr>{rows}</table><h2>Features</h2>{''.join(cards)}</body></html>"
    )
    with atomic_path(path) as tmp:
        tmp.write_text(page)

"""Feature flow (arXiv 2502.03032): where a residual-stream feature comes from, data-free.

For a feature f of the residual SAE at layer L (its unit decoder direction), its best match (top-1 cosine of
decoder directions; top-k kept for inspection) in three places: the residual SAE at L-1 (the feature carried
in), the SAE of layer L's MLP output and that of its attention output (the feature written there). Links
below the cut-offs are dropped (residual < 0.5, MLP / attention < 0.15, the paper's values); what is left
says the feature's origin: from the residual, MLP, attention, a combination, or from nowhere (born here).
Following the residual links back (and forward: the feature at L+1 whose best predecessor is f) chains a
graph over layers (`flow_graph`), written as JSON, PNG and an interactive HTML page (`write_graph`).

SAEs are found in one directory (`SAESet`): every SAE there, keyed by (hook, layer) from its metadata
(`ttslens train --hook resid|mlp|attn`). Missing MLP / attention SAEs leave the residual links only (noted).
"""

from __future__ import annotations

import html
import json
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import torch

from ttslens.sae.base import SAE
from ttslens.sae.errors import BadInput, MissingFile
from ttslens.sae.hooks import hook_of
from ttslens.sae.notes import note

KINDS = ("resid", "mlp", "attn")


class SAESet:
    """The SAEs of one model in a directory, by (hook, layer)."""

    def __init__(self, root: str | Path, device: str = "cpu") -> None:
        from ttslens.sae.files import load_sae, sae_info

        self.root = Path(root)
        if not self.root.is_dir():
            raise MissingFile(f"SAE directory {root} not found")
        self.saes: dict[tuple[str, int], SAE] = {}
        self.paths: dict[tuple[str, int], Path] = {}
        sources, widths = set(), set()
        for cfg in sorted(self.root.rglob("cfg.json")):
            info = sae_info(cfg.parent)
            if info.get("layer") is None:
                continue
            key = (hook_of(info.get("hook_name")), int(info["layer"]))
            if key in self.saes:
                raise BadInput(f"two {key[0]} SAEs for layer {key[1]} in {root}: {self.paths[key]} and {cfg.parent}")
            self.saes[key], self.paths[key] = load_sae(cfg.parent, device), cfg.parent
            sources.add(str(info.get("backbone") or info.get("model_name") or ""))
            widths.add(self.saes[key].cfg.d_in)
        seeds = [sae_info(p).get("train", {}).get("seed") for p in self.paths.values()]
        known = [x for x in seeds if x is not None]
        if len(set(known)) < len(known):
            note(
                f"some SAEs in {root} were trained with the same --seed: SAEs of one shape and seed start from the "
                "same decoder, so links may follow that initialisation; train each with its own --seed"
            )
        if not any(k == "resid" for k, _ in self.saes):
            raise MissingFile(f"no residual-stream SAE in {root}: train them with `ttslens train --hook resid`")
        if len(sources) > 1 or len(widths) > 1:
            raise BadInput(f"the SAEs in {root} come from different models ({sorted(sources)}): keep one model's")
        self._dirs: dict[tuple[str, int], torch.Tensor] = {}

    @classmethod
    def of(cls, saes: dict[tuple[str, int], SAE]) -> SAESet:
        """A set of SAEs already loaded, by (hook, layer)."""
        self = cls.__new__(cls)
        self.root, self.saes, self.paths, self._dirs = Path("<loaded>"), dict(saes), {}, {}
        return self

    def layers(self, kind: str = "resid") -> list[int]:
        return sorted(layer for k, layer in self.saes if k == kind)

    def directions(self, kind: str, layer: int) -> torch.Tensor | None:
        """Unit decoder directions [F, d] of that SAE, or None when there is none."""
        key = (kind, layer)
        if key not in self.saes:
            return None
        if key not in self._dirs:
            self._dirs[key] = torch.nn.functional.normalize(self.saes[key].W_dec.detach().float(), dim=1)
        return self._dirs[key]


@dataclass
class Cutoffs:
    resid: float = 0.5
    """A residual link (layer L-1 → L) needs at least this decoder cosine."""
    module: float = 0.15
    """An MLP / attention link needs at least this."""

    def __post_init__(self) -> None:
        for v in (self.resid, self.module):
            if not 0 <= v <= 1:
                raise BadInput(f"a flow cut-off must lie in [0, 1] (got {v})")


class Match(NamedTuple):
    kind: str
    layer: int
    features: list[int]  # top-k, best first
    cosines: list[float]


def chance_cosine(n_features: int, d: int) -> float:
    """The best |cosine| one direction has, by chance, with `n_features` random unit directions in d dimensions
    (≈ sqrt(2 ln F / d)): links below it say nothing."""
    import math

    return math.sqrt(2 * math.log(max(n_features, 2)) / max(d, 1))


def best_matches(ss: SAESet, layer: int, feature: int, top_k: int = 3) -> dict[str, Match]:
    """Top-k decoder-cosine matches of resid feature (layer, feature) in resid L-1, MLP L and attention L."""
    d = ss.directions("resid", layer)
    if d is None:
        raise BadInput(f"no residual SAE for layer {layer} in {ss.root} (it has layers {ss.layers()})")
    if not 0 <= feature < d.shape[0]:
        raise BadInput(f"feature {feature} out of range: the layer-{layer} SAE has {d.shape[0]} features")
    v = d[feature]
    out = {}
    for kind, at in (("resid", layer - 1), ("mlp", layer), ("attn", layer)):
        w = ss.directions(kind, at)
        if w is None:
            continue
        cos = w @ v
        top = cos.topk(min(top_k, len(cos)))
        out[kind] = Match(kind, at, top.indices.tolist(), [round(float(c), 4) for c in top.values])
    return out


def origin(matches: dict[str, Match], cut: Cutoffs) -> str:
    """from residual / MLP / attention, their combinations joined by '+', or 'nowhere'."""
    names = {"resid": "residual", "mlp": "MLP", "attn": "attention"}
    got = [
        names[k] for k in KINDS if k in matches and matches[k].cosines[0] >= (cut.resid if k == "resid" else cut.module)
    ]
    return "+".join(got) if got else "nowhere"


def flow_graph(ss: SAESet, layer: int, feature: int, depth: int = 3, cut: Cutoffs | None = None, top_k: int = 3):
    """Nodes and edges around resid feature (layer, feature): `depth` layers back along residual links (each
    node with its MLP / attention sources) and `depth` layers forward (features whose best residual predecessor
    is the node, above the cut-off)."""
    cut = cut or Cutoffs()
    missing = [k for k in ("mlp", "attn") if not ss.layers(k)]
    if missing:
        note(f"no {' or '.join(missing)} SAEs in {ss.root}: the flow follows residual links only")
    nodes: dict[str, dict] = {}
    edges: list[dict] = []

    def node(kind: str, at: int, f: int, **extra) -> str:
        key = f"{kind}/{at}/{f}"
        nodes.setdefault(key, {"id": key, "kind": kind, "layer": at, "feature": f}).update(extra)
        return key

    chance = {}
    for kind in KINDS:
        at = layer - 1 if kind == "resid" else layer
        if (kind, at) in ss.saes:
            w = ss.saes[(kind, at)].W_dec
            chance[kind] = round(chance_cosine(w.shape[0], w.shape[1]), 4)
            cutoff = cut.resid if kind == "resid" else cut.module
            if cutoff < chance[kind]:
                note(
                    f"the {kind} cut-off {cutoff} is below the chance level {chance[kind]:.2f} of {w.shape[0]} "
                    f"features in {w.shape[1]} dimensions: such links can be noise (raise the cut-off)"
                )
    frontier = [(layer, feature)]
    node("resid", layer, feature, root=True)
    for _ in range(depth):
        nxt = []
        for at, f in frontier:
            m = best_matches(ss, at, f, top_k)
            nodes[f"resid/{at}/{f}"]["origin"] = origin(m, cut)
            nodes[f"resid/{at}/{f}"]["matches"] = {k: v._asdict() for k, v in m.items()}
            for kind, mm in m.items():
                c, g = mm.cosines[0], mm.features[0]
                if c < (cut.resid if kind == "resid" else cut.module):
                    continue
                src = node(kind, mm.layer, g)
                edges.append({"from": src, "to": f"resid/{at}/{f}", "cosine": c, "kind": kind})
                if kind == "resid" and mm.layer >= min(ss.layers()):
                    nxt.append((mm.layer, g))
        frontier = [(a, f) for a, f in nxt if a in ss.layers()]
    # forward: the next layers' features whose best residual predecessor is on the chain
    at, f = layer, feature
    for _ in range(depth):
        d_next = ss.directions("resid", at + 1)
        if d_next is None:
            break
        cos = d_next @ ss.directions("resid", at)[f]
        g = int(cos.argmax())
        back = best_matches(ss, at + 1, g, 1)["resid"]
        if back.features[0] != f or back.cosines[0] < cut.resid:
            break
        edges.append(
            {"from": f"resid/{at}/{f}", "to": node("resid", at + 1, g), "cosine": back.cosines[0], "kind": "resid"}
        )
        at, f = at + 1, g
    return {"root": f"resid/{layer}/{feature}", "cutoffs": {"resid": cut.resid, "module": cut.module},
            "chance_cosine": chance, "nodes": list(nodes.values()), "edges": edges}  # fmt: skip


def parse_feature(spec: str) -> tuple[int, int]:
    """'L/ID' → (layer, feature id)."""
    try:
        a, b = spec.split("/")
        return int(a), int(b)
    except ValueError:
        raise BadInput(f"feature {spec!r} is not LAYER/ID (e.g. 3/361)") from None


# ---- drawing ------------------------------------------------------------------------------------
_LANE = {"attn": 0, "resid": 1, "mlp": 2}
_COLOUR = {"resid": "#3b6ea8", "mlp": "#c2662d", "attn": "#4b9a5a"}


def _positions(graph: dict) -> dict[str, tuple[float, float]]:
    pos = {}
    for n in graph["nodes"]:
        lane = _LANE[n["kind"]]
        x = n["layer"] + (0.0 if n["kind"] == "resid" else -0.35)
        pos[n["id"]] = (x, lane)
    return pos


def draw_png(graph: dict, path: Path, labels: dict[str, str] | None = None) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ttslens.sae.files import atomic_path

    pos, labels = _positions(graph), labels or {}
    fig, ax = plt.subplots(figsize=(2 + 1.6 * len({n["layer"] for n in graph["nodes"]}), 3.6))
    for e in graph["edges"]:
        (x0, y0), (x1, y1) = pos[e["from"]], pos[e["to"]]
        ax.annotate("", (x1, y1), (x0, y0), arrowprops={"arrowstyle": "->", "lw": 0.5 + 3 * e["cosine"]})
        ax.text((x0 + x1) / 2, (y0 + y1) / 2 + 0.08, f"{e['cosine']:.2f}", fontsize=7, ha="center")
    for n in graph["nodes"]:
        x, y = pos[n["id"]]
        ax.scatter([x], [y], s=420, c=_COLOUR[n["kind"]], edgecolors="k" if n.get("root") else "none", zorder=3)
        ax.text(x, y - 0.28, f"{n['kind']} {n['layer']}/{n['feature']}", fontsize=7, ha="center")
        if n["id"] in labels:
            ax.text(x, y + 0.22, labels[n["id"]][:28], fontsize=6, ha="center", color="#555")
    ax.set_yticks([0, 1, 2], ["attention", "residual", "MLP"])
    ax.set_xlabel("layer")
    ax.set_ylim(-0.6, 2.6)
    ax.set_title(f"feature flow of {graph['root']}")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)


def flow_svg(graph: dict, labels: dict[str, str] | None = None) -> str:
    """The graph as inline SVG with a legend: hover a node for its matches and label, an edge for its cosine
    (what the HTML page and the app's feature browser show)."""
    pos, labels = _positions(graph), labels or {}
    xs = [p[0] for p in pos.values()]
    lo = min(xs)

    def xy(k: str) -> tuple[float, float]:
        x, y = pos[k]
        return 60 + (x - lo) * 150, 40 + y * 110

    parts = []
    for e in graph["edges"]:
        (x0, y0), (x1, y1) = xy(e["from"]), xy(e["to"])
        title = html.escape(f"{e['from']} → {e['to']}: cosine {e['cosine']:.3f}")
        w = 1 + 4 * e["cosine"]
        parts.append(f'<line x1="{x0}" y1="{y0}" x2="{x1}" y2="{y1}" stroke="#888" stroke-width="{w:.1f}">'
                     f"<title>{title}</title></line>")  # fmt: skip
    for n in graph["nodes"]:
        x, y = xy(n["id"])
        info = {k: n[k] for k in ("origin", "matches") if k in n}
        title = html.escape(f"{n['id']} {labels.get(n['id'], '')}\n{json.dumps(info, indent=1)}")
        stroke = ' stroke="black" stroke-width="3"' if n.get("root") else ""
        parts.append(f'<circle cx="{x}" cy="{y}" r="16" fill="{_COLOUR[n["kind"]]}"{stroke}><title>{title}</title>'
                     f'</circle><text x="{x}" y="{y + 32}" font-size="11" text-anchor="middle">'
                     f"{html.escape(n['id'])}</text>")  # fmt: skip
    width = 120 + (max(xs) - lo) * 150
    return (f"<p>blue residual, orange MLP, green attention; hover for matches</p>"
            f"<svg width='{width}' height='300'>{''.join(parts)}</svg>")  # fmt: skip


def html_page(graph: dict, labels: dict[str, str] | None = None) -> str:
    """A self-contained page of the graph (`flow_svg`)."""
    root = html.escape(graph["root"])
    return (f"<!doctype html><meta charset='utf-8'><title>flow {root}</title><h3>feature flow of {root}</h3>"
            f"{flow_svg(graph, labels)}")  # fmt: skip


def write_graph(graph: dict, out: Path, labels: dict[str, str] | None = None) -> dict[str, str]:
    from ttslens.sae.files import atomic_path, atomic_write_json

    out.mkdir(parents=True, exist_ok=True)
    name = graph["root"].replace("/", "_")
    atomic_write_json(out / f"{name}.json", graph)
    draw_png(graph, out / f"{name}.png", labels)
    with atomic_path(out / f"{name}.html") as tmp:
        Path(tmp).write_text(html_page(graph, labels))
    return {k: str(out / f"{name}.{k}") for k in ("json", "png", "html")}


@dataclass
class FlowConfig:
    """Trace a residual-stream feature through the layers (feature flow): its best decoder matches in the
    previous layer's residual SAE and this layer's MLP / attention SAEs, chained into a graph. Writes
    OUT/<root>.json, .png and .html."""

    sae_dir: str = ""
    """Directory holding the SAEs (one per layer and hook: `ttslens train --hook resid|mlp|attn --out DIR/...`)."""
    feature: str = ""
    """The feature, as LAYER/ID (e.g. 3/361)."""
    depth: int = 3
    """Layers to follow back and forward."""
    top_k: int = 3
    """Matches kept per module (the graph uses the best)."""
    resid_cutoff: float = 0.5
    """Drop residual links below this decoder cosine."""
    module_cutoff: float = 0.15
    """Drop MLP / attention links below this."""
    out: str = "runs/flow_graphs"
    """Output directory (one JSON, PNG and HTML per traced feature)."""


def run_flow(cfg: FlowConfig) -> dict:
    from ttslens.sae.steering import read_labels

    if not cfg.sae_dir or not cfg.feature:
        raise BadInput("give --sae-dir DIR and --feature LAYER/ID")
    layer, feature = parse_feature(cfg.feature)
    ss = SAESet(cfg.sae_dir)
    graph = flow_graph(ss, layer, feature, cfg.depth, Cutoffs(cfg.resid_cutoff, cfg.module_cutoff), cfg.top_k)
    labels = {}
    for n in graph["nodes"]:
        rec = read_labels(ss.paths[(n["kind"], n["layer"])] / "labels" / "labels.jsonl").get(n["feature"])
        if rec:
            labels[n["id"]] = rec.get("label", "")
            n["label"] = labels[n["id"]]
    files = write_graph(graph, Path(cfg.out), labels)
    root = next(n for n in graph["nodes"] if n.get("root"))
    return {"root": graph["root"], "origin": root.get("origin"), "nodes": len(graph["nodes"]),
            "edges": len(graph["edges"]), **files}  # fmt: skip


# ---- steering along a graph -------------------------------------------------------------------------
SCHEDULES = ("exp", "linear", "constant")


def schedule(kind: str, strength: float, layers: list[int], root: int, alpha: float = -0.05) -> dict[int, float]:
    """Strength per layer of a flow graph: `constant` s everywhere; `exp` s·e^(α·|l − root|) (the paper's
    α = −0.05); `linear` from s at the root down to s/(n+1) at the farthest of n layers away."""
    if kind not in SCHEDULES:
        raise BadInput(f"unknown flow schedule {kind!r}: use one of {', '.join(SCHEDULES)}")
    far = max((abs(layer - root) for layer in layers), default=0)
    out = {}
    for layer in layers:
        dist = abs(layer - root)
        if kind == "constant":
            out[layer] = strength
        elif kind == "exp":
            out[layer] = strength * float(torch.exp(torch.tensor(alpha * dist, dtype=torch.float64)))
        else:
            out[layer] = strength * (1 - dist / (far + 1))
    return out


def flow_directions(graph: dict, ss: SAESet) -> dict[int, torch.Tensor]:
    """Layer → the unit direction of the graph's residual node(s) there (their mean, renormalised)."""
    by_layer: dict[int, list[torch.Tensor]] = {}
    for n in graph["nodes"]:
        if n["kind"] == "resid":
            by_layer.setdefault(n["layer"], []).append(ss.directions("resid", n["layer"])[n["feature"]])
    return {layer: torch.nn.functional.normalize(torch.stack(v).mean(0), dim=0) for layer, v in by_layer.items()}


def flow_edit_fns(graph: dict, ss: SAESet, strength: float, kind: str = "exp", mode: str = "steer", alpha=-0.05):
    """Layer → edit of that layer's rows, for the feature and its graph: `steer` adds s_l·v_l; `rescale`
    multiplies the component along v_l by s_l (`rescale` with s = 0 removes it). A zero steer is a no-op."""
    if mode not in ("steer", "rescale"):
        raise BadInput(f"unknown flow edit {mode!r}: use steer or rescale")
    dirs = flow_directions(graph, ss)
    root = int(graph["root"].split("/")[1])
    s = schedule(kind, strength, sorted(dirs), root, alpha)
    fns = {}
    for layer, v in dirs.items():
        if mode == "steer":

            def fn(h, v=v, a=s[layer]):
                return h if a == 0 else h + a * v.to(h.device, h.dtype)

        else:

            def fn(h, v=v, r=s[layer]):
                vv = v.to(h.device, h.dtype)
                return h + (r - 1) * (h @ vv)[:, None] * vv

        fns[layer] = fn
    return fns

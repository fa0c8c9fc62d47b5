"""Steering through an SAE: edits of one layer's residual stream h, model-agnostic.

Notation: N positions in scope, d model width, F latents, W_dec [F, d] (rows in raw activation units).
- `add` (the reference paper's edit): z' = z + alpha * Z (Z = the feature's mean activation when
  active), written back keeping the SAE's error, h' = h + (z' - z) W_dec, so only that latent's
  contribution moves;
- `clamp`: z'_f = alpha; `ablate`: z'_f = 0 (the error is kept the same way);
- `direction`: h' = h + alpha * u, u the decoder row in `raw` units, of `unit` length, or of unit
  length times the typical residual norm (`norm`);
- `replace=True` is the paper-exact variant: h' = W_dec z' + b_dec, the SAE's reconstruction of the
  edited code (the SAE's error is dropped even at alpha = 0).

`parse_steer` reads the strings the CLI, the app and the API share: `laughter=2`, `361=3`,
`361:clamp=5`, `361:ablate`, `361:direction=0.5`, `3/361=2` (layer 3's SAE), `female voice=-2`.
`STRENGTHS` says what the numbers mean, once, for the help texts, the app and the error messages.
Strengths beyond ±ALPHA_LIMIT are clipped with a `note` (one line; the CLI prints it, the edits
record both the strength used and the one `requested`).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import torch

from ttslens.sae.base import SAE
from ttslens.sae.errors import BadInput
from ttslens.sae.files import load_sae, sae_info
from ttslens.sae.hooks import hook_of
from ttslens.sae.notes import note  # noqa: F401  (re-exported: steering's notes are the one notes mechanism)

OPS = ("add", "clamp", "ablate", "direction", "flow")  # flow: the feature and its flow graph (ttslens.sae.flow)
PRESET_NAMES = ("laughter", "gender", "rate")  # the TTS steering presets (ttslens.audio.steering.presets)
UNITS = ("raw", "unit", "norm")
ALPHA_LIMIT = 1000.0  # |alpha| beyond this is clipped (with a note): the audio stays finite
STRENGTHS = (
    "strengths are multiples of the feature's mean activation Z̄; on the demo α ≈ 1–4 is already strong; "
    ":clamp takes the value itself"
)
"""What a steering strength ALPHA means: the one statement the CLI help, the app and errors reuse."""


# ---- notes: one-line notices to the user (not warnings: no source line) -------------------------
@dataclass(frozen=True)
class FeatureEdit:
    """One latent's edit. `alpha`: add → multiples of `mean_act`; clamp → the value; direction → in `units`."""

    feature: int
    op: str = "add"
    alpha: float = 0.0
    mean_act: float = 1.0
    units: str = "raw"

    def __post_init__(self) -> None:
        if self.op not in OPS:
            raise BadInput(f"unknown steering op {self.op!r}: use one of {', '.join(OPS)}")
        if self.units not in UNITS:
            raise BadInput(f"unknown direction units {self.units!r}: use one of {', '.join(UNITS)}")
        if not math.isfinite(self.alpha) or not math.isfinite(self.mean_act):
            raise BadInput(f"steering strength for feature {self.feature} must be a finite number (got {self.alpha})")


def clip_alpha(alpha: float, what: str = "steering strength") -> float:
    """`alpha` limited to ±ALPHA_LIMIT, with a `note` when it had to be clipped."""
    if abs(alpha) > ALPHA_LIMIT:
        clipped = math.copysign(ALPHA_LIMIT, alpha)
        note(f"{what} {alpha:g} clipped to {clipped:g} ({STRENGTHS})")
        return clipped
    return alpha


class LayerSteer:
    """All edits on one SAE's layer, as a callable h [N, d] → h' [N, d] (no autograd)."""

    def __init__(self, sae: SAE, edits: list[FeatureEdit], replace: bool = False, typical_norm: float | None = None):
        F = sae.cfg.d_sae
        for e in edits:
            if not 0 <= e.feature < F:
                raise BadInput(f"feature {e.feature} out of range: this SAE has features 0..{F - 1}")
        self.sae, self.replace = sae, replace
        self.edits = [
            FeatureEdit(e.feature, e.op, clip_alpha(e.alpha, f"feature {e.feature}'s strength"), e.mean_act, e.units)
            if e.op != "ablate"
            else e
            for e in edits
        ]
        self.typical_norm = typical_norm
        self.needs_code = replace or any(e.op in ("clamp", "ablate") for e in self.edits)
        self._shift_D: torch.Tensor | None = None

    def shift(self, like: torch.Tensor) -> torch.Tensor:
        """The position-independent part [d]: every `add` and `direction` edit summed."""
        if self._shift_D is None:
            W = self.sae.W_dec.detach()
            s = torch.zeros(W.shape[1], dtype=torch.float32, device=W.device)
            for e in self.edits:
                row = W[e.feature].float()
                if e.op == "add":
                    s = s + (e.alpha * e.mean_act) * row
                elif e.op == "direction":
                    if e.units != "raw":
                        row = row / row.norm().clamp_min(1e-12)
                    if e.units == "norm":
                        if self.typical_norm is None:
                            raise BadInput("direction units 'norm' need the typical residual norm of this layer")
                        row = row * self.typical_norm
                    s = s + e.alpha * row
            self._shift_D = s
        return self._shift_D.to(like.device, like.dtype)

    @torch.no_grad()
    def __call__(self, h_ND: torch.Tensor) -> torch.Tensor:
        if not self.needs_code:
            return h_ND + self.shift(h_ND)
        sae = self.sae
        z_NF = sae.encode(h_ND.float())
        dz_NF = torch.zeros_like(z_NF)
        for e in self.edits:
            if e.op == "clamp":
                dz_NF[:, e.feature] = e.alpha - z_NF[:, e.feature]
            elif e.op == "ablate":
                dz_NF[:, e.feature] = -z_NF[:, e.feature]
        if self.replace:
            out = sae.decode(z_NF + dz_NF) + self.shift(z_NF)
        else:
            f = sorted({e.feature for e in self.edits if e.op in ("clamp", "ablate")})
            out = h_ND.float() + dz_NF[:, f] @ sae.W_dec[f].float() + self.shift(z_NF)
        return out.to(h_ND.dtype)


# ---- the shared steering strings ----------------------------------------------------------------
class SteerRequest(NamedTuple):
    """A parsed `target[:op]=alpha`: target is a preset name, a feature id or a label search."""

    target: str
    op: str
    alpha: float
    layer: int | None  # "3/361": the SAE at layer 3; None: the first SAE that has the target

    @property
    def feature(self) -> int | None:
        return int(self.target) if self.target.isdigit() else None


_SPEC = re.compile(r"^\s*(?:(\d+)\s*/\s*)?([^=:]+?)\s*(?::\s*([a-z]+))?\s*(?:=\s*(.*?))?\s*$")
FORMS = "TARGET=ALPHA, TARGET:OP=ALPHA or N:ablate"


def _number(text: str | None) -> float | None:
    try:
        return float(text) if text is not None else None
    except ValueError:
        return None


def _flow_alias(spec: str) -> str:
    """'flow:3/361=2' → '3/361:flow=2' (the form the grammar reads)."""
    if m := re.match(r"^\s*flow\s*:\s*(\d+)\s*/\s*(\d+)\s*(=.*)?$", spec):
        return f"{m.group(1)}/{m.group(2)}:flow{m.group(3) or ''}"
    return spec


def is_steer_spec(text: str) -> bool:
    """Whether `text` has the form of an edit (TARGET=ALPHA, TARGET:op[=ALPHA] with a known op, N:ablate),
    right or wrong in its details: how the CLI tells an edit from the positional text after `--steer`."""
    m = _SPEC.match(_flow_alias(text))
    if not m or not m.group(2):
        return False
    _layer, _target, op, alpha = m.groups()
    if op is not None:
        return op in OPS and (alpha is None or _number(alpha) is not None)
    return alpha is not None and _number(alpha) is not None


def parse_steer(spec: str | tuple[object, float]) -> SteerRequest:
    """'laughter=2', '361=3', '361:clamp=5', '361:ablate', '3/361:direction=0.5', 'female voice=-2',
    '3/361:flow=2' (also written 'flow:3/361=2')."""
    if isinstance(spec, tuple):
        target, alpha = spec
        spec = f"{target}={alpha}" if alpha is not None else str(target)
    spec = _flow_alias(str(spec))
    m = _SPEC.match(str(spec))
    if not m or not m.group(2):
        raise BadInput(f"cannot read steering {spec!r}: write {FORMS}, e.g. laughter=2 or 361:clamp=5")
    layer, target, op, alpha = m.groups()
    if op is not None and op not in OPS:
        raise BadInput(f"unknown steering op {op!r} in {spec!r}: use one of {', '.join(OPS)}")
    if alpha is None and op in (None, "add", "clamp", "direction", "flow"):
        written = f"{layer + '/' if layer else ''}{target.strip()}{':' + op if op else ''}=ALPHA"
        raise BadInput(f"steering {spec!r} has no strength: write {written} ({STRENGTHS})")
    a = _number(alpha) if alpha is not None else 0.0
    if a is None:
        raise BadInput(f"steering strength in {spec!r} is not a number: write {FORMS} ({STRENGTHS})")
    if not math.isfinite(a):
        raise BadInput(f"steering strength in {spec!r} must be finite")
    return SteerRequest(target.strip().lower(), op or "add", a, int(layer) if layer else None)


def parse_steers(steer: Mapping | list | str | None) -> list[SteerRequest]:
    """A dict {target: alpha}, a list of strings, or one comma-separated string → requests."""
    if not steer:
        return []
    if isinstance(steer, str):
        steer = [s for s in steer.split(",") if s.strip()]
    if isinstance(steer, Mapping):
        return [parse_steer((k, v)) for k, v in steer.items()]
    return [parse_steer(s) for s in steer]


# ---- SAEs loaded for steering: the part shared by TTS and text models -------------------------------
class LoadedSAE(NamedTuple):
    path: Path
    sae: SAE
    layer: int
    info: dict  # the ttslens fields of its cfg.json


class ResolvedEdit(NamedTuple):
    layer: int
    edit: FeatureEdit  # its alpha: the strength used (clipped to ±ALPHA_LIMIT)
    source: str  # what the request named: "preset laughter", "feature 361", "label 'female voice'"
    label: str  # the feature's auto-interp label ("" when unlabelled)
    requested: float | None = None  # the strength asked for, when it was clipped (else None)


def load_steer_saes(dirs, width: int, n_layers: int, model: str, device: str = "cpu") -> list[LoadedSAE]:
    """SAE directories, each for the layer its cfg.json records, checked against the model (one line each)."""
    loaded = []
    for d in [dirs] if isinstance(dirs, str | Path) else list(dirs or []):
        d = Path(d)
        info = sae_info(d)
        if info.get("layer") is None:
            raise BadInput(f"SAE {d} records no layer (ttslens.layer in cfg.json): train it with `ttslens train`")
        if hook_of(info.get("hook_name")) != "resid":
            raise BadInput(f"SAE {d} reads {info.get('hook_name')}, not the residual stream: steer with residual SAEs")
        s, layer = load_sae(d, device), int(info["layer"])
        if s.cfg.d_in != width:
            raise BadInput(
                f"SAE {d} reads width {s.cfg.d_in} but {model} has width {width}: "
                "it was trained on another model; use an SAE trained on this one"
            )
        if not 0 <= layer < n_layers:
            raise BadInput(f"SAE {d} is for layer {layer} but {model} has layers 0..{n_layers - 1}")
        loaded.append(LoadedSAE(d, s, layer, info))
    layers = [s.layer for s in loaded]
    if len(set(layers)) != len(layers):
        raise BadInput(f"two SAEs for the same layer ({layers}): give at most one SAE per layer")
    return loaded


def read_labels(path: str | Path) -> dict[int, dict]:
    """feature → its record in a labels.jsonl (`ttslens label`), {} when the file is absent."""
    path = Path(path)
    recs = {}
    for n, line in enumerate(path.read_text().splitlines() if path.exists() else [], 1):
        if line.strip():
            try:
                r = json.loads(line)
                recs[int(r["feature"])] = r
            except (json.JSONDecodeError, KeyError, TypeError, ValueError):
                raise BadInput(f"{path}:{n}: not a labels record (re-run `ttslens label`)") from None
    return recs


def confident_label(rec: dict | None) -> str:
    label = (rec or {}).get("label", "")
    return "" if label.lower().startswith("unclear") else label


def clipped(edits: list[ResolvedEdit], r: SteerRequest) -> list[ResolvedEdit]:
    """The edits with strengths beyond ±ALPHA_LIMIT clipped (the asked-for one kept as `requested`);
    one note per request."""
    out = []
    for e in edits:
        a = e.edit.alpha
        if e.edit.op != "ablate" and abs(a) > ALPHA_LIMIT:
            edit = FeatureEdit(e.edit.feature, e.edit.op, math.copysign(ALPHA_LIMIT, a), e.edit.mean_act, e.edit.units)
            e = e._replace(edit=edit, requested=a)
        out.append(e)
    if any(e.requested is not None for e in out):
        used = math.copysign(ALPHA_LIMIT, r.alpha)
        note(f"steering {r.target}: strength {r.alpha:g} clipped to {used:g} ({STRENGTHS})")
    return out


class SAESteerer:
    """Resolution of steering requests against loaded SAEs; TTS and text steerers subclass it and
    supply `mean_act` (and may claim extra targets in `resolve_named`)."""

    saes: list[LoadedSAE]
    named: str = ""  # the targets a subclass knows by name, for error messages ("a preset (laughter, ...)")

    def labels(self, s: LoadedSAE) -> dict[int, dict]:
        cache = self.__dict__.setdefault("_labels", {})
        if s.layer not in cache:
            cache[s.layer] = read_labels(s.path / "labels" / "labels.jsonl")
        return cache[s.layer]

    def mean_act(self, s: LoadedSAE, f: int) -> float:
        raise NotImplementedError

    def typical_norm(self, s: LoadedSAE) -> float | None:
        """E‖h‖ at the SAE's layer: training scaled activations to norm √d by `activation_scale`."""
        scale = s.info.get("activation_scale")
        return float(s.sae.cfg.d_in**0.5 / scale) if scale else None

    def sae_at(self, layer: int | None) -> LoadedSAE:
        if not self.saes:
            raise BadInput("steering needs an SAE: load one (--sae DIR)")
        if layer is None:
            return self.saes[0]
        for s in self.saes:
            if s.layer == layer:
                return s
        raise BadInput(f"no SAE loaded for layer {layer}: loaded layers are {[s.layer for s in self.saes]}")

    def search(self, s: LoadedSAE, words: str) -> int | None:
        """The feature with the best detection AUROC whose (confident) label contains `words`."""
        hits = [r for r in self.labels(s).values() if words in confident_label(r).lower()]
        if not hits:
            return None
        best = max(hits, key=lambda r: ((r.get("scores") or {}).get("detection_auroc") or 0, -int(r["feature"])))
        return int(best["feature"])

    def label(self, s: LoadedSAE, f: int) -> str:
        return (self.labels(s).get(f) or {}).get("label", "")

    def resolve(self, steer) -> list[ResolvedEdit]:
        """Steering requests ({"361": 4, "361:clamp": 5}, ["female voice=-3"], "3/12=2") → edits."""
        out = []
        for r in parse_steers(steer):
            if r.op == "flow":
                out += clipped(self.resolve_flow(r), r)
                continue
            out += clipped(self.resolve_named(r) or [self.resolve_feature(r)], r)
        return out

    def resolve_flow(self, r: SteerRequest, depth: int = 8, kind: str = "exp") -> list[ResolvedEdit]:
        """`L/ID:flow=s`: the feature and its flow graph over the loaded residual SAEs (`ttslens.sae.flow`):
        every node pushed by its mean activation times s·e^(-0.05·|l - L|)."""
        from ttslens.sae.flow import SAESet, flow_graph, schedule

        if r.feature is None or r.layer is None:
            raise BadInput("flow steering names LAYER/ID:flow=S (e.g. 3/361:flow=2)")
        if len(self.saes) < 2:
            note("flow steering with one SAE loaded is single-layer steering: load the neighbouring layers' --sae")
        ss = SAESet.of({("resid", s.layer): s.sae for s in self.saes})
        graph = flow_graph(ss, r.layer, r.feature, depth)
        nodes = [n for n in graph["nodes"] if n["kind"] == "resid"]
        alphas = schedule(kind, r.alpha, sorted({n["layer"] for n in nodes}), r.layer)
        out = []
        for n in nodes:
            s, f = self.sae_at(n["layer"]), n["feature"]
            edit = FeatureEdit(f, "add", alphas[n["layer"]], self.mean_act(s, f))
            out.append(ResolvedEdit(s.layer, edit, f"flow of {r.layer}/{r.feature}", self.label(s, f)))
        return out

    def resolve_named(self, r: SteerRequest) -> list[ResolvedEdit] | None:
        """Targets a subclass knows by name (TTS presets); None: not one of them."""
        return None

    def resolve_feature(self, r: SteerRequest) -> ResolvedEdit:
        if r.feature is not None:
            s, f = self.sae_at(r.layer), r.feature
            if not 0 <= f < s.sae.cfg.d_sae:
                raise BadInput(f"feature {f} out of range: the SAE at layer {s.layer} has 0..{s.sae.cfg.d_sae - 1}")
            source = f"feature {f}"
        else:
            candidates = [self.sae_at(r.layer)] if r.layer is not None else self.saes
            found = [(s, f) for s in candidates if (f := self.search(s, r.target)) is not None]
            if not found:
                raise BadInput(self.unknown(r.target, candidates))
            s, f = found[0]
            source = f"label '{r.target}'"
        units = "norm" if self.typical_norm(s) else "unit"
        z = self.mean_act(s, f) if r.op == "add" else 1.0
        return ResolvedEdit(s.layer, FeatureEdit(f, r.op, r.alpha, z, units), source, self.label(s, f))

    def unknown(self, target: str, saes: list[LoadedSAE]) -> str:
        labelled = [str(s.path) for s in saes if self.labels(s)]
        where = f"the labels of {', '.join(labelled)}" if labelled else "no labels (run `ttslens label` on the SAE)"
        named = f"not {self.named}, " if self.named else ""
        return f"unknown steering target {target!r}: {named}not a feature id and not found in {where}"

    def steers(self, edits: list[ResolvedEdit], replace: bool = False) -> dict[int, LayerSteer]:
        """One LayerSteer per steered layer (all of that layer's edits together)."""
        out = {}
        for s in self.saes:
            mine = [e.edit for e in edits if e.layer == s.layer]
            if mine or (replace and edits):
                out[s.layer] = LayerSteer(s.sae, mine, replace, self.typical_norm(s))
        return out

    def choices(self) -> list[tuple[str, str]]:
        """(display, value) pairs for a picker: labelled features by AUROC, then the rest by id.
        The value is a steering target (`12`, or `3/12` with several SAEs), to be given a strength."""
        labelled, plain = [], []
        for s in self.saes:
            prefix = f"{s.layer}/" if len(self.saes) > 1 else ""
            recs = self.labels(s)
            for f in range(s.sae.cfg.d_sae):
                label = confident_label(recs.get(f))
                if label:
                    auroc = (recs[f].get("scores") or {}).get("detection_auroc")
                    shown = f"{prefix}{f} · {label}" + (f" (AUROC {auroc:.2f})" if auroc is not None else "")
                    labelled.append((-(auroc or 0.0), s.layer, f, (shown, f"{prefix}{f}")))
                else:
                    plain.append((f"{prefix}{f}", f"{prefix}{f}"))
        return [c for *_, c in sorted(labelled, key=lambda t: t[:3])] + plain

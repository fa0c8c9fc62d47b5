"""`ttslens vectors train | readout | apply` on a text causal LM (a TTS backbone: `ttslens.audio.vectors`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from ttslens.sae.errors import BadInput
from ttslens.sae.files import atomic_write_json
from ttslens.sae.vectors.readout import logit_lens, sae_view
from ttslens.sae.vectors.train import VectorConfig, load_prompts, train_vectors
from ttslens.sae.vectors.vectors import check_fits, load_vectors


@dataclass
class ReadoutConfig:
    """What trained steering vectors (or an SAE feature's direction) do, read off the model: the logit lens
    (final norm + unembedding; for a TTS backbone its speech head) of each layer's vector — top boosted and
    suppressed tokens — and, with --sae, the SAE features each vector is most aligned with, with their labels.
    Writes VECTORS/readout.json (or --out)."""

    vectors: str = ""
    """The vectors' directory (`ttslens vectors train --out`)."""
    model: str = ""
    """The text LM (default: the one the vectors were trained on)."""
    backbone: str = ""
    """Or the TTS backbone (default: the one the vectors were trained on)."""
    sae: list[str] = field(default_factory=list)
    """SAE directories for the SAE view (each used for the vector at its layer)."""
    feature: str = ""
    """Read an SAE feature's decoder direction instead of the vectors: ID (with one --sae) or LAYER/ID."""
    top: int = 10
    """Tokens and features listed per direction."""
    device: str = "cpu"
    """Device of the model."""
    out: str = ""
    """Output JSON (default VECTORS/readout.json)."""


@dataclass
class ApplyConfig:
    """Generate with trained steering vectors and without (same seed): a text LM's continuations of --prompt, or
    for a TTS backbone the speech of --prompt written to OUT (steered) and OUT's `.base.wav` twin, with what the
    audio measures hear in each."""

    vectors: str = ""
    """The vectors' directory."""
    prompt: list[str] = field(default_factory=list)
    """Prompts (text LM) or texts to speak (TTS backbone)."""
    strength: float = 1.0
    """Multiplier of every vector (0 = off; negative pushes the other way)."""
    scope: str = ""
    """Positions the vectors edit (default: the scope they were trained with)."""
    model: str = ""
    """The text LM (default: the vectors' own)."""
    backbone: str = ""
    """Or the TTS backbone (default: the vectors' own)."""
    seed: int = 0
    """Sampling seed (shared by the steered and the unsteered run)."""
    max_new_tokens: int = 40
    """Text LMs: the longest continuation."""
    temperature: float = 1.0
    """Sampling temperature."""
    device: str = "cpu"
    """Device of the model."""
    out: str = "runs/vectors_apply.wav"
    """TTS: the steered WAV (the unsteered one beside it, `.base.wav`)."""


@dataclass
class AnalyzeConfig:
    """What trained vectors do inside the model (`ttslens.sae.vectors.analysis`): path patching (direct, through later
    attention, through later MLPs) and, on a text LM, the attention-pattern change per head and the first generated
    token's shift; over completions sampled with the vectors from --prompts. Writes VECTORS/analysis.json (or
    --out)."""

    vectors: str = ""
    """The vectors' directory."""
    prompts: str = ""
    """Prompts (a .txt or .jsonl file, as for `vectors train`; default: the prompts they were trained on)."""
    model: str = ""
    """The text LM (default: the vectors' own)."""
    backbone: str = ""
    """Or the TTS backbone (default: the vectors' own); path patching only."""
    samples: int = 4
    """Completions sampled with the vectors per prompt."""
    max_prompts: int = 16
    """Prompts used (the first N)."""
    max_new_tokens: int = 24
    """The longest completion."""
    seed: int = 0
    """Sampling seed."""
    device: str = "cpu"
    """Device of the model."""
    out: str = ""
    """Output JSON (default VECTORS/analysis.json)."""


def run_analyze(cfg: AnalyzeConfig) -> dict:
    vec, meta = load_vectors(cfg.vectors)
    return analyze(cfg, text_policy(cfg.model or meta.get("model") or "", cfg.device))


def analyze(cfg: AnalyzeConfig, policy) -> dict:
    """Path patching on any policy; the attention change and the first-token shift on a text LM."""
    from ttslens.sae.vectors.analysis import attention_change, first_token, path_patching
    from ttslens.sae.vectors.lm import TextPolicy
    from ttslens.sae.vectors.train import load_prompts

    vec, meta = load_vectors(cfg.vectors)
    items = load_prompts(cfg.prompts or meta.get("data") or "")[: cfg.max_prompts]
    check_fits(vec, meta, policy.d, policy.n_layers, policy.name)
    scope = meta.get("scope") or policy.default_scope
    vec = vec.to(policy.device)
    text = isinstance(policy, TextPolicy)
    kw = {"max_new_tokens": cfg.max_new_tokens} if text else {}
    comps = []
    for j, it in enumerate(items):
        seeds = [cfg.seed + cfg.samples * j + i for i in range(cfg.samples)]
        comps += policy.sample(it, cfg.samples, seeds, policy.edits(vec, scope), **kw)
    out = {"vectors": cfg.vectors, "scope": scope, "completions": len(comps)}
    out["paths"] = path_patching(policy, vec, scope, comps)
    if text:
        out["attention_change"] = attention_change(policy, vec, scope, comps)
        out["first_token"] = first_token(policy, vec, scope, items)
    where = cfg.out or str(Path(cfg.vectors) / "analysis.json")
    atomic_write_json(where, out)
    return out | {"written": where}


def text_policy(model: str, device: str = "cpu"):
    from ttslens.sae.lm.harvest import load_model
    from ttslens.sae.vectors.lm import TextPolicy

    lm, tok = load_model(model, device)
    return TextPolicy(lm, tok, device)


def run_train(cfg: VectorConfig, make_policy=None, progress: bool = True) -> dict:
    """`ttslens vectors train` on a text LM, or on the policy `make_policy()` builds (a TTS backbone's)."""
    if make_policy is None and not cfg.model:
        raise BadInput("give the model to steer: --model HUB_ID_OR_DIR (or --backbone NAME for a TTS backbone)")
    items = load_prompts(cfg.prompts)  # bad prompts fail before the model loads
    policy = make_policy() if make_policy else text_policy(cfg.model, cfg.device)
    return train_vectors(cfg, policy, items, progress)


def parse_feature(spec: str) -> tuple[int | None, int]:
    layer, _, fid = spec.rpartition("/")
    try:
        return (int(layer) if layer else None), int(fid)
    except ValueError:
        raise BadInput(f"--feature {spec!r}: give ID or LAYER/ID (e.g. 3/361)") from None


def readout(cfg: ReadoutConfig, policy) -> dict:
    """The readout of the vectors (or of --feature) through `policy.lens()` and the SAEs of cfg.sae."""
    from ttslens.sae.files import load_sae, sae_info
    from ttslens.sae.steering import read_labels

    saes = {}
    for path in cfg.sae:
        info = sae_info(path)
        saes[int(info.get("layer") or 0)] = (load_sae(path), read_labels(Path(path) / "labels" / "labels.jsonl"))
    norm, head, names = policy.lens()
    out: dict = {"model": policy.name, "directions": {}}
    if cfg.feature:
        layer, f = parse_feature(cfg.feature)
        if not saes:
            raise BadInput("--feature reads an SAE's decoder row: give the SAE with --sae DIR")
        layer = layer if layer is not None else next(iter(saes))
        if layer not in saes:
            raise BadInput(f"no --sae for layer {layer}: the SAEs given read layers {sorted(saes)}")
        sae, labels = saes[layer]
        if not 0 <= f < sae.cfg.d_sae:
            raise BadInput(f"feature {f} out of range: the SAE at layer {layer} has 0..{sae.cfg.d_sae - 1}")
        directions = {f"{layer}/{f}": (layer, sae.W_dec[f].detach())}
        out["feature_label"] = (labels.get(f) or {}).get("label", "")
    else:
        if not cfg.vectors:
            raise BadInput("give the vectors: --vectors DIR (or an SAE feature: --sae DIR --feature ID)")
        vec, meta = load_vectors(cfg.vectors)
        check_fits(vec, meta, policy.d, policy.n_layers, policy.name)
        out |= {k: meta.get(k) for k in ("objective", "reward", "scope", "steps")}
        directions = {f"layer.{x}": (x, vec.vector(x).detach()) for x in vec.layers}
    for name, (layer, u) in directions.items():
        rec = {
            "layer": layer,
            "norm": round(float(u.norm()), 4),
            "logit_lens": logit_lens(u, norm, head, names, cfg.top),
        }
        if layer in saes:
            rec["sae"] = sae_view(u, saes[layer][0], saes[layer][1], cfg.top)
        out["directions"][name] = rec
    where = cfg.out or (str(Path(cfg.vectors) / "readout.json") if cfg.vectors else "")
    if where:
        atomic_write_json(where, out)
        out["written"] = where
    return out


def run_readout(cfg: ReadoutConfig) -> dict:
    model = cfg.model or (load_vectors(cfg.vectors)[1].get("model") if cfg.vectors else "")
    if not model:
        raise BadInput("give the model the vectors were trained on: --model HUB_ID_OR_DIR")
    return readout(cfg, text_policy(model, cfg.device))


def run_apply(cfg: ApplyConfig) -> dict:
    vec, meta = load_vectors(cfg.vectors)
    model = cfg.model or meta.get("model")
    if not model:
        raise BadInput("give the model: --model HUB_ID_OR_DIR")
    if not cfg.prompt:
        raise BadInput("give a prompt: --prompt TEXT")
    policy = text_policy(model, cfg.device)
    check_fits(vec, meta, policy.d, policy.n_layers, policy.name)
    scope = cfg.scope or meta.get("scope") or policy.default_scope
    vec = vec.to(policy.device)
    rows = []
    for p in cfg.prompt:
        kw = {"max_new_tokens": cfg.max_new_tokens, "temperature": cfg.temperature}
        base = policy.sample(p, 1, [cfg.seed], [], **kw)[0]
        with torch.no_grad():
            steered = policy.sample(p, 1, [cfg.seed], policy.edits(vec, scope, cfg.strength), **kw)[0]
        rows.append({"prompt": p, "base": base.text, "steered": steered.text})
    return {"vectors": cfg.vectors, "strength": cfg.strength, "scope": scope, "outputs": rows}

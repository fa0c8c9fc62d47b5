"""What a trained vector does inside a model, the analyses of arXiv 2509.06608 (`ttslens vectors analyze`).

- **Path patching.** The vector v sits in the residual stream after layer L; everything after reads it. Each path
  gets v on its own, the residual left clean: `direct` (v added only where the final norm reads the residual), `attn`
  (v added only to what the attention blocks of layers > L read: their input norms), `mlp` (v added only to what
  the MLPs of layers > L read). Each is scored by the change in mean log-probability per token of completions
  sampled with the vector, against the model without it, beside the `total` (the vector as trained); the paths'
  shares are these changes over the total's (they need not sum to 1: the paths interact). Text LMs and TTS
  backbones (speech frames' log-probabilities); the two analyses below read text LMs.
- **Attention-pattern change**: per later layer and head, the mean total-variation distance between the attention
  distributions with and without the vector, over the same completions.
- **First generated token**: the next-token distribution at the end of each prompt, with and without the vector:
  KL(steered ‖ base) and the tokens whose probability moves most.
"""

from __future__ import annotations

import torch
from torch import nn

from ttslens.sae.errors import BadInput
from ttslens.sae.hooks import Edit, Hooks

READERS = {"attn": ("input_layernorm", "ln_1"), "mlp": ("post_attention_layernorm", "ln_2")}


def readers(layers: nn.ModuleList, path: str) -> nn.ModuleList:
    """Each layer's norm in front of its attention (`attn`) or MLP (`mlp`) block (Llama / Qwen2 / GPT-2 names)."""
    for name in READERS[path]:
        if all(isinstance(getattr(m, name, None), nn.Module) for m in layers):
            return nn.ModuleList(getattr(m, name) for m in layers)
    raise BadInput(f"the decoder layers ({type(layers[0]).__name__}) have no pre-{path} norm: path patching needs one")


def _mean_delta(lp, base, mask) -> float:
    return float(((lp - base) * mask).sum() / mask.sum().clamp_min(1))


@torch.no_grad()
def path_patching(policy, vec, scope: str, comps) -> dict:
    """Δ mean log p per token of `comps` for the vector as trained and for each path alone (see the module doc)."""
    base, mask = policy.token_logprobs(comps, [])
    total = _mean_delta(policy.token_logprobs(comps, policy.edits(vec, scope))[0], base, mask)
    where = policy.where(scope)
    layers, n = policy.layers(), policy.n_layers
    out = {"total": total, "layers": {}}
    for L in vec.layers:
        add = lambda rows, L=L: vec.add(L, rows)  # noqa: E731
        engines = {}
        norm = policy.lens()[0]
        if norm is not None:
            engines["direct"] = Hooks(nn.ModuleList([norm]), [Edit(0, add, where)], inputs=True)
        for path in ("attn", "mlp"):
            later = [Edit(i, add, where) for i in range(L + 1, n)]
            if later:
                engines[path] = Hooks(readers(layers, path), later, inputs=True)
        rec = {}
        for name, eng in engines.items():
            lp, _ = policy.token_logprobs(comps, [], also=[eng])
            rec[name] = _mean_delta(lp, base, mask)
        alone = policy.token_logprobs(comps, [e for e in policy.edits(vec, scope) if e.layer == L])[0]
        rec["vector_alone"] = _mean_delta(alone, base, mask)
        rec["shares"] = {
            k: (v / rec["vector_alone"] if rec["vector_alone"] else None) for k, v in rec.items() if k != "vector_alone"
        }
        out["layers"][L] = rec
    return out


@torch.no_grad()
def attention_change(policy, vec, scope: str, comps) -> dict:
    """Mean total-variation distance of each later layer's heads' attention, with vs without the vector."""
    model = policy.model
    impl = model.config._attn_implementation
    model.set_attn_implementation("eager")
    try:
        seqs = [torch.cat([c.prompt_ids, c.ids]) for c in comps]
        L = max(len(s) for s in seqs)
        ids = torch.full((len(seqs), L), policy.pad, dtype=torch.long)
        attn = torch.zeros((len(seqs), L), dtype=torch.long)
        for b, s in enumerate(seqs):
            ids[b, : len(s)], attn[b, : len(s)] = s, 1
        gen = torch.arange(L)[None] >= torch.tensor([len(c.prompt_ids) for c in comps])[:, None]

        def run(edits):
            with Hooks(policy.layers(), edits=edits) as hooks:
                hooks.context = gen
                return model(input_ids=ids.to(policy.device), attention_mask=attn.to(policy.device),
                             output_attentions=True).attentions  # fmt: skip

        a0, a1 = run([]), run(policy.edits(vec, scope))
    finally:
        model.set_attn_implementation(impl)
    valid = attn.bool().to(a0[0].device)  # [B, T] query rows that are real tokens
    out = {}
    for i in range(min(vec.layers) + 1, len(a0)):
        tv = 0.5 * (a1[i] - a0[i]).abs().sum(-1)  # [B, H, T]
        per_head = (tv * valid[:, None]).sum((0, 2)) / valid.sum().clamp_min(1)
        out[i] = [round(float(x), 5) for x in per_head]
    return out


@torch.no_grad()
def first_token(policy, vec, scope: str, prompts, k: int = 5) -> dict:
    """KL(steered ‖ base) of the first generated token's distribution, and the tokens it moves most."""
    kls, diff = [], None
    for p in prompts:
        ids = policy.encode(getattr(p, "prompt", p))[None].to(policy.device)
        dists = []
        for edits in ([], policy.edits(vec, scope)):
            with Hooks(policy.layers(), edits=edits) as hooks:
                hooks.context = torch.zeros(ids.shape, dtype=torch.bool)
                dists.append(policy.model(input_ids=ids).logits[0, -1].float().softmax(-1))
        p0, p1 = dists
        kls.append(float((p1 * (p1.clamp_min(1e-12).log() - p0.clamp_min(1e-12).log())).sum()))
        diff = (p1 - p0) if diff is None else diff + (p1 - p0)
    diff = diff / len(prompts)
    names = policy.lens()[2]
    up, down = diff.topk(k), (-diff).topk(k)

    def rows(t, sign):
        return [
            {"token": n, "dp": round(sign * float(v), 4)}
            for n, v in zip(names(t.indices.tolist()), t.values, strict=True)
        ]

    return {"kl": sum(kls) / len(kls), "gained": rows(up, 1), "lost": rows(down, -1), "prompts": len(prompts)}

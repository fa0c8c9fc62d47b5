"""The one hook engine: scoped edits and recording on the residual stream of any module list.

Every place that touches a residual stream goes through `Hooks`: TTS backbones (teacher forcing,
cached generation, steering), Hugging Face causal LMs (harvesting, text steering), CE splicing.

    with Hooks(layers, edits=[Edit(2, fn, scope)], record=[2]) as hooks:
        hooks.context = ctx            # before each forward call: what the call's positions are
        model(...)
    hooks.hidden()[2]                  # [B, T, d] recorded over every call, in order

- An edit maps the rows it selects, h [n, d], to their replacement [n, d]. Which rows: `edit.mask(ctx)`
  returns a [B, T] bool mask for the call's positions (None: all of them). `ctx` is whatever the caller
  set (for a TTS backbone: modality, prompt flags and times of the positions the call covers), so the
  same hooks serve a teacher-forced pass, a prefill and each cached step.
- Hooks are per thread/task, not per module: each module carries one permanent dispatcher that applies
  only the engines active in the *current* context (a `ContextVar`), so concurrent callers of one model
  never see each other's edits.
- `stop_after=L` ends the forward pass right after layer L is recorded (`StopForward`): harvesting
  pays only for the layers it needs.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from torch import nn

from ttslens.sae.errors import BadInput

_ACTIVE: ContextVar[tuple[Hooks, ...]] = ContextVar("ttslens_hooks", default=())
_DISPATCH_ATTR = "_ttslens_dispatch"


class StopForward(Exception):
    """Raised by a hook to end a forward pass early (caught by `Hooks.run`)."""


class EditLike(Protocol):
    layer: int

    def __call__(self, rows_ND: torch.Tensor) -> torch.Tensor: ...

    def mask(self, ctx: Any) -> torch.Tensor | None: ...


@dataclass
class Edit:
    """A plain edit: `fn` on the rows of `layer`'s output that `where(ctx)` selects (all if None)."""

    layer: int
    fn: Callable[[torch.Tensor], torch.Tensor]
    where: Callable[[Any], torch.Tensor | None] | None = None

    def __call__(self, rows_ND: torch.Tensor) -> torch.Tensor:
        return self.fn(rows_ND)

    def mask(self, ctx: Any) -> torch.Tensor | None:
        return None if self.where is None else self.where(ctx)


def check_layer(layer: int, n_layers: int) -> None:
    if not 0 <= layer < n_layers:
        raise BadInput(f"layer {layer} out of range: the model has {n_layers} layers (0..{n_layers - 1})")


HOOKS = ("resid", "mlp", "attn")  # the residual stream after a layer, a layer's MLP output, its attention output
_SUBMODULE = {"mlp": ("mlp",), "attn": ("self_attn", "attn", "attention")}


def hook_name(layer: int, hook: str = "resid") -> str:
    """The one `hook_name` convention: `layers.L` (the residual stream after decoder layer L), `layers.L.mlp`,
    `layers.L.attn` (that layer's MLP / attention output, before it is added to the residual)."""
    check_hook(hook)
    return f"layers.{layer}" if hook == "resid" else f"layers.{layer}.{hook}"


def hook_of(name: str | None) -> str:
    """The hook kind of a `hook_name` (resid when absent)."""
    tail = (name or "").rsplit(".", 1)[-1]
    return tail if tail in HOOKS else "resid"


def check_hook(hook: str) -> None:
    if hook not in HOOKS:
        raise BadInput(f"unknown --hook {hook!r}: use one of {', '.join(HOOKS)}")


def hook_modules(layers: nn.ModuleList, hook: str = "resid") -> nn.ModuleList:
    """The modules whose outputs `hook` reads, one per layer: the layers themselves, or each layer's MLP /
    attention block (Llama, Qwen2, CSM: `.mlp`, `.self_attn`; GPT-2: `.mlp`, `.attn`)."""
    check_hook(hook)
    if hook == "resid":
        return layers
    for attr in _SUBMODULE[hook]:
        if all(isinstance(getattr(m, attr, None), nn.Module) for m in layers):
            return nn.ModuleList(getattr(m, attr) for m in layers)
    raise BadInput(f"the decoder layers ({type(layers[0]).__name__}) have no {hook} block to hook: use --hook resid")


def residual_layers(model: nn.Module) -> nn.ModuleList:
    """The decoder-layer list of a transformers causal LM (Llama, Qwen2, GPT-2, GPT-NeoX, ...)."""
    cfg = getattr(model, "config", None)
    n = getattr(cfg, "num_hidden_layers", None) or getattr(cfg, "n_layer", None)
    best = None
    for name, mod in model.named_modules():
        if isinstance(mod, nn.ModuleList) and len(mod) == n and name.split(".")[-1] in ("layers", "h", "blocks"):
            if best is None or len(name) < len(best[0]):
                best = (name, mod)
    if best is None:
        raise BadInput(f"cannot find the decoder layers of {type(model).__name__}")
    return best[1]


def _dispatch(module: nn.Module, _inputs, output):
    engines = _ACTIVE.get()
    if not engines:
        return None
    out = output
    for eng in engines:
        layer = eng.index.get(id(module))
        if layer is not None:
            out = eng.apply(layer, out)
    return None if out is output else out


def _dispatch_input(module: nn.Module, args):
    """The same engines on a module's first positional input (engines built with `inputs=True`)."""
    engines = _ACTIVE.get()
    if not engines or not args:
        return None
    first = args[0]
    for eng in engines:
        layer = eng.index_in.get(id(module))
        if layer is not None:
            first = eng.apply(layer, first)
    return None if first is args[0] else (first, *args[1:])


def _ensure_dispatch(module: nn.Module, inputs: bool = False) -> None:
    attr = _DISPATCH_ATTR + ("_in" if inputs else "")
    if getattr(module, attr, None) is None:
        hook = module.register_forward_pre_hook(_dispatch_input) if inputs else module.register_forward_hook(_dispatch)
        setattr(module, attr, hook)


class Hooks:
    """Edits and recording on `layers` (a module list: the output of layers[i] is the residual after i). With
    `inputs=True` they act on each module's first input instead (e.g. what a layer norm reads: path patching)."""

    def __init__(
        self,
        layers: nn.ModuleList | Sequence[nn.Module],
        edits: Sequence[EditLike] = (),
        record: Sequence[int] = (),
        stop_after: int | None = None,
        detach: bool = True,
        inputs: bool = False,
    ) -> None:
        n = len(layers)
        self.edits, self.record, self.stop_after, self.detach = list(edits), sorted(set(record)), stop_after, detach
        for e in self.edits:
            check_layer(e.layer, n)
        for i in self.record:
            check_layer(i, n)
        if stop_after is not None:
            check_layer(stop_after, n)
        used = {e.layer for e in self.edits} | set(self.record) | ({stop_after} if stop_after is not None else set())
        self.by_layer = {i: [e for e in self.edits if e.layer == i] for i in used}
        self.index, self.index_in = (
            ({}, {id(layers[i]): i for i in used}) if inputs else ({id(layers[i]): i for i in used}, {})
        )
        for i in used:
            _ensure_dispatch(layers[i], inputs)
        self.context: Any = None
        self.recorded: dict[int, list[torch.Tensor]] = {i: [] for i in self.record}
        self._token = None

    # ---- the hook -----------------------------------------------------------------------------
    def apply(self, layer: int, out):
        h_BTD = out[0] if isinstance(out, tuple) else out
        edits = self.by_layer[layer]
        changed = False
        for e in edits:
            m_BT = e.mask(self.context)
            if m_BT is not None and m_BT.shape != h_BTD.shape[:2]:
                raise BadInput(f"edit mask of shape {tuple(m_BT.shape)} for activations {tuple(h_BTD.shape[:2])}")
            if m_BT is None or bool(m_BT.all()):  # every position (e.g. a cached step): no indexing, no copy
                h_BTD = e(h_BTD.reshape(-1, h_BTD.shape[-1])).reshape(h_BTD.shape).to(h_BTD.dtype)
                changed = True
            elif bool(m_BT.any()):  # masks are built on the CPU: checking them never syncs a GPU
                if not changed:
                    h_BTD = h_BTD.clone()
                m_BT = m_BT.to(h_BTD.device)
                h_BTD[m_BT] = e(h_BTD[m_BT]).to(h_BTD.dtype)
                changed = True
        if layer in self.recorded:
            self.recorded[layer].append(h_BTD.detach() if self.detach else h_BTD)
        if layer == self.stop_after:
            raise StopForward
        if not changed:
            return out
        return (h_BTD, *out[1:]) if isinstance(out, tuple) else h_BTD

    # ---- use ------------------------------------------------------------------------------------
    def __enter__(self) -> Hooks:
        self._token = _ACTIVE.set((*_ACTIVE.get(), self))
        return self

    def __exit__(self, *exc) -> None:
        _ACTIVE.reset(self._token)
        self._token = None

    def run(self, fn: Callable[[], Any]) -> Any:
        """fn() under these hooks; None if `stop_after` ended it early."""
        with self:
            try:
                return fn()
            except StopForward:
                return None

    def hidden(self) -> dict[int, torch.Tensor]:
        """Recorded layers → [B, T, d], the calls' outputs concatenated along T."""
        return {i: torch.cat(v, dim=1) for i, v in self.recorded.items() if v}


@torch.no_grad()
def layer_output(model: nn.Module, layer: int, hook: str = "resid", **inputs) -> torch.Tensor:
    """Residual stream after decoder layer `layer` of a causal LM ([B, T, d]), or that layer's MLP / attention
    output (`hook`); stops the forward there."""
    hooks = Hooks(hook_modules(residual_layers(model), hook), record=[layer], stop_after=layer)
    hooks.run(lambda: model(**inputs))
    return hooks.hidden()[layer]


def splice_edit(layer: int, fn: Callable[[torch.Tensor], torch.Tensor]) -> Edit:
    """An edit of every position of `layer` (CE splicing: an SAE's reconstruction, or zeros)."""
    return Edit(layer, fn)

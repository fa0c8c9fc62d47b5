"""The one seam between ttslens and a TTS language model.

A backbone is a decoder transformer whose sequence interleaves text and speech tokens. Everything
model-specific lives in a subclass of `TTSBackbone`, which supplies five small pieces:

- `sequence(text, instruct, prompt)`: the interleaved prefix, with a modality and a time per position;
- `embed(ids, modality)`: input embeddings for positions of that sequence;
- `forward_embeds(embeds, cache)`: the transformer (last hidden state, new KV cache);
- `speech_logits(hidden)`: logits over the speech vocabulary plus one final "stop" column;
- `decode(tokens)`: speech tokens → waveform.

On top of these the base class gives every backbone the same teacher-forced pass (for harvesting),
seeded autoregressive generation under a KV cache, and interventions: edits applied by forward hooks
on the residual-stream modules, only at the positions their scope names (generated speech by default),
so a steering vector never touches the text prefix or a voice prompt.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch
from torch import nn

from ttslens.sae.activations import SPEECH, TEXT
from ttslens.sae.errors import BadInput

SCOPES = ("speech", "text", "all", "generated")


class TTSSequence(NamedTuple):
    """An interleaved sequence, one entry per position."""

    ids: torch.Tensor  # [N] long, in the backbone's own id space
    modality: torch.Tensor  # [N] int8: 0 text, 1 speech, 2 special
    times: torch.Tensor  # [N] float32: start time (s) of each speech position, nan elsewhere
    prompt: torch.Tensor  # [N] bool: positions that come from a voice prompt (speech or its text)

    def __len__(self) -> int:
        return self.ids.shape[0]


@dataclass
class Intervention:
    """Edit the residual stream after decoder layer `layer` at the positions in scope.

    `edit` maps the rows in scope, h [n, d], to their replacement [n, d]. Scopes: "speech", the speech
    positions (a voice prompt's speech only with `include_prompt`); "text", the text prefix; "all";
    "generated", only the speech the model produces (generated, or appended when teacher-forced),
    never a prompt.
    """

    layer: int
    edit: Callable[[torch.Tensor], torch.Tensor]
    scope: str = "speech"
    include_prompt: bool = False

    def __post_init__(self) -> None:
        if self.scope not in SCOPES:
            raise BadInput(f"unknown intervention scope {self.scope!r}: use one of {', '.join(SCOPES)}")

    def mask(self, modality: torch.Tensor, prompt: torch.Tensor) -> torch.Tensor:
        if self.scope == "generated":
            return (modality == SPEECH) & ~prompt
        if self.scope == "speech":
            m = modality == SPEECH
        elif self.scope == "text":
            m = modality == TEXT
        else:
            m = torch.ones_like(modality, dtype=torch.bool)
        return m if self.include_prompt else m & ~prompt


class TeacherForced(NamedTuple):
    sequence: TTSSequence
    hidden: dict[int, torch.Tensor]  # layer → [N, d] residual stream after that layer
    logits: torch.Tensor  # [N, V + 1] speech logits (last column: stop)


class Generation(NamedTuple):
    tokens: torch.Tensor  # [T] generated speech tokens
    sequence: TTSSequence  # the whole sequence: prefix + generated speech (stop not included)
    stopped: bool  # the model chose to stop (False: the length limit cut it)
    hidden: dict[int, torch.Tensor]  # recorded layers → [N, d] over the whole sequence


class _Hooks:
    """Forward hooks on the residual modules: apply interventions, record activations.

    Before each forward call the loop tells the hooks which positions the call covers
    (`positions(modality, prompt)`), so the same hooks serve the prefill and each cached step.
    """

    def __init__(self, layers: nn.ModuleList, interventions: Sequence[Intervention], record: Sequence[int]):
        self.interventions, self.record = list(interventions), list(record)
        self.recorded: dict[int, list[torch.Tensor]] = {i: [] for i in self.record}
        self.modality = self.prompt = None
        n = len(layers)
        for iv in self.interventions:
            if not 0 <= iv.layer < n:
                raise BadInput(f"intervention layer {iv.layer} out of range: the backbone has {n} layers")
        self.handles = [
            layers[i].register_forward_hook(self._hook(i))
            for i in sorted({iv.layer for iv in self.interventions} | set(self.record))
        ]

    def positions(self, modality: torch.Tensor, prompt: torch.Tensor) -> None:
        self.modality, self.prompt = modality, prompt

    def _hook(self, layer: int):
        mine = [iv for iv in self.interventions if iv.layer == layer]

        def hook(_mod, _inp, out):
            h_BTD = out[0] if isinstance(out, tuple) else out
            if mine:
                h_BTD = h_BTD.clone()
                for iv in mine:
                    m_T = iv.mask(self.modality, self.prompt).to(h_BTD.device)
                    if m_T.any():
                        h_BTD[:, m_T] = (
                            iv.edit(h_BTD[:, m_T].reshape(-1, h_BTD.shape[-1]))
                            .reshape(h_BTD.shape[0], -1, h_BTD.shape[-1])
                            .to(h_BTD.dtype)
                        )
            if layer in self.recorded:
                self.recorded[layer].append(h_BTD[0].detach().float().cpu())
            if not mine:
                return None
            return (h_BTD, *out[1:]) if isinstance(out, tuple) else h_BTD

        return hook

    def hidden(self) -> dict[int, torch.Tensor]:
        return {i: torch.cat(v) for i, v in self.recorded.items()}

    def remove(self) -> None:
        for h in self.handles:
            h.remove()


@contextmanager
def _hooked(layers, interventions, record):
    hooks = _Hooks(layers, interventions, record)
    try:
        yield hooks
    finally:
        hooks.remove()


def sample_token(
    logits: torch.Tensor, gen: torch.Generator, temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0
) -> int:
    """One draw from logits [V] with temperature, top-k and nucleus filtering (greedy at temperature 0)."""
    if not torch.isfinite(logits).all():  # an extreme edit: never sample from NaN
        logits = torch.nan_to_num(logits.float(), nan=float("-inf"), posinf=1e30)
        if not torch.isfinite(logits).any():
            return logits.shape[0] - 1  # nothing usable: stop
    if temperature <= 0:
        return int(logits.argmax())
    logits = logits.float() / temperature
    if 0 < top_k < logits.shape[0]:
        kth = logits.topk(top_k).values[-1]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    probs = logits.softmax(-1)
    if top_p < 1.0:
        p_sorted, order = probs.sort(descending=True)
        drop = p_sorted.cumsum(0) - p_sorted > top_p
        probs = probs.clone()
        probs[order[drop]] = 0
    return int(torch.multinomial(probs, 1, generator=gen))


class TTSBackbone:
    """Base class: subclasses set the identity fields and implement the five pieces above."""

    name: str
    d_model: int
    n_layers: int
    token_rate: float  # speech tokens per second
    sample_rate: int  # output audio
    n_speech: int  # speech vocabulary (the stop column is index n_speech)
    max_positions: int  # context length

    # ---- model-specific pieces -------------------------------------------------------------
    def sequence(self, text: str, instruct: str | None = None, prompt=None) -> TTSSequence:
        raise NotImplementedError

    def speech_ids(self, tokens: torch.Tensor) -> torch.Tensor:
        """Speech tokens (0..n_speech-1) → ids of this backbone's sequence."""
        raise NotImplementedError

    def embed(self, ids: torch.Tensor, modality: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward_embeds(self, embeds_BTD: torch.Tensor, cache=None) -> tuple[torch.Tensor, object]:
        raise NotImplementedError

    def speech_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def layers(self) -> nn.ModuleList:
        """The residual-stream modules: the output of layers()[i] is the residual after layer i."""
        raise NotImplementedError

    def decode(self, tokens) -> np.ndarray:
        raise NotImplementedError

    def token_text(self, ids: torch.Tensor) -> list[str]:
        """Readable strings of sequence ids (for evidence and reports)."""
        return [f"<{int(i)}>" for i in ids]

    def instruct_mask(self, seq: TTSSequence) -> torch.Tensor:
        """[N] bool: positions of the instruct (style description) part of the prefix."""
        return torch.zeros(len(seq), dtype=torch.bool)

    # ---- shared machinery -----------------------------------------------------------------
    def append_speech(self, seq: TTSSequence, tokens: torch.Tensor, prompt: bool = False) -> TTSSequence:
        """`seq` followed by speech tokens, timed from the speech already in `seq`."""
        tokens = torch.as_tensor(tokens, dtype=torch.long).flatten()
        if tokens.numel() and (tokens.min() < 0 or tokens.max() >= self.n_speech):
            raise BadInput(f"speech tokens must lie in 0..{self.n_speech - 1}")
        start = int((seq.modality == SPEECH).sum())
        n = tokens.numel()
        return TTSSequence(
            torch.cat([seq.ids, self.speech_ids(tokens)]),
            torch.cat([seq.modality, torch.full((n,), SPEECH, dtype=torch.int8)]),
            torch.cat([seq.times, (start + torch.arange(n, dtype=torch.float32)) / self.token_rate]),
            torch.cat([seq.prompt, torch.full((n,), prompt, dtype=torch.bool)]),
        )

    def check_length(self, n: int, what: str = "the sequence") -> None:
        if n > self.max_positions:
            raise BadInput(
                f"{what} needs {n} positions but {self.name} reads at most {self.max_positions}: "
                "shorten the text (split it into sentences)"
            )

    @torch.no_grad()
    def teacher_forced(
        self,
        text: str,
        speech_tokens,
        instruct: str | None = None,
        layers: Sequence[int] = (),
        interventions: Sequence[Intervention] = (),
    ) -> TeacherForced:
        """One forward pass over [prefix, speech tokens]; residuals at `layers`, speech logits."""
        seq = self.append_speech(self.sequence(text, instruct), speech_tokens)
        self.check_length(len(seq))
        with _hooked(self.layers(), interventions, layers) as hooks:
            hooks.positions(seq.modality, seq.prompt)
            h, _ = self.forward_embeds(self.embed(seq.ids, seq.modality)[None])
            return TeacherForced(seq, hooks.hidden(), self.speech_logits(h[0]))

    def max_new_tokens(self, seq: TTSSequence) -> int:
        """Default length limit for generation: room left in the context."""
        return self.max_positions - len(seq)

    @torch.no_grad()
    def generate(
        self,
        text: str,
        instruct: str | None = None,
        prompt=None,
        interventions: Sequence[Intervention] = (),
        seed: int = 0,
        temperature: float = 1.0,
        top_k: int = 50,
        top_p: float = 0.95,
        max_tokens: int | None = None,
        min_tokens: int = 1,
        record: Sequence[int] = (),
    ) -> Generation:
        """Sample speech tokens one at a time under a KV cache; each step runs one new position
        through the model, so hooks (interventions, recording) see exactly that position."""
        seq = self.sequence(text, instruct, prompt)
        self.check_length(len(seq) + 1, "the text")
        limit = min(max_tokens or self.max_new_tokens(seq), self.max_positions - len(seq))
        gen = torch.Generator().manual_seed(seed)
        tokens: list[int] = []
        stopped = False
        with _hooked(self.layers(), interventions, record) as hooks:
            hooks.positions(seq.modality, seq.prompt)
            h, cache = self.forward_embeds(self.embed(seq.ids, seq.modality)[None])
            one_speech = torch.tensor([SPEECH], dtype=torch.int8)
            not_prompt = torch.tensor([False])
            while len(tokens) < limit:
                logits = self.speech_logits(h[0, -1])
                if len(tokens) < min_tokens:
                    logits[-1] = float("-inf")
                tok = sample_token(logits, gen, temperature, top_k, top_p)
                if tok == self.n_speech:
                    stopped = True
                    break
                tokens.append(tok)
                hooks.positions(one_speech, not_prompt)
                ids = self.speech_ids(torch.tensor([tok]))
                h, cache = self.forward_embeds(self.embed(ids, one_speech)[None], cache)
            hidden = hooks.hidden()
        out = torch.tensor(tokens, dtype=torch.long)
        return Generation(out, self.append_speech(seq, out), stopped, hidden)

    def synthesize(self, text: str, **kwargs) -> tuple[np.ndarray, Generation]:
        """generate() then decode(): (waveform at `sample_rate`, the generation)."""
        g = self.generate(text, **kwargs)
        return self.decode(g.tokens), g

    def identity(self) -> dict:
        return {
            "name": self.name,
            "d_model": self.d_model,
            "n_layers": self.n_layers,
            "token_rate": self.token_rate,
            "sample_rate": self.sample_rate,
            "n_speech": self.n_speech,
            "max_positions": self.max_positions,
        }

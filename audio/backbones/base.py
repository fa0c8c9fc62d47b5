"""The one seam between ttslens and a TTS language model (interface v2).

A backbone is a decoder transformer whose sequence interleaves text and speech. Speech comes in
*frames*: a frame is `frame_positions` consecutive positions (1 for the demo, CosyVoice3 and CSM;
7 for Orpheus's SNAC frames), each position carrying `n_codebooks` ids (1, or 32 for CSM, whose
codebook embeddings are summed). Speech tokens are therefore `[T, C]` (T speech positions).

A subclass supplies the model-specific pieces:
- `sequence(text, instruct, prompt)` → `TTSSequence` (ids `[N, C]`, modality, time, prompt flag);
- `speech_ids(tokens_TC, start)`: speech tokens → sequence ids (`start` = index of the first speech
  position, for backbones whose id ranges depend on the slot in the frame);
- `embed(ids_BTC, modality_BT)`, `forward(embeds, attention_mask, position_ids, cache)`, `layers()`;
- `speech_logits(hidden)`: the head that predicts the next speech position (stop ids included);
- `decode(tokens_TC)` → waveform and, where it has a speech tokenizer, `encode_audio(wave, sr)`.
Optional: `prefill` / `step` (how a frame is fed: the defaults embed it at the next position under the KV
cache), `sample_frame` (its own sampler: history-aware, a depth decoder, slot masks), `is_stop`,
`speech_nll`, `text_free`, `speech_times`, `default_corpus`, `token_text`, `instruct_mask`, `max_new_tokens`.

The base class gives every backbone batched teacher forcing (right padding + attention mask),
batched seeded generation under a KV cache (left padding), and interventions: edits applied through
the one hook engine (`ttslens.sae.hooks`) at the positions their scope names, so a steering vector
never touches the text prefix or a voice prompt. Device and dtype are the model's; sampling draws on
the CPU from one generator per row (the same seed gives the same sample on any device).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np
import torch
from torch import nn

from ttslens.sae.activations import SPEECH, TEXT
from ttslens.sae.errors import BadInput
from ttslens.sae.hooks import Hooks, StopForward, hook_modules
from ttslens.sae.sampling import generators, sample

SCOPES = ("speech", "text", "all", "generated")
PAD = -1  # modality of padding positions (and the id of unused codebook slots at text positions)


class TTSSequence(NamedTuple):
    """An interleaved sequence, one entry per position."""

    ids: torch.Tensor  # [N, C] long in the backbone's id space; text/special positions use column 0 (others PAD)
    modality: torch.Tensor  # [N] int8: 0 text, 1 speech, 2 special
    times: torch.Tensor  # [N] float32: time (s) of each speech position's frame, nan elsewhere
    prompt: torch.Tensor  # [N] bool: positions that come from a voice prompt (speech or its text)

    def __len__(self) -> int:
        return self.ids.shape[0]

    @property
    def token_ids(self) -> torch.Tensor:
        """[N] the first id of each position (the text id, or codebook 0's id)."""
        return self.ids[:, 0]


class Positions(NamedTuple):
    """What the positions of one forward call are: the hook engine's context for a TTS backbone."""

    modality: torch.Tensor  # [B, T] int8 (PAD for padding)
    prompt: torch.Tensor  # [B, T] bool
    times: torch.Tensor  # [B, T] float32


def scope_mask(
    scope: str,
    modality: torch.Tensor,
    prompt: torch.Tensor,
    times: torch.Tensor | None = None,
    include_prompt: bool = False,
    window: tuple[float, float] | None = None,
) -> torch.Tensor:
    """Positions (any shape) in `scope`: "speech" (a voice prompt's speech only with include_prompt),
    "text", "all", "generated" (speech the model produces, never a prompt); `window` = (t0, t1) seconds
    further keeps the speech positions whose time lies in [t0, t1)."""
    if scope == "generated":
        m = (modality == SPEECH) & ~prompt
    elif scope == "speech":
        m = modality == SPEECH
    elif scope == "text":
        m = modality == TEXT
    else:
        m = modality != PAD
    if not include_prompt:
        m = m & ~prompt
    if window is not None:
        t = times if times is not None else torch.full(modality.shape, float("nan"))
        m = m & (t >= window[0]) & (t < window[1])
    return m


def mono_at(wave, sr: int, rate: int, what: str = "") -> np.ndarray:
    """Audio as mono float32 at `rate` (channels averaged; resampled, with a note naming `what` when given)."""
    wave = np.asarray(wave, dtype=np.float32)
    if wave.ndim == 2:
        wave = wave.mean(axis=1 if wave.shape[1] <= 8 else 0)
    if int(sr) != rate:
        import librosa

        if what:
            from ttslens.sae.notes import note

            note(f"the audio is at {sr} Hz: resampled to {rate} Hz for {what}")
        wave = librosa.resample(wave, orig_sr=int(sr), target_sr=rate)
    return wave


def run_decoder(decoder, embeds_BTD, attention_mask_BT, position_ids_BT, cache=None):
    """A transformers decoder stack (`Qwen2Model`, `LlamaModel`, CSM's backbone) over input embeddings under a
    KV cache: (final hidden states, the new cache)."""
    out = decoder(
        inputs_embeds=embeds_BTD,
        attention_mask=attention_mask_BT,
        position_ids=position_ids_BT,
        cache=cache,
        use_cache=True,
    )
    return out.last_hidden_state, out.cache


@dataclass
class Intervention:
    """Edit the residual stream after decoder layer `layer` at the positions in scope.

    `edit` maps the rows in scope, h [n, d], to their replacement [n, d]. Scopes: see `scope_mask`;
    `window=(t0, t1)` limits the edit to speech in that time span (seconds of generated audio)."""

    layer: int
    edit: Callable[[torch.Tensor], torch.Tensor]
    scope: str = "speech"
    include_prompt: bool = False
    window: tuple[float, float] | None = None

    def __post_init__(self) -> None:
        if self.scope not in SCOPES:
            raise BadInput(f"unknown intervention scope {self.scope!r}: use one of {', '.join(SCOPES)}")
        if self.window is not None:
            t0, t1 = map(float, self.window)
            if not 0 <= t0 < t1:
                raise BadInput(f"steering window {self.window} is empty: give 0 <= t0 < t1 seconds")
            self.window = (t0, t1)

    def __call__(self, rows_ND: torch.Tensor) -> torch.Tensor:
        return self.edit(rows_ND)

    def mask(self, ctx: Positions | TTSSequence) -> torch.Tensor:
        return scope_mask(self.scope, ctx.modality, ctx.prompt, ctx.times, self.include_prompt, self.window)


class TeacherForced(NamedTuple):
    sequence: TTSSequence
    hidden: dict[int, torch.Tensor]  # layer → [N, d] residual stream after that layer (float32, CPU)
    logits: torch.Tensor | None  # [N, V] next-speech logits (stop ids included); None if not asked
    final: torch.Tensor | None = None  # [N, d] the last hidden state (what the heads read); None if not asked


class Generation(NamedTuple):
    tokens: torch.Tensor  # [T, C] generated speech tokens
    sequence: TTSSequence  # the whole sequence: prefix + generated speech (stop not included)
    stopped: bool  # the model chose to stop (False: the length limit cut it)
    hidden: dict[int, torch.Tensor]  # recorded layers → [N, d] over the whole sequence


@dataclass
class DecodeState:
    """What a sampler may read at one generation step (one entry per batch row)."""

    hidden_BD: torch.Tensor  # last position's final hidden state
    tokens: list[list[torch.Tensor]]  # generated frames so far, each [C]
    n_speech: list[int]  # speech positions in each row so far (voice prompt included)
    gens: list[torch.Generator]
    temperature: float = 1.0
    top_k: int = 50
    top_p: float = 0.95
    min_tokens: int = 1
    cache: object = None  # the model's KV cache
    attn_BT: torch.Tensor | None = None  # attention mask over every position so far (0: padding, finished rows)
    pos_BT: torch.Tensor | None = None  # position ids of the last call
    extra: dict = field(default_factory=dict)  # the backbone's own sampler state (set in its prefill)


class TTSBackbone:
    """Base class: subclasses set the identity fields and implement the model-specific pieces."""

    name: str
    d_model: int
    n_layers: int
    sample_rate: int  # output audio
    frame_rate: float  # speech frames per second
    codebook_size: int  # speech ids per codebook; sampled ids >= this are stop ids
    max_positions: int  # context length
    n_codebooks: int = 1  # C: ids per speech position
    frame_positions: int = 1  # S: positions per speech frame
    sampling = {"temperature": 1.0, "top_k": 50, "top_p": 0.95}  # what generate() uses when not told

    @property
    def token_rate(self) -> float:
        """Speech positions per second (frame_rate × frame_positions)."""
        return self.frame_rate * self.frame_positions

    @property
    def n_speech(self) -> int:  # the stop target id of the default head (one past the speech ids)
        return self.codebook_size

    @property
    def device(self) -> torch.device:
        return next(iter(self.layers().parameters())).device

    @property
    def dtype(self) -> torch.dtype:
        return next(iter(self.layers().parameters())).dtype

    # ---- model-specific pieces -------------------------------------------------------------
    def sequence(self, text: str, instruct: str | None = None, prompt=None) -> TTSSequence:
        raise NotImplementedError

    def speech_ids(self, tokens_TC: torch.Tensor, start: int = 0) -> torch.Tensor:
        """Speech tokens [T, C] → ids of this backbone's sequence [T, C]."""
        raise NotImplementedError

    def embed(self, ids_BTC: torch.Tensor, modality_BT: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(
        self, embeds_BTD: torch.Tensor, attention_mask_BT: torch.Tensor, position_ids_BT: torch.Tensor, cache=None
    ) -> tuple[torch.Tensor, object]:
        """The transformer: (final hidden states [B, T, d], the new KV cache)."""
        raise NotImplementedError

    def speech_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def layers(self) -> nn.ModuleList:
        """The residual-stream modules: the output of layers()[i] is the residual after layer i."""
        raise NotImplementedError

    def layer_groups(self) -> dict[str, nn.ModuleList]:
        """Named module lists a user may hook (`Hooks(group, ...)`): the residual stream first; a backbone
        with a second transformer (CSM's depth decoder) adds it."""
        return {"layers": self.layers()}

    def decode(self, tokens_TC) -> np.ndarray:
        raise NotImplementedError

    def encode_audio(self, wave: np.ndarray, sr: int) -> torch.Tensor:
        """Audio → speech tokens [T, C], where the backbone has a speech tokenizer."""
        raise BadInput(f"backbone {self.name} has no speech tokenizer: give speech tokens, not audio")

    def default_corpus(self):
        """The corpus this backbone ships with (a `ttslens.audio.corpus.Corpus`), or None."""
        return None

    def voices(self) -> dict:
        """Named voice prompts this backbone ships with: name → `ttslens.audio.voices.VoicePrompt`."""
        return {}

    def token_text(self, ids: torch.Tensor) -> list[str]:
        """Readable strings of sequence ids [N] (for evidence and reports)."""
        return [f"<{int(i)}>" for i in ids]

    def head_names(self, ids: Sequence[int]) -> list[str]:
        """Readable names of rows of `speech_logits` (for the logit lens): speech ids, stop ids past them."""
        return [f"speech {i}" if i < self.codebook_size else "<stop>" for i in map(int, ids)]

    def instruct_mask(self, seq: TTSSequence) -> torch.Tensor:
        """[N] bool: positions of the instruct (style description) part of the prefix."""
        return torch.zeros(len(seq), dtype=torch.bool)

    def max_new_tokens(self, seq: TTSSequence) -> int:
        """Default length limit for generation (speech positions): room left in the context."""
        return self.max_positions - len(seq)

    # ---- overridable defaults ----------------------------------------------------------------
    def speech_times(self, start: int, n: int) -> torch.Tensor:
        """Times of speech positions start..start+n-1: the start of the frame each belongs to."""
        idx = torch.arange(start, start + n, dtype=torch.float64)
        return (torch.div(idx, self.frame_positions, rounding_mode="floor") / self.frame_rate).float()

    def is_stop(self, frame_BC: torch.Tensor) -> torch.Tensor:
        """[B] bool: the sampled frame ends the utterance (default: codebook 0 drew a stop id)."""
        return frame_BC[:, 0] >= self.codebook_size

    def sample_frame(self, state: DecodeState) -> torch.Tensor:
        """The next frame [B, C] of every row. Default (C = 1): the one sampler over `speech_logits`,
        stop ids masked before `min_tokens` and off frame boundaries."""
        logits_BV = self.speech_logits(state.hidden_BD).float().clone()
        for b, n in enumerate(state.n_speech):
            if len(state.tokens[b]) < state.min_tokens or n % self.frame_positions:
                logits_BV[b, self.codebook_size :] = float("-inf")
        ids_B = sample(logits_BV, state.gens, state.temperature, state.top_k, state.top_p, fallback=self.codebook_size)
        return ids_B[:, None]

    def text_free(self, tokens_TC: torch.Tensor) -> torch.Tensor:
        """The speech tokens without what would give their text away (default: unchanged; the demo hides its
        phoneme columns), for judging how well speech fits a text."""
        return tokens_TC

    def speech_logprobs(self, tf: TeacherForced, tokens_TC: torch.Tensor) -> tuple[torch.Tensor, int]:
        """(log p of each speech frame and of the stop after the last, [T + 1], the number of scored terms),
        teacher-forced; differentiable in `tf` (default: one head, C = 1)."""
        n = tokens_TC.shape[0]
        logits = tf.logits[-n - 1 :].float()  # from the last prefix position on
        targets = torch.cat([tokens_TC[:, 0].to(logits.device), torch.tensor([self.n_speech], device=logits.device)])
        return logits.log_softmax(-1).gather(1, targets[:, None])[:, 0], n + 1

    def speech_nll(self, tf: TeacherForced, tokens_TC: torch.Tensor) -> tuple[float, int]:
        """(summed NLL, count) of the speech tokens and the stop, teacher-forced (`speech_logprobs`)."""
        lp, count = self.speech_logprobs(tf, tokens_TC)
        return -float(lp.detach().sum()), count

    # ---- shared machinery -----------------------------------------------------------------
    def as_tokens(self, tokens) -> torch.Tensor:
        """Speech tokens as [T, C] long (a 1-D sequence is read as C = 1)."""
        t = torch.as_tensor(tokens, dtype=torch.long).cpu()
        if t.ndim == 1 and self.n_codebooks == 1:
            t = t[:, None]
        if t.ndim != 2 or t.shape[1] != self.n_codebooks:
            raise BadInput(f"speech tokens must be [T, {self.n_codebooks}] for {self.name} (got {tuple(t.shape)})")
        if t.numel() and (t.min() < 0 or t.max() >= self.codebook_size):
            raise BadInput(f"speech tokens must lie in 0..{self.codebook_size - 1}")
        return t

    def append_speech(self, seq: TTSSequence, tokens, prompt: bool = False) -> TTSSequence:
        """`seq` followed by speech tokens, timed from the speech already in `seq`."""
        t_TC = self.as_tokens(tokens)
        start = int((seq.modality == SPEECH).sum())
        n = t_TC.shape[0]
        return TTSSequence(
            torch.cat([seq.ids, self.speech_ids(t_TC, start).cpu()]),
            torch.cat([seq.modality, torch.full((n,), SPEECH, dtype=torch.int8)]),
            torch.cat([seq.times, self.speech_times(start, n)]),
            torch.cat([seq.prompt, torch.full((n,), prompt, dtype=torch.bool)]),
        )

    def text_ids(self, ids: list[int], modality: list[int]) -> TTSSequence:
        """A prefix of text/special ids (column 0) with nan times and no prompt flags."""
        n = len(ids)
        ids_NC = torch.full((n, self.n_codebooks), PAD, dtype=torch.long)
        ids_NC[:, 0] = torch.tensor(ids, dtype=torch.long)
        return TTSSequence(
            ids_NC, torch.tensor(modality, dtype=torch.int8), torch.full((n,), float("nan")), torch.zeros(n, dtype=bool)
        )

    def check_length(self, n: int, what: str = "the sequence") -> None:
        if n > self.max_positions:
            raise BadInput(
                f"{what} needs {n} positions but {self.name} reads at most {self.max_positions}: "
                "shorten the text (split it into sentences)"
            )

    def pad(self, seqs: Sequence[TTSSequence], left: bool = False):
        """A batch: ids [B, T, C], Positions [B, T], attention mask [B, T], position ids [B, T] (on device)."""
        B, T, C = len(seqs), max(len(s) for s in seqs), self.n_codebooks
        ids = torch.full((B, T, C), PAD, dtype=torch.long)
        modality = torch.full((B, T), PAD, dtype=torch.int8)
        prompt = torch.zeros((B, T), dtype=torch.bool)
        times = torch.full((B, T), float("nan"))
        attn = torch.zeros((B, T), dtype=torch.long)
        for b, s in enumerate(seqs):
            sl = slice(T - len(s), T) if left else slice(0, len(s))
            ids[b, sl], modality[b, sl], prompt[b, sl], times[b, sl], attn[b, sl] = (
                s.ids,
                s.modality,
                s.prompt,
                s.times,
                1,
            )
        pos = (attn.cumsum(1) - 1).clamp_min(0)
        dev = self.device
        return ids.to(dev), Positions(modality, prompt, times), attn.to(dev), pos.to(dev)

    def _embed(self, ids_BTC: torch.Tensor, modality_BT: torch.Tensor) -> torch.Tensor:
        """embed() with PAD ids (padding rows, unused codebooks of text positions) read as 0: a subclass
        tells text from speech by `modality_BT`, never by the ids' sign."""
        safe = ids_BTC.masked_fill(ids_BTC == PAD, 0)
        return self.embed(safe, modality_BT.to(ids_BTC.device)).to(self.dtype)

    def teacher_forced_batch(
        self,
        items: Sequence[tuple],
        layers: Sequence[int] = (),
        interventions: Sequence[Intervention] = (),
        logits: bool = True,
        hook: str = "resid",
        grad: bool = False,
        also: Sequence[Hooks] = (),
    ) -> list[TeacherForced]:
        """One padded forward pass over [prefix, speech tokens] of each (text, tokens[, instruct[, prompt]]) item
        (a voice prompt's speech sits in the prefix, before the tokens). `hidden` holds the residual after
        `layers` (or their MLP / attention outputs: `hook`); interventions always edit the residual. `grad`: keep
        the autograd graph (what the interventions hold, e.g. a steering vector being trained). `also`: more hook
        engines given the same context (e.g. on the layer norms' inputs: path patching)."""
        with torch.set_grad_enabled(grad), contextlib.ExitStack() as stack:
            for eng in also:
                stack.enter_context(eng)
            return self._teacher_forced_batch(items, layers, interventions, logits, hook, also)

    def _teacher_forced_batch(self, items, layers, interventions, logits, hook, also=()) -> list[TeacherForced]:
        seqs = []
        for it in items:
            text, tokens, instruct, prompt = (*it, None, None)[:4]
            seq = self.append_speech(self.sequence(text, instruct, prompt), tokens)
            self.check_length(len(seq))
            seqs.append(seq)
        ids, ctx, attn, pos = self.pad(seqs)
        stop = None if logits or interventions else (max(layers) if layers else None)
        split = hook != "resid"  # recording a block's output: one engine records there, another edits the residual
        hooks = Hooks(self.layers(), interventions, [] if split else layers, stop_after=None if split else stop)
        taps = Hooks(hook_modules(self.layers(), hook), record=layers, stop_after=stop) if split else hooks
        with hooks, taps if split else contextlib.nullcontext():
            hooks.context = taps.context = ctx
            for eng in also:
                eng.context = ctx
            try:
                h, _ = self.forward(self._embed(ids, ctx.modality), attn, pos)
            except StopForward:  # no logits or edits asked: the pass ends after the last recorded layer
                h = None
        hidden = {i: v.float().cpu() for i, v in taps.hidden().items()}
        out = []
        for b, s in enumerate(seqs):
            n = len(s)
            final = h[b, :n] if (logits and h is not None) else None
            lg = self.speech_logits(final).float().cpu() if final is not None else None
            out.append(TeacherForced(s, {i: v[b, :n] for i, v in hidden.items()}, lg, final))
        return out

    def teacher_forced(
        self,
        text: str,
        speech_tokens,
        instruct: str | None = None,
        layers: Sequence[int] = (),
        interventions: Sequence[Intervention] = (),
        prompt=None,
    ) -> TeacherForced:
        """One forward pass over [prefix, speech tokens]; residuals at `layers`, speech logits."""
        return self.teacher_forced_batch([(text, speech_tokens, instruct, prompt)], layers, interventions)[0]

    def prefill(self, seqs: Sequence[TTSSequence], state: DecodeState, hooks: Hooks) -> None:
        """Run the left-padded prefixes through the model (hooks see every position); fills the state's
        cache, attention mask, position ids and last hidden state."""
        ids, ctx, state.attn_BT, state.pos_BT = self.pad(seqs, left=True)
        hooks.context = ctx
        h, state.cache = self.forward(self._embed(ids, ctx.modality), state.attn_BT, state.pos_BT)
        state.hidden_BD = h[:, -1]

    def step(self, state: DecodeState, frame_BC: torch.Tensor, fed_B: torch.Tensor, hooks: Hooks) -> None:
        """Embed each fed row's new frame at its next position and run one cached step (rows not fed are
        masked out); updates the state."""
        B = frame_BC.shape[0]
        ids = torch.full((B, 1, self.n_codebooks), PAD, dtype=torch.long)
        times = torch.full((B, 1), float("nan"))
        for b in range(B):
            if fed_B[b]:
                ids[b, 0] = self.speech_ids(frame_BC[b : b + 1], state.n_speech[b])[0].cpu()
                times[b, 0] = self.speech_times(state.n_speech[b], 1)[0]
                state.n_speech[b] += 1
        modality = torch.where(fed_B, SPEECH, PAD).to(torch.int8)[:, None]
        hooks.context = Positions(modality, torch.zeros((B, 1), dtype=torch.bool), times)
        state.attn_BT = torch.cat([state.attn_BT, fed_B.to(state.attn_BT)[:, None]], dim=1)
        state.pos_BT = state.pos_BT[:, -1:] + 1
        embeds = self._embed(ids.to(self.device), modality)
        h, state.cache = self.forward(embeds, state.attn_BT, state.pos_BT, state.cache)
        state.hidden_BD = h[:, -1]

    @torch.no_grad()
    def generate(
        self,
        text: str | Sequence[str],
        instruct: str | None = None,
        prompt=None,
        interventions: Sequence[Intervention] = (),
        seed: int | Sequence[int] = 0,
        temperature: float | None = None,
        top_k: int | None = None,
        top_p: float | None = None,
        max_tokens: int | None = None,
        min_tokens: int = 1,
        record: Sequence[int] = (),
    ) -> Generation | list[Generation]:
        """Sample speech frame by frame under a KV cache; each step runs one new position per row
        through the model, so hooks (interventions, recording) see exactly that position.
        A list of texts is generated as one left-padded batch (one seed per text). Sampling settings left
        None are the backbone's own (`sampling`)."""
        temperature = self.sampling["temperature"] if temperature is None else temperature
        top_k = self.sampling["top_k"] if top_k is None else top_k
        top_p = self.sampling["top_p"] if top_p is None else top_p
        batched = not isinstance(text, str)
        texts = list(text) if batched else [text]
        seeds = [seed] * len(texts) if isinstance(seed, int) else list(seed)
        if len(seeds) != len(texts):
            raise BadInput(f"{len(texts)} texts but {len(seeds)} seeds: give one seed per text or a single seed")
        seqs = [self.sequence(t, instruct, prompt) for t in texts]
        for s in seqs:
            self.check_length(len(s) + 1, "the text")
        limits = [min(max_tokens or self.max_new_tokens(s), self.max_positions - len(s)) for s in seqs]
        state = DecodeState(
            hidden_BD=torch.empty(0),
            tokens=[[] for _ in seqs],
            n_speech=[int((s.modality == SPEECH).sum()) for s in seqs],
            gens=generators(seeds),
            temperature=temperature,
            top_k=top_k,
            top_p=top_p,
            min_tokens=min_tokens,
        )
        B = len(seqs)
        done, stopped = [lim <= 0 for lim in limits], [False] * B
        hooks = Hooks(self.layers(), interventions, record)
        with hooks:
            self.prefill(seqs, state, hooks)
            while not all(done):
                frame_BC = self.sample_frame(state).cpu()
                stop_B = self.is_stop(frame_BC)
                fed = [False] * B
                for b in range(B):
                    if done[b]:
                        continue
                    if stop_B[b]:
                        done[b] = stopped[b] = True
                        continue
                    state.tokens[b].append(frame_BC[b])
                    fed[b] = True
                    done[b] = len(state.tokens[b]) >= limits[b]
                if not any(fed):
                    break
                self.step(state, frame_BC, torch.tensor(fed), hooks)
        keep_BT = state.attn_BT.bool().cpu()
        hidden = {i: v.float().cpu() for i, v in hooks.hidden().items()}
        out = []
        for b, s in enumerate(seqs):
            toks = (
                torch.stack(state.tokens[b])
                if state.tokens[b]
                else torch.zeros((0, self.n_codebooks), dtype=torch.long)
            )
            rec = {i: v[b][keep_BT[b, : v.shape[1]]] for i, v in hidden.items()}
            out.append(Generation(toks, self.append_speech(s, toks), stopped[b], rec))
        return out if batched else out[0]

    def synthesize(self, text: str, **kwargs) -> tuple[np.ndarray, Generation]:
        """generate() then decode(): (waveform at `sample_rate`, the generation)."""
        g = self.generate(text, **kwargs)
        return self.decode(g.tokens), g

    def identity(self) -> dict:
        return {
            "name": self.name,
            "d_model": self.d_model,
            "n_layers": self.n_layers,
            "frame_rate": self.frame_rate,
            "token_rate": self.token_rate,
            "n_codebooks": self.n_codebooks,
            "frame_positions": self.frame_positions,
            "sample_rate": self.sample_rate,
            "codebook_size": self.codebook_size,
            "max_positions": self.max_positions,
        }

"""Two tiny random TTS backbones that stress the v2 interface the way the real models do.

- `MultiCodebookTTS` (CSM-like): C = 4 codebooks per frame, a frame's input is the *sum* of its
  codebook embeddings, codebook 0 comes from the backbone head and codebooks 1..3 from a small depth
  loop in its own sampler; it stops on an all-zero frame.
- `SlotFrameTTS` (Orpheus-like): C = 1 with 3 positions per frame in one flat vocabulary (per-slot id
  ranges), one stop id allowed only on a frame boundary.
Both are subclasses of `TTSBackbone` over a tiny `LlamaModel` (random weights, built here).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from transformers import LlamaConfig, LlamaModel

from ttslens.audio.backbones.base import DecodeState, TTSBackbone, TTSSequence, run_decoder
from ttslens.audio.corpus import CorpusItem, ListCorpus
from ttslens.sae.activations import SPECIAL, SPEECH, TEXT
from ttslens.sae.sampling import sample

TEXT_VOCAB = 30  # 0 bos, 1 start-of-speech, 2.. letters
BOS, SOS = 0, 1


def _llama(vocab: int, d: int = 32, layers: int = 3, seed: int = 0) -> LlamaModel:
    torch.manual_seed(seed)
    cfg = LlamaConfig(
        vocab_size=vocab,
        hidden_size=d,
        intermediate_size=2 * d,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
    )
    return LlamaModel(cfg).eval()


def _letters(text: str) -> list[int]:
    return [2 + (ord(c) % (TEXT_VOCAB - 2)) for c in text.lower() if c.isalpha() or c == " "]


class _TinyLlamaTTS(TTSBackbone):
    sample_rate = 8000
    max_positions = 512

    def __init__(self, vocab: int, device: str = "cpu", dtype: torch.dtype = torch.float32) -> None:
        self.lm = _llama(vocab).to(device=device, dtype=dtype)
        self.d_model, self.n_layers = self.lm.config.hidden_size, self.lm.config.num_hidden_layers

    def layers(self) -> nn.ModuleList:
        return self.lm.layers

    def forward(self, embeds_BTD, attention_mask_BT, position_ids_BT, cache=None):
        return run_decoder(self.lm, embeds_BTD, attention_mask_BT, position_ids_BT, cache)

    def sequence(self, text: str, instruct: str | None = None, prompt=None) -> TTSSequence:
        body = _letters(text)
        seq = self.text_ids([BOS, *body, SOS], [SPECIAL] + [TEXT] * len(body) + [SPECIAL])
        if prompt:
            seq = self.append_speech(seq, prompt, prompt=True)
        return seq

    def decode(self, tokens_TC) -> np.ndarray:
        t = torch.as_tensor(tokens_TC).float()
        hop = int(self.sample_rate / self.token_rate)
        f = 100 + 10 * t.mean(-1).repeat_interleave(hop).numpy()
        return (0.1 * np.sin(2 * np.pi * np.cumsum(f) / self.sample_rate)).astype(np.float32)

    def default_corpus(self) -> ListCorpus:
        g = torch.Generator().manual_seed(1)
        items = []
        for i, text in enumerate(["a cat sat", "the dog ran far", "we sing", "one more time", "hello there"] * 4):
            n = self.frame_positions * int(torch.randint(3, 8, (1,), generator=g))
            tokens = torch.randint(1, self.codebook_size, (n, self.n_codebooks), generator=g)
            items.append(CorpusItem(text, None, tokens, {"split": "heldout" if i % 5 == 4 else "train"}))
        return ListCorpus(items, self.name)


class MultiCodebookTTS(_TinyLlamaTTS):
    """CSM-like: 4 summed codebooks per frame, a depth loop for codebooks 1..3, all-zero frame = stop."""

    name = "tiny-multicodebook"
    n_codebooks = 4
    codebook_size = 12
    frame_rate = 12.5

    def __init__(self, device: str = "cpu", dtype: torch.dtype = torch.float32) -> None:
        super().__init__(TEXT_VOCAB, device, dtype)
        d, C, V = self.d_model, self.n_codebooks, self.codebook_size
        torch.manual_seed(1)
        self.audio_embed = nn.Embedding(C * V, d).to(device=device, dtype=dtype)
        self.heads = nn.ModuleList(nn.Linear(d, V, bias=False) for _ in range(C)).to(device=device, dtype=dtype)

    def speech_ids(self, tokens_TC: torch.Tensor, start: int = 0) -> torch.Tensor:
        return tokens_TC + torch.arange(self.n_codebooks) * self.codebook_size  # codebook offsets

    def embed(self, ids_BTC: torch.Tensor, modality_BT: torch.Tensor) -> torch.Tensor:
        text = self.lm.embed_tokens(ids_BTC[..., 0].clamp(0, TEXT_VOCAB - 1))
        audio = self.audio_embed(ids_BTC.clamp_min(0)).sum(-2)  # the sum of the frame's codebook embeddings
        return torch.where((modality_BT == SPEECH)[..., None], audio, text)

    def speech_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.heads[0](hidden)

    def is_stop(self, frame_BC: torch.Tensor) -> torch.Tensor:
        return (frame_BC == 0).all(-1)

    def sample_frame(self, state: DecodeState) -> torch.Tensor:
        h_BD = state.hidden_BD
        logits_BV = self.heads[0](h_BD).float()
        for b in range(len(state.tokens)):
            if len(state.tokens[b]) < state.min_tokens:
                logits_BV[b, 0] = float("-inf")  # no all-zero (stop) frame yet
        codes = [sample(logits_BV, state.gens, state.temperature, state.top_k, state.top_p)]
        for c in range(1, self.n_codebooks):  # the depth loop: each codebook conditioned on the previous one
            h_BD = h_BD + self.audio_embed(codes[-1] + (c - 1) * self.codebook_size)
            lg = self.heads[c](h_BD).float()
            stop_B = codes[0] == 0
            lg[stop_B] = torch.where(torch.arange(self.codebook_size) == 0, 0.0, float("-inf")).to(lg)
            codes.append(sample(lg, state.gens, state.temperature, state.top_k, state.top_p))
        return torch.stack(codes, dim=-1)

    def speech_logprobs(self, tf, tokens_TC):
        n = tokens_TC.shape[0]
        logits = tf.logits[-n - 1 :].float()
        targets = torch.cat([tokens_TC[:, 0], torch.tensor([0])])
        return logits.log_softmax(-1).gather(1, targets[:, None])[:, 0], n + 1


class SlotFrameTTS(_TinyLlamaTTS):
    """Orpheus-like: 3 positions per frame, slot s speaks ids OFFSET + s·V + code, one stop id."""

    name = "tiny-slotframe"
    frame_positions = 3
    codebook_size = 10
    frame_rate = 10.0
    OFFSET = TEXT_VOCAB

    def __init__(self, device: str = "cpu", dtype: torch.dtype = torch.float32) -> None:
        self.stop_id = self.OFFSET + self.frame_positions * self.codebook_size
        super().__init__(self.stop_id + 1, device, dtype)

    def speech_ids(self, tokens_TC: torch.Tensor, start: int = 0) -> torch.Tensor:
        slot = (start + torch.arange(tokens_TC.shape[0])) % self.frame_positions
        return self.OFFSET + slot[:, None] * self.codebook_size + tokens_TC

    def embed(self, ids_BTC: torch.Tensor, modality_BT: torch.Tensor) -> torch.Tensor:
        return self.lm.embed_tokens(ids_BTC[..., 0])

    def speech_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return hidden @ self.lm.embed_tokens.weight[self.OFFSET :].T  # tied head over speech ids + stop

    def sample_frame(self, state: DecodeState) -> torch.Tensor:
        V, S = self.codebook_size, self.frame_positions
        logits_BV = self.speech_logits(state.hidden_BD).float()
        allowed = torch.zeros_like(logits_BV, dtype=torch.bool)
        for b, n in enumerate(state.n_speech):
            slot = n % S
            allowed[b, slot * V : (slot + 1) * V] = True
            allowed[b, S * V] = slot == 0 and len(state.tokens[b]) >= state.min_tokens  # stop on a frame boundary
        flat_B = sample(logits_BV.masked_fill(~allowed, float("-inf")), state.gens, state.temperature, state.top_k)
        code_B = torch.where(flat_B == S * V, V, flat_B % V)  # V (>= codebook_size) marks the stop
        return code_B[:, None]

    def speech_logprobs(self, tf, tokens_TC):
        n = tokens_TC.shape[0]
        logits = tf.logits[-n - 1 :].float()
        first = int((tf.sequence.modality == SPEECH).sum()) - n
        slots = (first + torch.arange(n)) % self.frame_positions
        stop = torch.tensor([self.frame_positions * self.codebook_size])
        targets = torch.cat([slots * self.codebook_size + tokens_TC[:, 0], stop])
        return logits.log_softmax(-1).gather(1, targets[:, None])[:, 0], n + 1

"""CosyVoice3-0.5B (the reference paper's model) behind the backbone interface.

Sequence (as the official LM builds it): `[sos] prompt-text text [task] prompt-speech`, then generated speech.
sos and task are rows of the speech table; text ids embed through Qwen2's `embed_tokens`, speech ids through
`speech_embedding`. Here one id space holds both: text ids as they are, speech-table ids after the text
vocabulary (`speech_ids`). Modalities: the text to speak is text; the instruct, or the system line and a voice
prompt's transcript, are text marked as instruct / prompt; `<|endofprompt|>`, sos and task are specials; a
voice prompt's speech tokens are prompt speech. Frames are single tokens at 25 Hz.

The head `llm_decoder` scores S speech ids and 200 stop rows; `speech_logits` folds the stop rows into one stop
column (their logsumexp). The sampler is CosyVoice3's repetition-aware sampling (`ras_sample`), with its length
rule: at least 2 and at most 20 speech tokens per text token. (The official code masks only row S before the
minimum, so a stop can still be drawn early; here every stop row is masked, as the rule intends.)

Speech tokens → 24 kHz audio needs the official flow + HiFT (`decoder.py`); audio → tokens needs
`speech_tokenizer_v3.onnx` (onnxruntime). Without them, harvesting, training and text-side labelling work.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ttslens.audio.backbones.base import DecodeState, TTSBackbone, TTSSequence, run_decoder
from ttslens.audio.backbones.cosyvoice3 import checkpoint, text
from ttslens.audio.backbones.registry import BackboneEntry, register_backbone
from ttslens.sae.activations import SPECIAL, TEXT
from ttslens.sae.devices import resolve_device, resolve_dtype
from ttslens.sae.errors import BadInput
from ttslens.sae.hooks import Hooks
from ttslens.sae.sampling import filter_logits

SOS, EOS, TASK, FILL = 0, 1, 2, 3  # offsets of the specials after the S speech ids in the speech table
MIN_RATIO, MAX_RATIO = 2, 20  # speech tokens per text token (the text to speak, not the prompt's)
RAS = {"top_p": 0.8, "top_k": 25, "win_size": 10, "tau_r": 0.1}  # CosyVoice3's ras_sampling defaults


def ras_sample(
    logits_V: torch.Tensor, history: list[int], gen: torch.Generator, temperature: float = 1.0, **ras
) -> int:
    """Repetition-aware sampling: nucleus (top-p and top-k together) draw; if that id already occurs
    >= win_size * tau_r times in the last win_size tokens, draw again from the whole distribution without it."""
    p = {**RAS, **ras}
    logits_V = logits_V.float() / max(temperature, 1e-5)
    probs = logits_V.softmax(-1)
    sorted_p, order = probs.sort(descending=True, stable=True)
    cum = sorted_p.cumsum(0) - sorted_p  # the mass before each entry: it is kept while that is < top_p
    keep = (cum < p["top_p"]) & (torch.arange(len(order)) < p["top_k"])
    keep[0] = True
    pick = int(order[keep][torch.multinomial(sorted_p[keep], 1, generator=gen)])
    recent = history[-p["win_size"] :]
    if sum(t == pick for t in recent) >= p["win_size"] * p["tau_r"]:
        logits_V = logits_V.clone()
        logits_V[pick] = float("-inf")
        pick = int(torch.multinomial(logits_V.softmax(-1), 1, generator=gen))
    return pick


class CosyVoice3Backbone(TTSBackbone):
    name = "cosyvoice3"
    frame_rate = 25.0
    sample_rate = 24000
    sampling = {"temperature": 1.0, "top_k": RAS["top_k"], "top_p": RAS["top_p"]}

    def __init__(self, lm: checkpoint.CosyVoice3LM, tokenizer, root: Path) -> None:
        self.lm, self.tok, self.root = lm, tokenizer, root
        cfg = lm.model.config
        self.d_model, self.n_layers = cfg.hidden_size, cfg.num_hidden_layers
        self.max_positions = cfg.max_position_embeddings
        self.codebook_size = lm.speech_tokens
        self.text_vocab = lm.model.model.embed_tokens.num_embeddings
        self.eop = tokenizer.convert_tokens_to_ids(text.END_OF_PROMPT)
        self._decoder = None
        self._speech_tokenizer = None

    @classmethod
    def load(cls, path: str | Path | None = None, device: str = "cpu", dtype: str = "float32") -> CosyVoice3Backbone:
        root = checkpoint.resolve(path)
        lm = checkpoint.load_lm(root, resolve_device(device), resolve_dtype(dtype))
        tok = text.load_text_tokenizer(root / checkpoint.BLANK_EN)
        if len(tok) > lm.model.model.embed_tokens.num_embeddings:
            rows = lm.model.model.embed_tokens.num_embeddings
            raise BadInput(
                f"{root / checkpoint.BLANK_EN}'s tokenizer has {len(tok)} ids with CosyVoice3's specials, more "
                f"than the {rows} rows of embed_tokens: the files do not belong together"
            )
        return cls(lm, tok, root)

    # ---- sequence -----------------------------------------------------------------------------
    def _text(self, s: str) -> list[int]:
        return self.tok(s, add_special_tokens=False)["input_ids"]

    def _special(self, k: int) -> int:
        return self.text_vocab + self.codebook_size + k

    def sequence(self, text_: str, instruct: str | None = None, prompt=None) -> TTSSequence:
        """`prompt` = (transcript, speech tokens) of a voice prompt (zero-shot); with an instruct the LM gets no
        prompt speech (as the official instruct mode); with neither, the system line alone (cross-lingual)."""
        if not text_.strip():
            raise BadInput("the text to speak is empty")
        if instruct is not None and prompt is not None:
            raise BadInput("CosyVoice3 takes an instruct or a voice prompt in the LM, not both: drop one")
        head = text.prompt_text(instruct, prompt[0] if prompt else None)
        if text.END_OF_PROMPT in text_:
            raise BadInput(f"the text to speak holds {text.END_OF_PROMPT}: put instructions in --instruct")
        cut = head.index(text.END_OF_PROMPT)
        before, after = self._text(head[:cut]), self._text(head[cut + len(text.END_OF_PROMPT) :])
        body = self._text(text_)
        ids = [self._special(SOS), *before, self.eop, *after, *body, self._special(TASK)]
        mod = [SPECIAL] + [TEXT] * len(before) + [SPECIAL] + [TEXT] * (len(after) + len(body)) + [SPECIAL]
        seq = self.text_ids(ids, mod)
        if instruct is None:  # the system line and a prompt's transcript belong to the voice prompt
            seq.prompt[1 : 2 + len(before) + len(after)] = True
        if prompt is not None:
            seq = self.append_speech(seq, prompt[1], prompt=True)
        self.check_length(len(seq), "the text")
        return seq

    def body_length(self, seq: TTSSequence) -> int:
        """Text tokens of the text to speak (what the length rule counts)."""
        return int(((seq.modality == TEXT) & ~seq.prompt & ~self.instruct_mask(seq)).sum())

    def instruct_mask(self, seq: TTSSequence) -> torch.Tensor:
        mask = torch.zeros(len(seq), dtype=torch.bool)
        eop = (seq.token_ids == self.eop).nonzero()
        if len(eop) and not seq.prompt[1]:  # the instruct sits between sos and <|endofprompt|>
            mask[1 : int(eop[0])] = True
        return mask

    def speech_ids(self, tokens_TC: torch.Tensor, start: int = 0) -> torch.Tensor:
        return tokens_TC + self.text_vocab

    def token_text(self, ids: torch.Tensor) -> list[str]:
        ids = ids[:, 0] if ids.ndim == 2 else ids
        out = []
        for i in ids.tolist():
            if i < self.text_vocab:
                out.append(self.tok.convert_ids_to_tokens(i) or f"<{i}>")
            elif i - self.text_vocab < self.codebook_size:
                out.append(f"<s{i - self.text_vocab}>")
            else:
                k = i - self.text_vocab - self.codebook_size
                out.append({SOS: "<sos>", EOS: "<eos>", TASK: "<task>", FILL: "<fill>"}.get(k, f"<stop{k}>"))
        return out

    # ---- model ------------------------------------------------------------------------------------
    def embed(self, ids_BTC: torch.Tensor, modality_BT: torch.Tensor) -> torch.Tensor:
        ids = ids_BTC[..., 0]
        speech = ids >= self.text_vocab
        e_text = self.lm.model.model.embed_tokens(ids.masked_fill(speech, 0))
        e_speech = self.lm.speech_embedding((ids - self.text_vocab).clamp_min(0))
        return torch.where(speech[..., None], e_speech, e_text)

    def forward(self, embeds_BTD, attention_mask_BT, position_ids_BT, cache=None):
        # the full attention mask at every step (REFERENCE: the official (1, 1) mask breaks transformers 5)
        return run_decoder(self.lm.model.model, embeds_BTD, attention_mask_BT, position_ids_BT, cache)

    def layers(self):
        return self.lm.model.model.layers

    def speech_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """[..., S + 1]: the S speech ids, then one stop (the logsumexp of the 200 stop rows)."""
        lg = self.lm.llm_decoder(hidden.to(self.lm.llm_decoder.weight.dtype))
        S = self.codebook_size
        return torch.cat([lg[..., :S], lg[..., S:].float().logsumexp(-1, keepdim=True).to(lg.dtype)], -1)

    # ---- sampling ---------------------------------------------------------------------------------
    def max_new_tokens(self, seq: TTSSequence) -> int:
        return min(self.max_positions - len(seq), MAX_RATIO * max(self.body_length(seq), 1))

    def prefill(self, seqs, state: DecodeState, hooks: Hooks) -> None:
        super().prefill(seqs, state, hooks)
        state.extra["min_len"] = [MIN_RATIO * self.body_length(s) for s in seqs]

    def sample_frame(self, state: DecodeState) -> torch.Tensor:
        logits_BV = self.speech_logits(state.hidden_BD).float().cpu()
        out = []
        for b, gen in enumerate(state.gens):
            lg = torch.nan_to_num(logits_BV[b], nan=float("-inf"))
            n = len(state.tokens[b])
            if n < max(state.min_tokens, state.extra["min_len"][b]):
                lg[self.codebook_size :] = float("-inf")
            if not torch.isfinite(lg).any():
                out.append(self.codebook_size)
            elif state.temperature <= 0:
                out.append(int(lg.argmax()))
            elif (state.top_k, state.top_p) == (RAS["top_k"], RAS["top_p"]):
                history = [int(t[0]) for t in state.tokens[b]]
                out.append(ras_sample(lg, history, gen, state.temperature))
            else:  # the user chose another filter: plain top-k / top-p sampling
                probs = filter_logits(lg[None], state.temperature, state.top_k, state.top_p)[0]
                out.append(int(torch.multinomial(probs, 1, generator=gen)))
        return torch.tensor(out, dtype=torch.long)[:, None]

    # ---- audio ------------------------------------------------------------------------------------
    def decode(self, tokens) -> np.ndarray:
        from ttslens.audio.backbones.cosyvoice3.decoder import OfficialDecoder

        if self._decoder is None:
            self._decoder = OfficialDecoder.load(self.root, self.device)
        return self._decoder.decode(self.as_tokens(tokens)[:, 0])

    def encode_audio(self, wave: np.ndarray, sr: int) -> torch.Tensor:
        from ttslens.audio.backbones.cosyvoice3.speech_tokenizer import SpeechTokenizer

        if self._speech_tokenizer is None:
            self._speech_tokenizer = SpeechTokenizer.load(self.root)
        tokens = self._speech_tokenizer.encode(wave, sr)
        if self._decoder is not None:
            self._decoder.set_voice(wave, sr)
        return tokens[:, None]


def _ready() -> str | None:
    try:
        import transformers  # noqa: F401
    except ImportError:
        return "transformers is not installed: pip install 'ttslens[cosyvoice3]'"
    try:
        checkpoint.check_dir(checkpoint.resolve(None))
    except Exception:  # not downloaded: say how
        return (
            f"no local copy of {checkpoint.HUB_ID}: pass --model-dir DIR, or set {checkpoint.ALLOW_DOWNLOAD}=1 "
            "to fetch it"
        )
    return None


register_backbone(
    BackboneEntry(
        name="cosyvoice3",
        load=lambda path=None, **options: CosyVoice3Backbone.load(path, **options),
        needs=f"the {checkpoint.HUB_ID} files (--model-dir); the CosyVoice source for audio (COSYVOICE_SRC)",
        ready=_ready,
        claims=lambda p: (p / checkpoint.LLM_FILE).exists() and (p / checkpoint.BLANK_EN).is_dir(),
    )
)

"""CSM-1B (Sesame; transformers' `CsmForConditionalGeneration`, Mimi codec) behind the backbone interface.

Sequence (as its processor builds a conversation): each turn is `<|begin_of_text|>[speaker]text<|end_of_text|>`,
a turn with audio adds one position per Mimi frame and the audio end (an all-EOS frame); the turn to speak is
the last text turn, and the backbone generates frames after it. A frame is 32 codebook ids whose embeddings are
summed (`backbone_model.embed_tokens`); the backbone's `lm_head` predicts codebook 0 and the depth decoder
(`depth_decoder`, its own small transformer, position 0 = the backbone's last hidden state) codebooks 1..31
inside the sampler. Generation stops on a frame whose codebooks 0..30 are all EOS (id 0), as transformers does.
12.5 Hz frames, 24 kHz audio. The residual stream is `backbone_model.layers`; the depth decoder's layers are
the second named group (`layer_groups()["depth"]`).

One id space holds both tables: text ids as they are; a speech frame's ids after the text vocabulary
(`speech_ids`); text positions use column 0.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ttslens.audio.backbones.base import DecodeState, TTSBackbone, TTSSequence, mono_at, run_decoder
from ttslens.audio.backbones.hub import load_pretrained, resolve_model_dir
from ttslens.audio.backbones.registry import BackboneEntry, register_backbone
from ttslens.sae.activations import SPECIAL, TEXT
from ttslens.sae.errors import BadInput
from ttslens.sae.sampling import sample

HUB_ID = "sesame/csm-1b"
BOT, EOT = "<|begin_of_text|>", "<|end_of_text|>"


class CSMBackbone(TTSBackbone):
    name = "csm"
    sample_rate = 24000

    def __init__(self, model, tokenizer, root: Path) -> None:
        self.model, self.tok, self.root = model, tokenizer, root
        cfg = model.config
        self.d_model, self.n_layers = cfg.hidden_size, cfg.num_hidden_layers
        self.max_positions = cfg.max_position_embeddings
        self.n_codebooks, self.codebook_size = cfg.num_codebooks, cfg.vocab_size
        self.codec_size = cfg.codec_config.codebook_size  # Mimi's codes; ids above (pad, ...) are never sampled
        self.frame_rate = float(cfg.codec_config.frame_rate)
        self.eos_code, self.text_vocab = cfg.codebook_eos_token_id, cfg.text_vocab_size
        self.bot, self.eot = (tokenizer.convert_tokens_to_ids(t) for t in (BOT, EOT))
        self.speaker = 0
        gen = getattr(model, "generation_config", None)
        self.sampling = {
            "temperature": float(getattr(gen, "temperature", None) or 1.0),
            "top_k": int(getattr(gen, "top_k", None) or 50),
            "top_p": float(getattr(gen, "top_p", None) or 1.0),
        }

    @classmethod
    def load(cls, path: str | Path | None = None, device: str = "cpu", dtype: str = "float32") -> CSMBackbone:
        from transformers import CsmForConditionalGeneration

        model, tok, root = load_pretrained(CsmForConditionalGeneration, path or HUB_ID, "CSM", device, dtype)
        for t in (BOT, EOT):
            if t not in tok.get_vocab():
                raise BadInput(f"the tokenizer in {root} has no {t}: it is not CSM's (Llama-3) tokenizer")
        return cls(model, tok, root)

    def layer_groups(self) -> dict:
        return {"backbone": self.layers(), "depth": self.model.depth_decoder.model.layers}

    # ---- sequence -----------------------------------------------------------------------------------
    def _turn(self, text: str) -> list[int]:
        return [self.bot, *self.tok(f"[{self.speaker}]{text}", add_special_tokens=False)["input_ids"], self.eot]

    def sequence(self, text: str, instruct: str | None = None, prompt=None) -> TTSSequence:
        """`prompt` = (transcript, Mimi frames [T, 32]) of an earlier turn by the voice (CSM's context)."""
        if not text.strip():
            raise BadInput("the text to speak is empty")
        if instruct:
            raise BadInput("CSM takes no instruct: give a voice prompt (--prompt-wav) instead")
        parts: list[TTSSequence] = []
        if prompt is not None:
            ids = self._turn(prompt[0])
            seq = self.text_ids(ids, [SPECIAL] + [TEXT] * (len(ids) - 2) + [SPECIAL])
            seq.prompt[:] = True
            seq = self.append_speech(seq, prompt[1], prompt=True)
            eos = self.text_ids([0], [SPECIAL])  # the audio end: an all-EOS frame, through the audio table
            eos.ids[0] = self.text_vocab + self.eos_code
            eos.prompt[:] = True
            parts += [seq, eos]
        ids = self._turn(text)
        parts.append(self.text_ids(ids, [SPECIAL] + [TEXT] * (len(ids) - 2) + [SPECIAL]))
        seq = TTSSequence(*(torch.cat([getattr(p, f) for p in parts]) for f in TTSSequence._fields))
        self.check_length(len(seq), "the text")
        return seq

    def speech_ids(self, tokens_TC: torch.Tensor, start: int = 0) -> torch.Tensor:
        return tokens_TC + self.text_vocab

    def token_text(self, ids: torch.Tensor) -> list[str]:
        first = ids[:, 0] if ids.ndim == 2 else ids
        return [
            self.tok.convert_ids_to_tokens(int(i)) if i < self.text_vocab else f"<f{int(i) - self.text_vocab}>"
            for i in first
        ]

    # ---- model --------------------------------------------------------------------------------------
    def embed(self, ids_BTC: torch.Tensor, modality_BT: torch.Tensor) -> torch.Tensor:
        audio = ids_BTC[..., 0] >= self.text_vocab
        text = self.model.embed_text_tokens(ids_BTC[..., 0].masked_fill(audio, 0))
        frames = (ids_BTC - self.text_vocab).clamp(0, self.codebook_size - 1)
        return torch.where(audio[..., None], self.model.backbone_model.embed_tokens(frames), text)

    def forward(self, embeds_BTD, attention_mask_BT, position_ids_BT, cache=None):
        return run_decoder(self.model.backbone_model, embeds_BTD, attention_mask_BT, position_ids_BT, cache)

    def layers(self):
        return self.model.backbone_model.layers

    def speech_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """Codebook 0's logits (the depth decoder fills the rest of the frame in `sample_frame`)."""
        return self.model.lm_head(hidden.to(self.model.lm_head.weight.dtype))

    def is_stop(self, frame_BC: torch.Tensor) -> torch.Tensor:
        return (frame_BC[:, :-1] == self.eos_code).all(-1)

    def max_new_tokens(self, seq: TTSSequence) -> int:
        """About 2 s per word of the text (CSM's own limit is the context), at least 5 s."""
        n_text = int(((seq.modality == TEXT) & ~seq.prompt).sum())
        return min(self.max_positions - len(seq), int(max(5, 2 * n_text) * self.frame_rate))

    # ---- the depth decoder ----------------------------------------------------------------------------
    def _depth_logits(self, h_BD, codes_Bc, cache=None):
        """Logits [B, V] of codebook c = codes_Bc.shape[1] given codebooks 0..c-1 (one step under `cache`)."""
        dd = self.model.depth_decoder
        if cache is None or cache.get_seq_length() == 0:
            ids = torch.nn.functional.pad(codes_Bc, (1, 0))  # position 0: the backbone state's placeholder
            out = dd(input_ids=ids, backbone_last_hidden_state=h_BD, cache=cache, use_cache=True, logits_to_keep=1)
        else:
            out = dd(input_ids=codes_Bc[:, -1:], cache=cache, use_cache=True, logits_to_keep=1)
        return out.logits[:, -1].float()

    def sample_frame(self, state: DecodeState) -> torch.Tensor:
        """Codebook 0 from the backbone's head, then codebooks 1..31 from the depth decoder, each with the one
        sampler (the same settings); ids past Mimi's codebook (pad) are never drawn."""
        from transformers import DynamicCache

        h = state.hidden_BD
        lg = self.speech_logits(h).float()
        lg[:, self.codec_size :] = float("-inf")
        for b, n in enumerate(state.tokens):
            if len(n) < state.min_tokens:
                lg[b, self.eos_code] = float("-inf")
        codes = [sample(lg, state.gens, state.temperature, state.top_k, state.top_p).to(h.device)]
        cache = DynamicCache(config=self.model.depth_decoder.config)
        for _ in range(1, self.n_codebooks):
            lg = self._depth_logits(h.to(self.model.depth_decoder.dtype), torch.stack(codes, 1), cache)
            lg[:, self.codec_size :] = float("-inf")
            codes.append(sample(lg, state.gens, state.temperature, state.top_k, state.top_p).to(h.device))
        return torch.stack(codes, 1).cpu()

    def speech_logprobs(self, tf, tokens_TC: torch.Tensor) -> tuple[torch.Tensor, int]:
        """log p of each frame (every codebook) and of the EOS frame after the last one [T + 1], and the number of
        codes scored, teacher-forced: codebook 0 by the backbone's head, 1..31 by the depth decoder."""
        n = tokens_TC.shape[0]
        t = torch.cat([tokens_TC.long(), torch.full((1, self.n_codebooks), self.eos_code)]).to(self.device)
        h = tf.final[-n - 1 :].to(self.device, self.model.depth_decoder.dtype)
        lp = self.speech_logits(h).float().log_softmax(-1).gather(1, t[:, :1])[:, 0]
        ids = torch.nn.functional.pad(t[:, :-1], (1, 0))
        lg = self.model.depth_decoder(input_ids=ids, backbone_last_hidden_state=h).logits.float()
        lp = lp + lg.log_softmax(-1).gather(-1, t[:, 1:, None])[..., 0].sum(1)
        return lp, t.numel()

    # ---- audio -------------------------------------------------------------------------------------------
    def decode(self, tokens) -> np.ndarray:
        t = self.as_tokens(tokens)
        if len(t) and t.max() >= self.codec_size:
            raise BadInput(f"CSM frames must hold Mimi codes 0..{self.codec_size - 1} to decode")
        codec = self.model.codec_model
        with torch.no_grad():
            out = codec.decode(t.T[None].to(self.device))
        return out.audio_values.float().cpu().numpy().reshape(-1)

    def encode_audio(self, wave: np.ndarray, sr: int) -> torch.Tensor:
        wave = mono_at(wave, sr, self.sample_rate, "Mimi")
        codec = self.model.codec_model
        x = torch.from_numpy(wave)[None, None].to(self.device, codec.dtype)
        with torch.no_grad():
            codes = codec.encode(x).audio_codes[0]  # [32, T]
        return codes.T.long().cpu()


def _ready() -> str | None:
    try:
        from transformers import CsmForConditionalGeneration  # noqa: F401
    except ImportError:
        return "this transformers has no CSM: pip install -U 'transformers>=4.52'"
    try:
        resolve_model_dir(HUB_ID, "CSM")
    except Exception:
        return f"no local copy of {HUB_ID}: pass --model-dir DIR, or set TTSLENS_DOWNLOAD=1 to fetch it"
    return None


def _claims(p: Path) -> bool:
    import json

    cfg = p / "config.json"
    return cfg.exists() and json.loads(cfg.read_text()).get("model_type") == "csm"


register_backbone(
    BackboneEntry(
        name="csm",
        load=lambda path=None, **options: CSMBackbone.load(path, **options),
        needs=f"the {HUB_ID} files (--model-dir; gated on the hub: accept its licence first)",
        ready=_ready,
        claims=_claims,
    )
)

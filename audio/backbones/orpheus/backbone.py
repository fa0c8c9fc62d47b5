"""Orpheus (canopylabs/orpheus-3b-0.1-ft: a Llama-3.2-3B `LlamaForCausalLM`) with the SNAC 24 kHz codec.

Prompt (as Orpheus's engine builds it): `<start_of_human> <|begin_of_text|> "{voice}: {text}" <|eot_id|>
<end_of_human> <start_of_ai> <start_of_speech>`, then audio tokens until `<end_of_speech>`. Its specials are
`<custom_token_N>` = the first custom token's id + N (128256 + N on Llama-3): start_of_speech 1, end_of_speech 2,
start_of_human 3, end_of_human 4, start_of_ai 5; audio code c of slot s is custom token 10 + s·4096 + c.
A SNAC frame is 7 positions `[L0, L1a, L2a, L2b, L1b, L2c, L2d]` (coarse ~12 Hz, middle ~23 Hz, fine ~47 Hz
codes), so `frame_positions` = 7 and speech tokens are [T, 1] codes with per-slot id ranges; the stop is
only allowed on a frame boundary. Emotion tags (`<laugh>`, `<chuckle>`, `<sigh>`, ...) are plain text.
Voices are names in the prompt (`tara`, `leah`, `jess`, `leo`, `dan`, `mia`, `zac`, `zoe`; default tara).
Sampling defaults: temperature 0.6, top-p 0.8, repetition penalty 1.3 (over the audio ids generated so far).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from ttslens.audio.backbones.base import DecodeState, TTSBackbone, TTSSequence, mono_at, run_decoder
from ttslens.audio.backbones.hub import load_pretrained, resolve_model_dir
from ttslens.audio.backbones.registry import BackboneEntry, register_backbone
from ttslens.sae.activations import SPECIAL, SPEECH, TEXT
from ttslens.sae.errors import BadInput, EnvironmentProblem, MissingFile
from ttslens.sae.notes import note
from ttslens.sae.sampling import sample

HUB_ID, SNAC_ID = "canopylabs/orpheus-3b-0.1-ft", "hubertsiuzdak/snac_24khz"
VOICES = ("tara", "leah", "jess", "leo", "dan", "mia", "zac", "zoe")
TAGS = ("<laugh>", "<chuckle>", "<sigh>", "<cough>", "<sniffle>", "<groan>", "<yawn>", "<gasp>")
SPEECH_START, SPEECH_END, HUMAN_START, HUMAN_END, AI_START, AUDIO_BASE = 1, 2, 3, 4, 5, 10  # custom token numbers
SLOTS = 7
SLOT_LEVEL = (0, 1, 2, 2, 1, 2, 2)  # the SNAC level of each of a frame's 7 positions
REPETITION_PENALTY = 1.3


class SnacCodec:
    """SNAC from a directory holding its `config.json` + `pytorch_model.bin` (the hub layout), loaded here."""

    def __init__(self, model) -> None:
        self.model = model.eval()
        self.codebook_size = model.codebook_size
        self.hop = int(np.prod(model.encoder_rates)) * model.vq_strides[0]  # samples per coarse frame

    @classmethod
    def load(cls, where: str | Path, device: torch.device) -> SnacCodec:
        try:
            from snac import SNAC
        except ImportError:
            raise EnvironmentProblem("Orpheus audio needs SNAC: pip install 'ttslens[orpheus]'") from None
        root = resolve_model_dir(where, "SNAC")
        missing = [n for n in ("config.json", "pytorch_model.bin") if not (root / n).exists()]
        if missing:
            raise MissingFile(f"SNAC directory {root} lacks {', '.join(missing)}")
        model = SNAC(**json.loads((root / "config.json").read_text()))
        model.load_state_dict(torch.load(str(root / "pytorch_model.bin"), map_location="cpu", weights_only=True))
        return cls(model.to(device))

    def decode(self, codes_T: torch.Tensor) -> np.ndarray:
        frames = codes_T.reshape(-1, SLOTS)
        dev = next(self.model.parameters()).device
        levels = [frames[:, [i for i, lv in enumerate(SLOT_LEVEL) if lv == k]].reshape(1, -1) for k in range(3)]
        with torch.no_grad(), torch.random.fork_rng(devices=[dev] if dev.type == "cuda" else []):
            torch.manual_seed(0)  # SNAC's decoder adds noise: seeded, so the same tokens give the same audio
            audio = self.model.decode([lv.to(dev) for lv in levels])
        return audio.float().cpu().numpy().reshape(-1)

    def encode(self, wave: np.ndarray) -> torch.Tensor:
        dev = next(self.model.parameters()).device
        x = torch.from_numpy(np.asarray(wave, dtype=np.float32))[None, None].to(dev)
        with torch.no_grad():
            l0, l1, l2 = (c[0].cpu() for c in self.model.encode(x))
        n = len(l0)
        frames = torch.stack(
            [l0, l1[0::2], l2[0::4], l2[1::4], l1[1::2], l2[2::4], l2[3::4]], 1
        )  # [n, 7] in Orpheus's order
        return frames.reshape(n * SLOTS, 1).long()


class OrpheusBackbone(TTSBackbone):
    name = "orpheus"
    frame_positions = SLOTS
    sample_rate = 24000
    sampling = {"temperature": 0.6, "top_k": 50, "top_p": 0.8}

    def __init__(
        self, model, tokenizer, root: Path, snac: str | Path, codebook_size: int = 4096, hop: int = 2048
    ) -> None:
        self.model, self.tok, self.root, self.snac_where = model, tokenizer, root, snac
        cfg = model.config
        self.d_model, self.n_layers = cfg.hidden_size, cfg.num_hidden_layers
        self.max_positions = cfg.max_position_embeddings
        self.codebook_size = codebook_size
        self.custom0 = self._custom_base()
        self.audio0 = self.custom0 + AUDIO_BASE
        if self.audio0 + SLOTS * codebook_size > cfg.vocab_size:
            raise BadInput(
                f"Orpheus in {root}: {SLOTS} x {codebook_size} audio ids from {self.audio0} do not fit the vocabulary "
                f"of {cfg.vocab_size}: the SNAC codebook size does not match the model"
            )
        self.stop_id = self.custom0 + SPEECH_END
        self.frame_rate = self.sample_rate / hop  # one coarse SNAC code per frame: 11.72 Hz on snac_24khz
        self._snac: SnacCodec | None = None

    def _custom_base(self) -> int:
        """The id of `<custom_token_0>` (128256 on Llama-3); custom token N is that + N."""
        vocab = self.tok.get_vocab()
        if "<custom_token_0>" in vocab:
            base = vocab["<custom_token_0>"]
            probe = f"<custom_token_{AUDIO_BASE}>"
            if probe in vocab and vocab[probe] != base + AUDIO_BASE:
                raise BadInput(f"the tokenizer in {self.root} numbers its custom tokens out of order")
            return base
        return 128256

    @classmethod
    def load(
        cls, path: str | Path | None = None, device: str = "cpu", dtype: str = "float32", snac: str = ""
    ) -> OrpheusBackbone:
        from transformers import LlamaForCausalLM

        model, tok, root = load_pretrained(LlamaForCausalLM, path or HUB_ID, "Orpheus", device, dtype)
        snac_where = snac or (root / "snac" if (root / "snac" / "config.json").exists() else SNAC_ID)
        size, hop = 4096, 2048  # snac_24khz's
        if (Path(snac_where) / "config.json").exists():  # a local SNAC says its own
            c = json.loads((Path(snac_where) / "config.json").read_text())
            size, hop = int(c.get("codebook_size", size)), int(np.prod(c["encoder_rates"]) * c["vq_strides"][0])
        return cls(model, tok, root, snac_where, size, hop)

    # ---- sequence -----------------------------------------------------------------------------------
    def voices(self) -> dict:
        """The finetuned model's voices: names that lead the prompt (`tara: text`), no prompt audio."""
        from ttslens.audio.voices import VoicePrompt

        return {v: VoicePrompt(v, torch.zeros((0, 1), dtype=torch.long), v) for v in VOICES}

    def sequence(self, text: str, instruct: str | None = None, prompt=None) -> TTSSequence:
        """`prompt` = (voice name, no tokens), as `voices()` gives; default voice tara."""
        if not text.strip():
            raise BadInput("the text to speak is empty")
        if instruct:
            raise BadInput("Orpheus takes no instruct: put emotion tags (<laugh>, <sigh>, ...) in the text")
        voice = "tara"
        if prompt is not None:
            if len(prompt[1]):
                raise BadInput("Orpheus takes a voice name, not prompt audio: use --voice NAME (see `ttslens voices`)")
            voice = prompt[0]
        bos = self.tok.convert_tokens_to_ids("<|begin_of_text|>")
        full = self.tok(f"{voice}: {text}", add_special_tokens=False)["input_ids"]
        full = [bos, *full]  # as Llama-3's tokenizer adds it
        head = [bos, *self.tok(f"{voice}:", add_special_tokens=False)["input_ids"]]
        c = self.custom0
        eot = self.tok.convert_tokens_to_ids("<|eot_id|>")
        ids = [c + HUMAN_START, *full, eot, c + HUMAN_END, c + AI_START, c + SPEECH_START]
        mod = [SPECIAL, SPECIAL] + [TEXT] * (len(full) - 1) + [SPECIAL] * 4
        seq = self.text_ids(ids, mod)
        seq.prompt[2 : 1 + len(head)] = True  # the voice name leads the text: part of the voice, never steered
        self.check_length(len(seq), "the text")
        return seq

    def speech_ids(self, tokens_TC: torch.Tensor, start: int = 0) -> torch.Tensor:
        slot = (start + torch.arange(tokens_TC.shape[0], device=tokens_TC.device)) % SLOTS
        return self.audio0 + slot[:, None] * self.codebook_size + tokens_TC

    def token_text(self, ids: torch.Tensor) -> list[str]:
        first = ids[:, 0] if ids.ndim == 2 else ids
        out = []
        for i in first.tolist():
            if i >= self.audio0:
                s, code = divmod(i - self.audio0, self.codebook_size)
                out.append(f"<s{s}:{code}>")
            else:
                out.append(self.tok.convert_ids_to_tokens(i) or f"<{i}>")
        return out

    # ---- model --------------------------------------------------------------------------------------
    def embed(self, ids_BTC: torch.Tensor, modality_BT: torch.Tensor) -> torch.Tensor:
        return self.model.model.embed_tokens(ids_BTC[..., 0])

    def forward(self, embeds_BTD, attention_mask_BT, position_ids_BT, cache=None):
        return run_decoder(self.model.model, embeds_BTD, attention_mask_BT, position_ids_BT, cache)

    def layers(self):
        return self.model.model.layers

    def speech_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """[..., 7·V + 1]: the audio ids of every slot (slot-major), then the stop (end_of_speech)."""
        w = self.model.lm_head.weight
        rows = torch.cat(
            [w[self.audio0 : self.audio0 + SLOTS * self.codebook_size], w[self.stop_id : self.stop_id + 1]]
        )
        return hidden.to(w.dtype) @ rows.T

    def max_new_tokens(self, seq: TTSSequence) -> int:
        return min(self.max_positions - len(seq), 1200)  # Orpheus's own limit

    def sample_frame(self, state: DecodeState) -> torch.Tensor:
        """The next position's code: only the slot's id range is allowed (and the stop on a frame boundary),
        audio ids already generated are penalised (Orpheus's repetition penalty)."""
        V, S = self.codebook_size, SLOTS
        lg = self.speech_logits(state.hidden_BD).float().cpu()
        allowed = torch.zeros_like(lg, dtype=torch.bool)
        for b, n in enumerate(state.n_speech):
            slot = n % S
            allowed[b, slot * V : (slot + 1) * V] = True
            allowed[b, S * V] = slot == 0 and len(state.tokens[b]) >= state.min_tokens
            if state.tokens[b]:  # HF's rule: positive logits divided by the penalty, negative ones multiplied
                start = n - len(state.tokens[b])
                seen = self.speech_ids(torch.stack(state.tokens[b]), start)[:, 0].unique() - self.audio0
                v = lg[b, seen]
                lg[b, seen] = torch.where(v > 0, v / REPETITION_PENALTY, v * REPETITION_PENALTY)
        flat = sample(lg.masked_fill(~allowed, float("-inf")), state.gens, state.temperature, state.top_k, state.top_p)
        return torch.where(flat == S * V, V, flat % V)[:, None]  # V (>= codebook_size) marks the stop

    def speech_logprobs(self, tf, tokens_TC: torch.Tensor) -> tuple[torch.Tensor, int]:
        n = tokens_TC.shape[0]
        logits = tf.logits[-n - 1 :].float()
        first = int((tf.sequence.modality == SPEECH).sum()) - n
        slots = (first + torch.arange(n)) % SLOTS
        targets = torch.cat(
            [slots * self.codebook_size + tokens_TC[:, 0].cpu(), torch.tensor([SLOTS * self.codebook_size])]
        )
        return logits.log_softmax(-1).gather(1, targets.to(logits.device)[:, None])[:, 0], n + 1

    # ---- audio --------------------------------------------------------------------------------------
    def _codec(self) -> SnacCodec:
        if self._snac is None:
            self._snac = SnacCodec.load(self.snac_where, self.device)
        return self._snac

    def decode(self, tokens) -> np.ndarray:
        t = self.as_tokens(tokens)[:, 0]
        whole = len(t) - len(t) % SLOTS
        if whole < len(t):
            note(f"the last {len(t) - whole} speech tokens do not fill a SNAC frame: dropped")
        if whole == 0:
            return np.zeros(0, dtype=np.float32)
        return self._codec().decode(t[:whole])

    def encode_audio(self, wave: np.ndarray, sr: int) -> torch.Tensor:
        wave = mono_at(wave, sr, self.sample_rate, "SNAC")
        codec = self._codec()
        pad = (-len(wave)) % (codec.hop * 4)  # SNAC's attention window needs whole fine-frame groups
        return codec.encode(np.pad(wave, (0, pad)))


def _ready() -> str | None:
    try:
        resolve_model_dir(HUB_ID, "Orpheus")
    except Exception:
        return f"no local copy of {HUB_ID}: pass --model-dir DIR, or set TTSLENS_DOWNLOAD=1 to fetch it"
    try:
        import snac  # noqa: F401
    except ImportError:
        return "SNAC is not installed: pip install 'ttslens[orpheus]'"
    return None


def _claims(p: Path) -> bool:
    cfg = p / "config.json"
    if not cfg.exists():
        return False
    c = json.loads(cfg.read_text())
    return c.get("model_type") == "llama" and c.get("vocab_size", 0) > 128266 and (p / "tokenizer_config.json").exists()


register_backbone(
    BackboneEntry(
        name="orpheus",
        load=lambda path=None, **options: OrpheusBackbone.load(path, **options),
        needs=f"the {HUB_ID} files (--model-dir) and SNAC ({SNAC_ID}; pip install 'ttslens[orpheus]')",
        ready=_ready,
        claims=_claims,
    )
)

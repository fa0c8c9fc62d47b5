"""The embedded demo backbone: a small Qwen2 TTS LM + the demo codec, loaded from an assets directory.

Assets (written by `ttslens demo build`, shipped in `audio/backbones/demo/assets/`):
`lm.json` + `lm.safetensors` (the transformers config and fp16 weights, the depth head's as `depth.*`),
`tokenizer.json`, `codec.json` + `codec.safetensors`, `laughter.json` + `laughter.safetensors` (the
detector fitted on the corpus), `gender.json` (the timbre gender classifier), `corpus.jsonl` +
`corpus.safetensors` (the token corpus with its truth) and `build.json` (the exact build command,
config and measured metrics). The named voices (`voices()`) are prompts drawn from the corpus.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from ttslens.audio.backbones.base import DecodeState, TeacherForced, TTSBackbone, TTSSequence, mono_at, run_decoder
from ttslens.audio.backbones.demo.lm import (
    FIRST,
    NEXT,
    STOP,
    DepthHead,
    allowed_decisions,
    decision_targets,
    embed_frames,
    expand_head,
    load_lm_state,
    speech_head,
)
from ttslens.audio.backbones.demo.phones import END_ID, UNK_ID, run_starts, text_phonemes
from ttslens.audio.backbones.demo.tokenizer import PHONE_COLUMNS, DemoTokenizer, unpack_codes
from ttslens.audio.backbones.registry import BackboneEntry, register_backbone
from ttslens.audio.corpus import Corpus, CorpusItem
from ttslens.sae.activations import SPECIAL, SPEECH, TEXT
from ttslens.sae.devices import resolve_device, resolve_dtype
from ttslens.sae.errors import BadInput, MissingFile
from ttslens.sae.hooks import Hooks
from ttslens.sae.sampling import sample

ASSETS = Path(__file__).parent / "assets"
REBUILD = "reinstall ttslens or rebuild them with `ttslens demo build`"


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise MissingFile(f"demo backbone file {path} is missing: {REBUILD}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise BadInput(f"demo backbone file {path} is corrupt ({e.__class__.__name__}): {REBUILD}") from None


def _read_tensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    if not path.exists():
        raise MissingFile(f"demo backbone file {path} is missing: {REBUILD}")
    try:
        return load_file(str(path))
    except Exception as e:  # safetensors raises several types for truncated / garbled files
        raise BadInput(f"demo backbone file {path} is corrupt ({e.__class__.__name__}): {REBUILD}") from None


def known_instructs() -> list[str]:
    """The instructs the demo was trained with: gender and/or pace ("a woman speaking quickly.")."""
    from ttslens.audio.backbones.demo.corpus_gen import instruct_text

    forms = [instruct_text(g, p) for g in (None, "male", "female") for p in (None, "fast", "slow")]
    return [f for f in forms if f]


def check_instruct(instruct: str) -> None:
    known = known_instructs()
    if instruct not in known:
        raise BadInput(f"the demo backbone does not know the instruct {instruct!r}: use one of " + "; ".join(known))


class DemoCorpus(Corpus):
    """The demo build's token corpus with its truth (voice, gender, rate, laughter spans, split)."""

    name = "demo"

    def __init__(self, assets: Path) -> None:
        self.assets = assets
        self._items: list[CorpusItem] | None = None

    def all_items(self) -> list[CorpusItem]:
        if self._items is None:  # read once
            flat = _read_tensors(self.assets / "corpus.safetensors")
            lengths, (bits, C) = flat["lengths"], flat["shape"].tolist()
            codes = unpack_codes(flat["packed"].numpy(), bits, int(lengths.sum()) * C)
            tokens = torch.split(torch.from_numpy(codes).reshape(-1, C), lengths.tolist())
            lines = (self.assets / "corpus.jsonl").read_text().splitlines()
            if len(lines) != len(tokens):
                raise BadInput(f"demo corpus files in {self.assets} disagree (item counts): {REBUILD}")
            self._items = []
            for line, t in zip(lines, tokens, strict=True):
                rec = json.loads(line)
                self._items.append(CorpusItem(rec["text"], rec.get("instruct"), t, rec))
        return self._items


class DemoBackbone(TTSBackbone):
    """`[sos] instruct <endofprompt> text [task] speech… [eos]` over one id space (see tokenizer); a frame is
    (phoneme, next phoneme, codec codes), and generation follows the text's phoneme schedule (phones.py)."""

    name = "demo"
    # codes: chosen on sentences no benchmark reports (benchmarks/exp_sampler.py → results/sampler_dev*.json), mean
    # WER 1.00 at (1.0, 50, 0.95), 0.74 here; the codec's fine stages at a lower temperature did worse. Timing: the
    # stay / next / stop decision keeps the LM's own distribution (temperature 1): at 0.7 phonemes stretch, the
    # duration-length correlation fell from 0.90 to 0.71 and 3% of utterances ran to the length limit
    sampling = {"temperature": 0.7, "top_k": 10, "top_p": 0.95}
    timing_temperature: float | None = 1.0  # the decision's temperature; None: generate()'s
    fine_temperature: float | None = None  # the codec's finer residual stages'; None: generate()'s temperature

    def __init__(
        self,
        model,
        depth: DepthHead,
        tokenizer: DemoTokenizer,
        codec,
        assets: Path | None = None,
        info: dict | None = None,
    ):
        self.model, self.depth, self.tok, self.codec = model.eval(), depth.eval(), tokenizer, codec
        self.assets, self.info = assets, info or {}
        cfg = model.config
        self.d_model, self.n_layers = cfg.hidden_size, cfg.num_hidden_layers
        self.max_positions = cfg.max_position_embeddings
        self.frame_rate, self.sample_rate = float(codec.config.frame_rate), int(codec.config.sample_rate)
        self.codebook_size, self.n_codebooks = tokenizer.codebook_size, tokenizer.n_codebooks
        self._head = None
        self._voices: dict | None = None
        self._corpus = DemoCorpus(assets) if assets is not None and (assets / "corpus.jsonl").exists() else None

    # ---- loading ------------------------------------------------------------------------------
    @classmethod
    def load(cls, path: str | Path | None = None, device: str = "cpu", dtype: str = "float32") -> DemoBackbone:
        from transformers import Qwen2Config, Qwen2ForCausalLM

        from ttslens.audio.backbones.demo.codec import Codec

        assets = Path(path) if path else ASSETS
        if not (assets / "lm.safetensors").exists() and not (assets / "build.json").exists():
            raise MissingFile(f"no demo backbone in {assets}: {REBUILD}")
        config = Qwen2Config.from_dict(_read_json(assets / "lm.json"))
        tok = DemoTokenizer.from_dict(_read_json(assets / "tokenizer.json"))
        if config.vocab_size != tok.vocab_size:
            raise BadInput(f"demo backbone files in {assets} disagree (vocabulary sizes): {REBUILD}")
        model = Qwen2ForCausalLM(config)
        depth = DepthHead(config.hidden_size, tok.n_codebooks, tok.codebook_size, first=PHONE_COLUMNS)
        state = expand_head(_read_tensors(assets / "lm.safetensors"), config.vocab_size)
        expected = set(model.state_dict()) | {f"depth.{k}" for k in depth.state_dict()}
        if set(state) != expected:
            odd = sorted(set(state) ^ expected)[:3]
            raise BadInput(f"demo backbone weights in {assets} do not fit its config ({odd}): {REBUILD}")
        try:
            load_lm_state(model, depth, state)
        except RuntimeError as e:
            raise BadInput(f"demo backbone weights in {assets} do not fit its config ({e}): {REBUILD}") from None
        codec = Codec.load(assets)
        if codec.codebook_size > tok.codebook_size or PHONE_COLUMNS + codec.n_codebooks != tok.n_codebooks:
            raise BadInput(f"demo codec and LM in {assets} disagree (speech vocabulary): {REBUILD}")
        info = _read_json(assets / "build.json") if (assets / "build.json").exists() else {}
        model.to(device=resolve_device(device), dtype=resolve_dtype(dtype))
        depth.to(device=resolve_device(device), dtype=resolve_dtype(dtype))
        return cls(model, depth, tok, codec, assets, info)

    def default_corpus(self) -> DemoCorpus | None:
        return self._corpus

    def voices(self) -> dict:
        """One prompt per corpus voice: its first training utterance without laughter or instruct, spoken at
        an ordinary pace (150-200 wpm), 1.5-3.5 s long."""
        from ttslens.audio.voices import VoicePrompt

        if self._voices is None:
            self._voices = {}
            for it in self._corpus.items("train") if self._corpus else []:
                t = it.truth
                if t["voice"] in self._voices or t["laughter"] or t.get("spontaneous") or it.instruct:
                    continue
                if 150 <= t["rate_wpm"] <= 200 and 1.5 <= t["duration"] <= 3.5:
                    self._voices[t["voice"]] = VoicePrompt(it.text, it.tokens, t["voice"])
        return dict(sorted(self._voices.items()))

    # ---- the model-specific pieces ----------------------------------------------------------------
    def sequence(self, text: str, instruct: str | None = None, prompt=None) -> TTSSequence:
        """`prompt` = (prompt_text, prompt_speech_tokens): a voice prompt, continued as CosyVoice3 does."""
        t = self.tok
        ids = [t.sos]
        mod = [SPECIAL]
        if instruct:
            check_instruct(t.normalize(instruct))
            ins = t.encode_text(instruct, "instruct")
            ids += [*ins, t.eop]
            mod += [TEXT] * len(ins) + [SPECIAL]
        p_text = t.encode_text(prompt[0], "prompt text") + [t.index[" "]] if prompt else []
        body = t.encode_text(text)
        ids += [*p_text, *body, t.task]
        mod += [TEXT] * (len(p_text) + len(body)) + [SPECIAL]
        seq = self.text_ids(ids, mod)
        start = len(ids) - 1 - len(body) - len(p_text)
        seq.prompt[start : start + len(p_text)] = True
        if prompt:
            seq = self.append_speech(seq, prompt[1], prompt=True)
        self.check_length(len(seq), "the text")
        return seq

    def speech_ids(self, tokens_TC: torch.Tensor, start: int = 0) -> torch.Tensor:
        offsets = self.tok.speech_offset + torch.arange(self.n_codebooks, device=tokens_TC.device) * self.codebook_size
        return tokens_TC + offsets

    def embed(self, ids_BTC: torch.Tensor, modality_BT: torch.Tensor) -> torch.Tensor:
        return embed_frames(self.model, ids_BTC, modality_BT == SPEECH)

    def forward(self, embeds_BTD, attention_mask_BT, position_ids_BT, cache=None):
        return run_decoder(self.model.model, embeds_BTD, attention_mask_BT, position_ids_BT, cache)

    def speech_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """The decision logits: stay on the phoneme, next phoneme, stop (the last column)."""
        if self._head is None:
            t = self.tok
            self._head = speech_head(self.model, t.stay, t.next, t.eos).detach()
        return hidden.to(self._head.dtype) @ self._head.T

    def schedule(self, seq: TTSSequence) -> list[int]:
        """Phoneme ids the generated speech of `seq` says: those of its text (not its instruct or prompt)."""
        body = (seq.modality == TEXT) & ~seq.prompt & ~self.instruct_mask(seq)
        text = self.tok.decode_text(seq.token_ids[body].tolist())
        return [self.tok.phone_index.get(p, UNK_ID) for p in text_phonemes(text)]

    def prefill(self, seqs, state: DecodeState, hooks: Hooks) -> None:
        super().prefill(seqs, state, hooks)
        state.extra["schedule"] = [self.schedule(s) for s in seqs]
        state.extra["index"] = [-1] * len(seqs)

    @torch.no_grad()
    def sample_frame(self, state: DecodeState) -> torch.Tensor:
        """The decision (among those the phoneme schedule allows; stop not before `min_tokens`) with the one
        sampler, then the frame's phoneme columns, then its codec codes (`sample_codes`)."""
        logits = self.speech_logits(state.hidden_BD).float().cpu().clone()
        schedules, index = state.extra["schedule"], state.extra["index"]
        for b, sched in enumerate(schedules):
            ok = allowed_decisions(index[b], len(sched))
            if len(state.tokens[b]) < state.min_tokens and len(ok) > 1:
                ok = [d for d in ok if d != STOP]
            mask = torch.ones(3, dtype=torch.bool)
            mask[ok] = False
            logits[b, mask] = float("-inf")
        t_timing = state.temperature if self.timing_temperature is None else self.timing_temperature
        decision = sample(logits, state.gens, t_timing, fallback=NEXT)  # unfiltered: top-p would bias timing
        phones = []
        for b, sched in enumerate(schedules):
            if int(decision[b]) == NEXT:
                index[b] = min(index[b] + 1, len(sched) - 1)
            i = index[b]
            phones.append([sched[i], sched[i + 1] if i + 1 < len(sched) else END_ID])
        frame = self.sample_codes(
            state.hidden_BD, torch.tensor(phones), state.gens, state.temperature, state.top_k, state.top_p
        )
        frame[decision == STOP, 0] = self.codebook_size  # a stop: `is_stop` reads column 0 >= codebook_size
        return frame

    @torch.no_grad()
    def sample_codes(
        self, hidden_BD: torch.Tensor, phones_B2: torch.Tensor, gens, temperature=1.0, top_k=50, top_p=0.95
    ) -> torch.Tensor:
        """Frames [B, C]: the given phoneme columns, then codec codes drawn one by one from the depth head,
        each conditioned on the frame's phonemes and the codes before it."""
        z = hidden_BD.to(self.depth.out.dtype)
        out = [phones_B2[:, c].cpu() for c in range(PHONE_COLUMNS)]
        n_coarse = PHONE_COLUMNS + 2 * self.codec.config.mel_per_frame  # the first shape and the gain stage
        for c in range(PHONE_COLUMNS, self.n_codebooks):
            lg = self.depth.column_logits(z, torch.stack(out, -1).to(z.device)).float()
            lg[:, self.codec.codebook_size :] = float("-inf")  # ids past the codec's (tiny codecs: the inventory's)
            t = temperature if c < n_coarse or self.fine_temperature is None else self.fine_temperature
            out.append(sample(lg, gens, t, top_k, top_p).cpu())
        return torch.stack(out, dim=-1)

    def speech_logprobs(self, tf: TeacherForced, tokens_TC: torch.Tensor) -> tuple[torch.Tensor, int]:
        """log p of each frame and of the stop [T + 1] — its decision (where the phonemes are known; scored among
        those the schedule allows, as in sampling and training) plus its codec codes — and the number of terms,
        teacher-forced; differentiable in `tf`."""
        n = tokens_TC.shape[0]
        if tf.final is None:
            raise BadInput("speech_logprobs needs the final hidden states: teacher-force with logits=True")
        t = tokens_TC.to(torch.long).cpu()
        h = tf.final[-n - 1 :].to(device=self.device, dtype=self.depth.out.dtype)
        starts = run_starts(t[:, :PHONE_COLUMNS], UNK_ID)
        if n and starts[0] >= 0:
            starts[0] = FIRST
        dec, ok = decision_targets(t, starts)
        known = dec >= 0
        lg = self.speech_logits(h).float().cpu().masked_fill(~ok, float("-inf"))
        lp = lg.log_softmax(-1).gather(1, dec.clamp_min(0)[:, None])[:, 0]
        lp = torch.where(known, lp, torch.zeros_like(lp))
        count = int(known.sum())
        if n:
            lgd = self.depth.logits(h[:-1], t.to(self.device)).float()
            codes = t[:, PHONE_COLUMNS:].to(lgd.device)
            code_lp = lgd.log_softmax(-1).gather(-1, codes[..., None])[..., 0].sum(1).cpu()
            lp = lp + torch.nn.functional.pad(code_lp, (0, 1))
            count += n * (self.n_codebooks - PHONE_COLUMNS)
        return lp, count

    def text_free(self, tokens_TC: torch.Tensor) -> torch.Tensor:
        """The frames with `<unk>` phonemes: what is said must then be heard in the codes."""
        out = self.as_tokens(tokens_TC).clone()
        out[:, :PHONE_COLUMNS] = UNK_ID
        return out

    def layers(self):
        return self.model.model.layers

    def decode(self, tokens) -> np.ndarray:
        return self.codec.decode(self.as_tokens(tokens)[:, PHONE_COLUMNS:].numpy())

    def encode_audio(self, wave: np.ndarray, sr: int) -> torch.Tensor:
        """The demo's frames [T, C] of a waveform (resampled to the codec's rate when needed): the codec's codes
        after two `<unk>` phoneme columns (a WAV's phoneme timing is unknown)."""
        wave = mono_at(wave, sr, self.sample_rate)
        codes = torch.as_tensor(self.codec.encode(wave), dtype=torch.long)
        unk = torch.full((len(codes), PHONE_COLUMNS), UNK_ID, dtype=torch.long)
        return torch.cat([unk, codes], dim=1)

    def head_names(self, ids) -> list[str]:
        """The decision head's rows: stay on the phoneme (longer sounds), move to the next one, stop."""
        return [("stay on the phoneme", "next phoneme", "stop")[int(i)] for i in ids]

    def token_text(self, ids: torch.Tensor) -> list[str]:
        """Text positions read as their character; a speech frame as /its phoneme/."""
        off, vocab, phones = self.tok.speech_offset, self.tok.text_vocab, self.tok.phonemes
        ids = ids[:, 0] if ids.ndim == 2 else ids
        return [vocab[i] if i < off else f"/{phones[i - off] if i - off < len(phones) else '?'}/" for i in ids.tolist()]

    def instruct_mask(self, seq: TTSSequence) -> torch.Tensor:
        eop = (seq.token_ids == self.tok.eop).nonzero()
        mask = torch.zeros(len(seq), dtype=torch.bool)
        if len(eop):
            mask[1 : int(eop[0])] = True
        return mask

    def max_new_tokens(self, seq: TTSSequence) -> int:
        """Generous for the slowest speech in the corpus: ~3.5 tokens per character + laughs + 2 s."""
        n_text = int((seq.modality == TEXT).sum())
        n_laugh = int((seq.token_ids == self.tok.index["[laughter]"]).sum())
        return min(self.max_positions - len(seq), int(3.5 * n_text + 45 * n_laugh + 2 * self.token_rate))


def _ready() -> str | None:
    if not (ASSETS / "lm.safetensors").exists():
        return f"its assets are missing from {ASSETS}: {REBUILD}"
    return None


register_backbone(
    BackboneEntry(
        name="demo",
        load=lambda path=None, **options: DemoBackbone.load(path, **options),
        needs="nothing (shipped with ttslens; espeak-ng only to rebuild it)",
        ready=_ready,
        claims=lambda p: (p / "lm.json").exists() and (p / "tokenizer.json").exists(),
    )
)

"""The embedded demo backbone: a small Qwen2 TTS LM + the demo codec, loaded from an assets directory.

Assets (written by `ttslens demo build`, shipped in `audio/demo/assets/`):
`lm.json` + `lm.safetensors` (the transformers config and fp16 weights), `tokenizer.json`,
`codec.json` + `codec.safetensors`, `laughter.json` + `laughter.safetensors` (the detector fitted on
the corpus), `corpus.jsonl` + `corpus.safetensors` (the token corpus with its truth) and `build.json`
(the exact build command, config and measured metrics).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from ttslens.audio.backbones.base import TTSBackbone, TTSSequence
from ttslens.audio.backbones.demo.lm import speech_head
from ttslens.audio.backbones.demo.tokenizer import DemoTokenizer
from ttslens.audio.backbones.registry import BackboneEntry, register_backbone
from ttslens.sae.activations import SPECIAL, TEXT
from ttslens.sae.errors import BadInput, MissingFile

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


class DemoBackbone(TTSBackbone):
    """`[sos] instruct <endofprompt> text [task] speech… [eos]` over one id space (see tokenizer)."""

    name = "demo"

    def __init__(self, model, tokenizer: DemoTokenizer, codec, assets: Path | None = None, info: dict | None = None):
        self.model, self.tok, self.codec, self.assets, self.info = model.eval(), tokenizer, codec, assets, info or {}
        cfg = model.config
        self.d_model, self.n_layers = cfg.hidden_size, cfg.num_hidden_layers
        self.max_positions = cfg.max_position_embeddings
        self.token_rate, self.sample_rate = float(codec.config.frame_rate), int(codec.config.sample_rate)
        self.n_speech = tokenizer.n_speech
        self._head = None
        self._laughter = None
        self._corpus = None

    # ---- loading ------------------------------------------------------------------------------
    @classmethod
    def load(cls, path: str | Path | None = None) -> DemoBackbone:
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
        state = _read_tensors(assets / "lm.safetensors")
        try:
            model.load_state_dict({k: v.float() for k, v in state.items()}, strict=False)
        except RuntimeError as e:
            raise BadInput(f"demo backbone weights in {assets} do not fit its config ({e}): {REBUILD}") from None
        missing = set(model.state_dict()) - set(state)
        if missing:
            raise BadInput(f"demo backbone weights in {assets} lack {sorted(missing)[:3]}: {REBUILD}")
        codec = Codec.load(assets)
        if codec.vocab_size != tok.n_speech:
            raise BadInput(f"demo codec and LM in {assets} disagree (speech vocabulary): {REBUILD}")
        info = _read_json(assets / "build.json") if (assets / "build.json").exists() else {}
        return cls(model, tok, codec, assets, info)

    @property
    def laughter_detector(self):
        """The laughter detector fitted on this backbone's corpus (None if the assets lack one)."""
        if self._laughter is None and self.assets is not None and (self.assets / "laughter.json").exists():
            from ttslens.audio.backbones.demo.laughter import LaughterDetector

            self._laughter = LaughterDetector.load(self.assets)
        return self._laughter

    def corpus(self, split: str = "train") -> list:
        """The build corpus as (text, instruct, speech tokens, truth) items: split train | heldout | all."""
        from ttslens.audio.harvest import CorpusItem

        if self.assets is None:
            return []
        if self._corpus is None:  # read once
            flat = _read_tensors(self.assets / "corpus.safetensors")
            tokens = torch.split(flat["tokens"].long(), flat["lengths"].tolist())
            lines = (self.assets / "corpus.jsonl").read_text().splitlines()
            if len(lines) != len(tokens):
                raise BadInput(f"demo corpus files in {self.assets} disagree (item counts): {REBUILD}")
            self._corpus = []
            for line, t in zip(lines, tokens, strict=True):
                rec = json.loads(line)
                self._corpus.append(CorpusItem(rec["text"], rec.get("instruct"), t, rec))
        return [it for it in self._corpus if split in ("all", it.truth.get("split"))]

    # ---- the five pieces ------------------------------------------------------------------------
    def sequence(self, text: str, instruct: str | None = None, prompt=None) -> TTSSequence:
        """`prompt` = (prompt_text, prompt_speech_tokens): a voice prompt, continued as CosyVoice3 does."""
        t = self.tok
        ids = [t.sos]
        mod = [SPECIAL]
        if instruct:
            ins = t.encode_text(instruct, "instruct")
            ids += [*ins, t.eop]
            mod += [TEXT] * len(ins) + [SPECIAL]
        p_text = t.encode_text(prompt[0], "prompt text") + [t.index[" "]] if prompt else []
        body = t.encode_text(text)
        ids += [*p_text, *body, t.task]
        mod += [TEXT] * (len(p_text) + len(body)) + [SPECIAL]
        n = len(ids)
        in_prompt = torch.zeros(n, dtype=torch.bool)
        start = n - 1 - len(body) - len(p_text)
        in_prompt[start : start + len(p_text)] = True
        seq = TTSSequence(
            torch.tensor(ids, dtype=torch.long),
            torch.tensor(mod, dtype=torch.int8),
            torch.full((n,), float("nan")),
            in_prompt,
        )
        if prompt:
            seq = self.append_speech(seq, prompt[1], prompt=True)
        self.check_length(len(seq), "the text")
        return seq

    def speech_ids(self, tokens: torch.Tensor) -> torch.Tensor:
        return tokens + self.tok.speech_offset

    def embed(self, ids: torch.Tensor, modality: torch.Tensor) -> torch.Tensor:
        return self.model.model.embed_tokens(ids)

    def forward_embeds(self, embeds_BTD: torch.Tensor, cache=None):
        out = self.model.model(inputs_embeds=embeds_BTD, past_key_values=cache, use_cache=True)
        return out.last_hidden_state, out.past_key_values

    def speech_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        if self._head is None:
            self._head = speech_head(self.model, self.tok.speech_offset, self.tok.eos).detach()
        return hidden @ self._head.T

    def layers(self):
        return self.model.model.layers

    def decode(self, tokens) -> np.ndarray:
        return self.codec.decode(torch.as_tensor(tokens).cpu().numpy())

    def token_text(self, ids: torch.Tensor) -> list[str]:
        off, vocab = self.tok.speech_offset, self.tok.text_vocab
        return [vocab[i] if i < off else f"<s{i - off}>" for i in ids.tolist()]

    def instruct_mask(self, seq: TTSSequence) -> torch.Tensor:
        eop = (seq.ids == self.tok.eop).nonzero()
        mask = torch.zeros(len(seq), dtype=torch.bool)
        if len(eop):
            mask[1 : int(eop[0])] = True
        return mask

    def max_new_tokens(self, seq: TTSSequence) -> int:
        """Generous for the slowest speech in the corpus: ~3.5 tokens per character + laughs + 2 s."""
        n_text = int((seq.modality == TEXT).sum())
        n_laugh = int((seq.ids == self.tok.index["[laughter]"]).sum())
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

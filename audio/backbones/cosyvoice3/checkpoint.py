"""CosyVoice3's LM from its official model directory, on transformers' Qwen2 classes.

The directory (hub id FunAudioLLM/Fun-CosyVoice3-0.5B-2512) holds `llm.pt` (the LM's state dict),
`CosyVoice-BlankEN/` (the Qwen2 config and tokenizer), and the decoder's files (`cosyvoice3.yaml`,
`flow.pt`, `hift.pt`, `campplus.onnx`) and speech tokenizer (`speech_tokenizer_v3.onnx`), which only
decoding and encoding audio need. `llm.pt`'s keys:
- `llm.model.<Qwen2ForCausalLM key>`: the decoder (`llm.model.lm_head.weight` may be absent: tied);
- `speech_embedding.weight` [S + 200, d]: speech ids 0..S-1 and the specials sos S, eos S+1, task S+2, fill S+3;
- `llm_decoder.weight` [S + 200, d]: the speech head (rows S.. are all stop ids); S = 6561 on the real model.
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import torch

from ttslens.audio.backbones.hub import ALLOW_DOWNLOAD, resolve_model_dir
from ttslens.sae.errors import BadInput, MissingFile

__all__ = ["ALLOW_DOWNLOAD", "HUB_ID", "CosyVoice3LM", "check_dir", "load_lm", "resolve"]

HUB_ID = "FunAudioLLM/Fun-CosyVoice3-0.5B-2512"
LLM_FILE, BLANK_EN = "llm.pt", "CosyVoice-BlankEN"
STOP_ROWS = 200  # speech table rows past the speech ids: specials and stop ids


class CosyVoice3LM(NamedTuple):
    model: object  # Qwen2ForCausalLM
    speech_embedding: torch.nn.Embedding  # [S + 200, d]
    llm_decoder: torch.nn.Linear  # [S + 200, d], no bias
    speech_tokens: int  # S


def resolve(where: str | Path | None) -> Path:
    """The model directory: a local one, or the hub id's snapshot (`ttslens.audio.backbones.hub`)."""
    return resolve_model_dir(where or HUB_ID, "CosyVoice3")


def check_dir(root: Path) -> None:
    missing = [n for n in (LLM_FILE, f"{BLANK_EN}/config.json") if not (root / n).exists()]
    tok_files = ("tokenizer.json", "vocab.json", "tokenizer_config.json")
    if not any((root / BLANK_EN / n).exists() for n in tok_files):
        missing.append(f"{BLANK_EN}/tokenizer files (vocab.json + merges.txt or tokenizer.json)")
    if missing:
        raise MissingFile(f"CosyVoice3 model directory {root} lacks {', '.join(missing)}: download the whole {HUB_ID}")


def load_lm(root: Path, device: torch.device, dtype: torch.dtype) -> CosyVoice3LM:
    """The LM of `root/llm.pt` on a Qwen2ForCausalLM built from `root/CosyVoice-BlankEN/config.json`; every key
    and shape checked against that config."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    check_dir(root)
    config = Qwen2Config.from_pretrained(str(root / BLANK_EN))
    config._attn_implementation = "sdpa"
    try:
        try:
            state = torch.load(str(root / LLM_FILE), map_location="cpu", mmap=True, weights_only=True)
        except RuntimeError:  # a legacy (non-zip) file cannot be memory-mapped
            state = torch.load(str(root / LLM_FILE), map_location="cpu", weights_only=True)
    except Exception as e:
        raise BadInput(
            f"cannot read {root / LLM_FILE} as a torch state dict ({' '.join(str(e).split())[:120]})"
        ) from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    with torch.device("meta"):
        model = Qwen2ForCausalLM(config)
    inner = {"llm.model." + k: v for k, v in model.state_dict().items()}
    expected = set(inner) | {"speech_embedding.weight", "llm_decoder.weight"}
    optional = {"llm.model.lm_head.weight"} if config.tie_word_embeddings else set()
    missing = sorted(expected - set(state) - optional)
    unexpected = sorted(set(state) - expected)
    if missing or unexpected:
        parts = [f"missing {_few(missing)}" if missing else "", f"unexpected {_few(unexpected)}" if unexpected else ""]
        raise BadInput(
            f"{root / LLM_FILE} is not a CosyVoice3 LM checkpoint for {BLANK_EN}'s config: "
            f"{'; '.join(p for p in parts if p)} (a CosyVoice2 llm.pt has llm_embedding.weight: use CosyVoice3 files)"
        )
    d = config.hidden_size
    rows = state["speech_embedding.weight"].shape[0]
    for k, want in [("speech_embedding.weight", (rows, d)), ("llm_decoder.weight", (rows, d))] + [
        (k, tuple(v.shape)) for k, v in inner.items() if k in state
    ]:
        if tuple(state[k].shape) != want:
            raise BadInput(
                f"{root / LLM_FILE}: {k} has shape {tuple(state[k].shape)}, but {BLANK_EN}'s config needs {want}"
            )
    if rows <= STOP_ROWS:
        raise BadInput(f"{root / LLM_FILE}: speech_embedding has {rows} rows, fewer than its {STOP_ROWS} special rows")
    model.load_state_dict({k[len("llm.model.") :]: state[k] for k in inner if k in state}, strict=False, assign=True)
    if config.tie_word_embeddings:
        model.lm_head.weight = model.model.embed_tokens.weight
    model.model.rotary_emb = type(model.model.rotary_emb)(config=config)  # rebuilt off the meta device
    emb = torch.nn.Embedding(rows, d, _weight=state["speech_embedding.weight"].float(), _freeze=True)
    dec = torch.nn.Linear(d, rows, bias=False)
    dec.weight = torch.nn.Parameter(state["llm_decoder.weight"].float(), requires_grad=False)
    model = model.to(device=device, dtype=dtype).eval().requires_grad_(False)
    return CosyVoice3LM(model, emb.to(device, dtype), dec.to(device, dtype), rows - STOP_ROWS)


def _few(keys: list[str]) -> str:
    return ", ".join(keys[:3]) + (f" and {len(keys) - 3} more" if len(keys) > 3 else "")

"""A tiny random CosyVoice3 model directory in the official on-disk layout, for the loader's tests:
`CosyVoice-BlankEN/` (a real Qwen2 config and a byte-level BPE Qwen2 tokenizer with the Qwen specials),
`llm.pt` (the official key names: `llm.model.*`, `speech_embedding.weight`, `llm_decoder.weight`) and
`speech_tokenizer_v3.onnx` (a stand-in with the official inputs: 128-band log-mel [1, 128, F] and its length;
output: one token per 4 mel frames, the argmax of a fixed projection)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

SPEECH_TOKENS = 40  # S (6561 on the real model)
TEXTS = [
    "You are a helpful assistant.",
    "hello there, this is a test of the tiny model.",
    "the cat sat on the mat and looked at the door.",
    "please close the window for me, it is cold outside.",
]


def write_tokenizer(out: Path) -> None:
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import Qwen2Tokenizer

    tk = Tokenizer(models.BPE())
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(
        vocab_size=320,
        special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tk.train_from_iterator(TEXTS * 20, trainer)
    tk.model.save(str(out))
    vocab = json.loads((out / "vocab.json").read_text())
    merges = [tuple(line.split()) for line in (out / "merges.txt").read_text().splitlines() if line and line[0] != "#"]
    Qwen2Tokenizer(vocab=vocab, merges=merges).save_pretrained(str(out))


def write_speech_tokenizer(path: Path, speech_tokens: int, seed: int = 0) -> np.ndarray:
    import onnx
    from onnx import TensorProto, helper

    w = np.random.default_rng(seed).standard_normal((128, speech_tokens)).astype(np.float32)
    nodes = [
        helper.make_node("Transpose", ["feats"], ["ft"], perm=[0, 2, 1]),
        helper.make_node("MatMul", ["ft", "w"], ["scores"]),
        helper.make_node("ArgMax", ["scores"], ["ids"], axis=2, keepdims=0),
        helper.make_node("Slice", ["ids", "start", "end", "axis", "step"], ["tokens"]),
    ]
    ints = lambda name, v: helper.make_tensor(name, TensorProto.INT64, [1], [v])  # noqa: E731
    graph = helper.make_graph(
        nodes,
        "tiny_speech_tokenizer",
        [
            helper.make_tensor_value_info("feats", TensorProto.FLOAT, [1, 128, None]),
            helper.make_tensor_value_info("feats_length", TensorProto.INT32, [1]),
        ],
        [helper.make_tensor_value_info("tokens", TensorProto.INT64, [1, None])],
        [
            helper.make_tensor("w", TensorProto.FLOAT, w.shape, w.ravel().tolist()),
            ints("start", 0),
            ints("end", 1 << 30),
            ints("axis", 1),
            ints("step", 4),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return w


def write_tiny_cosyvoice3(root: Path, hidden: int = 32, layers: int = 3, seed: int = 0) -> Path:
    from transformers import AutoTokenizer, Qwen2Config, Qwen2ForCausalLM

    from ttslens.audio.backbones.cosyvoice3.text import special_tokens

    blank = root / "CosyVoice-BlankEN"
    blank.mkdir(parents=True, exist_ok=True)
    write_tokenizer(blank)
    n_tok = len(AutoTokenizer.from_pretrained(str(blank)))
    config = Qwen2Config(
        vocab_size=n_tok + len(special_tokens()) + 12,  # room for CosyVoice3's specials, as the real 151936
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        rope_theta=1e6,
        tie_word_embeddings=True,
    )
    config.save_pretrained(str(blank))
    torch.manual_seed(seed)
    model = Qwen2ForCausalLM(config)
    state = {f"llm.model.{k}": v for k, v in model.state_dict().items()}
    rows = SPEECH_TOKENS + 200
    state["speech_embedding.weight"] = torch.randn(rows, hidden) * 0.5
    state["llm_decoder.weight"] = torch.randn(rows, hidden) * 0.5
    torch.save(state, str(root / "llm.pt"))
    write_speech_tokenizer(root / "speech_tokenizer_v3.onnx", SPEECH_TOKENS, seed)
    return root

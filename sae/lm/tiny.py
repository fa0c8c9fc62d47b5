"""A tiny text LM built locally (no hub): a word-level tokenizer, a small Llama trained for a few
steps on generated sentences. It is the offline model for the quickstart and the tests, saved in
the ordinary Hugging Face layout so the real loading code (`from_pretrained`) reads it."""

from __future__ import annotations

import random
from pathlib import Path

import torch

SUBJECTS = "the cat|a dog|my friend|the teacher|our neighbour|the old man|a small child|the doctor|she|he".split("|")
VERBS = "sees|likes|finds|paints|reads|carries|opens|cleans|follows|builds|sells|brings".split("|")
OBJECTS = (
    "a red box|the blue door|an apple|the long letter|a green hat|the wooden chair|a heavy stone|"
    "the bright lamp|a quiet song|the broken clock|a fresh loaf|the open window"
).split("|")
PLACES = "in the park|at home|near the river|on monday|after lunch|before dawn|in the city|at school".split("|")


def make_corpus(n: int, seed: int = 0) -> list[str]:
    """Simple sentences with regular structure, so the tiny LM has something to learn."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        s = f"{rng.choice(SUBJECTS)} {rng.choice(VERBS)} {rng.choice(OBJECTS)} {rng.choice(PLACES)} ."
        if rng.random() < 0.5:
            s += f" then {rng.choice(SUBJECTS)} {rng.choice(VERBS)} {rng.choice(OBJECTS)} ."
        out.append(s)
    return out


def build_tokenizer(texts: list[str]):
    from tokenizers import Tokenizer, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.train_from_iterator(texts, trainers.WordLevelTrainer(special_tokens=["<pad>", "<unk>", "<bos>", "<eos>"]))
    tok.post_processor = processors.TemplateProcessing(single="<bos> $A", special_tokens=[("<bos>", 2)])
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>", unk_token="<unk>"
    )


def build_tiny_lm(
    out: str | Path, n_sentences: int = 2000, hidden: int = 64, layers: int = 2, train_steps: int = 200, seed: int = 0
) -> Path:
    """Write corpus.txt, tokenizer and a trained tiny LlamaForCausalLM under `out`."""
    from transformers import LlamaConfig, LlamaForCausalLM

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    texts = make_corpus(n_sentences, seed)
    (out / "corpus.txt").write_text("\n".join(texts) + "\n")
    tok = build_tokenizer(texts)
    torch.manual_seed(seed)
    cfg = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=128,
        bos_token_id=2,
        eos_token_id=3,
        pad_token_id=0,
    )
    model = LlamaForCausalLM(cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    rng = random.Random(seed)
    for _ in range(train_steps):
        enc = tok(rng.sample(texts, 32), return_tensors="pt", padding=True)
        labels = enc["input_ids"].masked_fill(enc["attention_mask"] == 0, -100)
        loss = model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"], labels=labels).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    model.save_pretrained(out / "model")
    tok.save_pretrained(out / "model")
    return out

"""Tiny random CSM and Orpheus models written with `save_pretrained` in the real on-disk layout (config.json,
model.safetensors, generation_config.json, tokenizer files), plus the tokenizers their loaders expect: a small
byte-level BPE with the real special tokens (Llama-3's `<|begin_of_text|>` / `<|end_of_text|>`, CSM's
`<|AUDIO|>` / `<|audio_eos|>`; for Orpheus, the `<custom_token_N>` ids above the text vocabulary)."""

from __future__ import annotations

import json
from pathlib import Path

TEXTS = ["hello there, this is a test.", "the cat sat on the mat.", "tara: leah: dan: zac: voices."]


def bpe_tokenizer(out: Path, specials: list[str], vocab_size: int = 300):
    """A byte-level BPE tokenizer (PreTrainedTokenizerFast) with `specials` first, saved to `out`."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tk = Tokenizer(models.BPE())
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tk.train_from_iterator(TEXTS * 20, trainer)
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, bos_token=specials[0], eos_token=specials[1])
    tok.save_pretrained(str(out))
    return tok


def mimi_config(codebooks: int):
    from transformers import MimiConfig

    return MimiConfig(
        hidden_size=32, num_filters=4, num_residual_layers=1, upsampling_ratios=[8, 4], codebook_size=64,
        vector_quantization_hidden_dimension=16, upsample_groups=32, num_hidden_layers=2, num_attention_heads=2,
        num_key_value_heads=2, sliding_window=4, codebook_dim=16, use_cache=False, num_quantizers=codebooks,
        num_semantic_quantizers=1, intermediate_size=64,
    )  # fmt: skip


def write_tiny_csm(root: Path, codebooks: int = 8, seed: int = 0) -> Path:
    import torch
    from transformers import CsmConfig, CsmForConditionalGeneration

    root.mkdir(parents=True, exist_ok=True)
    tok = bpe_tokenizer(root, ["<|begin_of_text|>", "<|end_of_text|>", "<|AUDIO|>", "<|audio_eos|>"])
    audio, audio_eos = tok.convert_tokens_to_ids("<|AUDIO|>"), tok.convert_tokens_to_ids("<|audio_eos|>")
    vocab = 64 + 3  # Mimi's 64 codes + 3 more ids, as 2048 + 3 on the real model
    cfg = CsmConfig(
        num_codebooks=codebooks, vocab_size=vocab, text_vocab_size=len(tok), hidden_size=32, intermediate_size=64,
        num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048,
        codebook_pad_token_id=vocab - 1, codebook_eos_token_id=0, bos_token_id=tok.bos_token_id,
        audio_token_id=audio, audio_eos_token_id=audio_eos, pad_token_id=audio,
        depth_decoder_config=dict(
            num_codebooks=codebooks, backbone_hidden_size=32, vocab_size=vocab, hidden_size=16, intermediate_size=32,
            num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=codebooks + 1,
        ),
        codec_config=mimi_config(codebooks).to_dict(),
    )  # fmt: skip
    torch.manual_seed(seed)
    model = CsmForConditionalGeneration(cfg).eval()
    with torch.no_grad():  # a random head would stop at once half the time: push the EOS code down
        model.lm_head.weight[0] -= 0.5 * model.lm_head.weight[0]
    model.save_pretrained(str(root))
    return root


def write_tiny_orpheus(root: Path, codebook: int = 64, seed: int = 0) -> Path:
    """Orpheus's layout: a LlamaForCausalLM whose tokenizer ends in `<custom_token_0..>` (specials 1-5, audio
    from 10: 7 slots of `codebook` codes), and a tiny SNAC in `snac/` (config.json + pytorch_model.bin)."""
    import torch
    from snac import SNAC
    from transformers import LlamaConfig, LlamaForCausalLM

    root.mkdir(parents=True, exist_ok=True)
    customs = [f"<custom_token_{i}>" for i in range(10 + 7 * codebook)]
    tok = bpe_tokenizer(root, ["<|begin_of_text|>", "<|end_of_text|>", "<|eot_id|>"])
    tok.add_special_tokens({"additional_special_tokens": customs})
    tok.save_pretrained(str(root))
    config = LlamaConfig(
        vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=2048, tie_word_embeddings=True,
        bos_token_id=tok.convert_tokens_to_ids("<|begin_of_text|>"),
    )  # fmt: skip
    torch.manual_seed(seed)
    LlamaForCausalLM(config).eval().save_pretrained(str(root))
    snac_cfg = dict(
        sampling_rate=24000, encoder_dim=8, encoder_rates=[2, 4, 8, 8], decoder_dim=32, decoder_rates=[8, 8, 4, 2],
        attn_window_size=None, codebook_size=codebook, codebook_dim=4, vq_strides=[4, 2, 1], noise=True, depthwise=True,
    )  # fmt: skip
    (root / "snac").mkdir(exist_ok=True)
    (root / "snac" / "config.json").write_text(json.dumps(snac_cfg))
    torch.save(SNAC(**snac_cfg).state_dict(), str(root / "snac" / "pytorch_model.bin"))
    return root


def write_pairs(tmp_path: Path, n: int = 12) -> Path:
    """n (text, audio file) pairs in a .jsonl: tones with a little noise, 1-2 s at 16 kHz."""
    import numpy as np
    import soundfile as sf

    rng = np.random.default_rng(0)
    lines = []
    for i in range(n):
        t = np.arange(int(16000 * (1 + i % 3 / 2))) / 16000
        wave = 0.3 * np.sin(2 * np.pi * (120 + 20 * i) * t) + 0.01 * rng.standard_normal(len(t))
        sf.write(tmp_path / f"{i}.wav", wave.astype(np.float32), 16000)
        text = ["the cat sat on the mat.", "hello there [laughter] friend.", "please close the door."][i % 3]
        lines.append(json.dumps({"text": text, "audio": str(tmp_path / f"{i}.wav")}))
    (tmp_path / "pairs.jsonl").write_text("\n".join(lines) + "\n")
    return tmp_path / "pairs.jsonl"


def train_and_label(backbone: str, root: Path, tmp_path: Path, tokens: int = 3000, features: int = 4):
    """`ttslens train` then `ttslens label` on `backbone` at `root` over local (text, audio) pairs, from the
    command line: (the label records, the SAE directory, the pairs file)."""
    from ttslens.app.cli import main

    pairs = write_pairs(tmp_path)
    sae = tmp_path / "sae"
    train = ["train", "--backbone", backbone, "--model-dir", str(root), "--corpus", str(pairs), "--layer", "1"]
    train += ["--latents", "64", "--k", "4", "--tokens", str(tokens), "--batch-size", "256", "--warmup-steps", "2"]
    assert main([*train, "--out", str(sae)]) == 0
    label = ["label", "--sae", str(sae), "--corpus", str(pairs), "--items", "12", "--features", f"0:{features}"]
    label += ["--asr", "", "--laughter-model", "", "--gender-model", "", "--top", "4", "--quantiles", "3"]
    assert main([*label, "--negatives", "4", "--pool", "30", "--clips", "1", "--no-progress"]) == 0
    records = [json.loads(line) for line in (sae / "labels" / "labels.jsonl").read_text().splitlines()]
    return records, sae, pairs

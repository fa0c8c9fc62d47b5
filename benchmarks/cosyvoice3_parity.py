"""Does ttslens's CosyVoice3 equal the official implementation? On a machine with the official source and
weights, one command compares, on the same inputs:

1. the text token ids (ttslens's tokenizer vs the official frontend's), for plain text, inline tags and
   `<|endofprompt|>`;
2. the speech-head logits over [sos, prompt text, text, task, speech tokens] (ttslens's teacher forcing vs
   the official `CosyVoice3LM` modules run as its `inference` builds the input), for zero-shot (with prompt
   speech), instruct and cross-lingual sequences: max |Δ| over the 6561 speech logits and the argmax agreement;
3. the residual stream after a layer (ttslens's hook vs the official Qwen2's `output_hidden_states`).

Tolerance (float32, same device): max |Δ logit| ≤ 1e-3, argmax equal at every position, max |Δ h| ≤ 1e-3.

    export COSYVOICE_SRC=~/CosyVoice            # git clone --recursive https://github.com/FunAudioLLM/CosyVoice
    python benchmarks/cosyvoice3_parity.py --model-dir ~/Fun-CosyVoice3-0.5B-2512 --device cuda
    # → results/cosyvoice3_parity.json; exit status 1 when a tolerance is exceeded
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

RESULTS = Path(__file__).parent / "results"
TEXTS = [
    "The quick brown fox jumps over the lazy dog.",
    "Well [laughter] that is the funniest thing I have heard all week.",
    "<strong>Never</strong> leave the door open when it rains.",
]
PROMPT = ("Hope you can do even better than me in the future.", 60)  # transcript, prompt speech tokens
INSTRUCT = "You are a helpful assistant. Please speak as fast as you can.<|endofprompt|>"
TOL = 1e-3


def official_logits(llm, prompt_ids: list[int], text_ids: list[int], speech: torch.Tensor, layer: int):
    """Speech logits [N, 6761] and the residual after `layer` [N, d], as the official inference builds them."""
    dev = next(llm.parameters()).device
    text = torch.tensor([prompt_ids + text_ids], device=dev)
    text_emb = llm.llm.model.model.embed_tokens(text)
    sos = llm.speech_embedding.weight[llm.sos].reshape(1, 1, -1)
    task = llm.speech_embedding.weight[llm.task_id].reshape(1, 1, -1)
    sp = llm.speech_embedding(speech.to(dev)[None])
    x = torch.cat([sos, text_emb, task, sp], 1)
    out = llm.llm.model(inputs_embeds=x, output_hidden_states=True, return_dict=True)
    return llm.llm_decoder(out.hidden_states[-1])[0].float(), out.hidden_states[layer + 1][0].float()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model-dir", required=True)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--layer", type=int, default=20)
    ap.add_argument("--out", default=str(RESULTS / "cosyvoice3_parity.json"))
    args = ap.parse_args()

    from ttslens.audio.backbones.cosyvoice3.backbone import CosyVoice3Backbone
    from ttslens.audio.backbones.cosyvoice3.decoder import import_source
    from ttslens.audio.backbones.cosyvoice3.text import END_OF_PROMPT, SYSTEM

    import_source()
    from cosyvoice.cli.cosyvoice import CosyVoice3

    official = CosyVoice3(args.model_dir)
    llm = official.model.llm.float().to(args.device).eval()
    fe = official.frontend
    ours = CosyVoice3Backbone.load(args.model_dir, device=args.device)
    gen = torch.Generator().manual_seed(0)
    rows, ok = [], True
    with torch.no_grad():
        for text in TEXTS:
            mine = ours._text(text)
            theirs = fe._extract_text_token(text)[0][0].tolist()
            same_ids = mine == theirs
            speech = torch.randint(0, ours.codebook_size, (40,), generator=gen)
            prompt_speech = torch.randint(0, ours.codebook_size, (PROMPT[1],), generator=gen)
            modes = {
                "zero_shot": (dict(prompt=(PROMPT[0], prompt_speech)), SYSTEM + END_OF_PROMPT + PROMPT[0]),
                "instruct": (dict(instruct=INSTRUCT), INSTRUCT),
                "cross_lingual": ({}, SYSTEM + END_OF_PROMPT),
            }
            for mode, (kw, head) in modes.items():
                tf = ours.teacher_forced(text, speech, layers=[args.layer], **kw)
                sp = torch.cat([prompt_speech, speech]) if mode == "zero_shot" else speech
                lg, h = official_logits(llm, fe._extract_text_token(head)[0][0].tolist(), theirs, sp, args.layer)
                S = ours.codebook_size
                d_logit = float((tf.logits[:, :S] - lg[:, :S].cpu()).abs().max())
                agree = float((tf.logits[:, :S].argmax(-1) == lg[:, :S].cpu().argmax(-1)).float().mean())
                d_h = float((tf.hidden[args.layer] - h.cpu()).abs().max())
                good = same_ids and d_logit <= TOL and agree == 1.0 and d_h <= TOL
                ok &= good
                rows.append(
                    {"text": text, "mode": mode, "same_text_ids": same_ids, "max_abs_logit_diff": d_logit,
                     "argmax_agreement": agree, "max_abs_residual_diff": d_h, "within_tolerance": good}
                )  # fmt: skip
                print(rows[-1], flush=True)
    out = {"model_dir": args.model_dir, "device": args.device, "layer": args.layer, "tolerance": TOL, "rows": rows}
    out |= {"all_within_tolerance": ok, "command": " ".join(["python benchmarks/cosyvoice3_parity.py", *sys.argv[1:]])}
    Path(args.out).write_text(json.dumps(out, indent=1))
    print("PASS" if ok else "FAIL", "→", args.out)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()

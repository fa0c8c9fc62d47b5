"""Is the demo's depth head what loses the words? Freeze the shipped decoder, cache its final hidden state
before every speech frame of the corpus, and train depth heads of other shapes on the same states; report
held-out NLL per code column and the WER of their argmax codes given the true history (as
`bench_words_diagnose.py`'s `tf_greedy`).

    python benchmarks/exp_depth_head.py --train 3000 --epochs 3     # → results/depth_head.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch
from torch import nn

from ttslens.audio import load_backbone
from ttslens.audio.backbones.demo.lm import DepthHead
from ttslens.audio.backbones.demo.tokenizer import PHONE_COLUMNS
from ttslens.audio.measures.asr import ASR
from ttslens.audio.measures.wer import wer

RESULTS = Path(__file__).parent / "results"


class DepthTransformer(nn.Module):
    """Columns `first`..C-1 of a frame by a small causal transformer over the frame's columns, as CSM's depth
    decoder: position 0 reads the frame's hidden state plus its first `first` columns (the phonemes),
    position j >= 1 the code of column first+j-1; position j predicts column first+j."""

    def __init__(
        self, d_model: int, n_codebooks: int, codebook_size: int, first: int = 1, layers: int = 2, heads: int = 4
    ) -> None:
        super().__init__()
        self.C, self.K, self.first = n_codebooks, codebook_size, first
        n = max(n_codebooks - first, 1)
        self.embed = nn.Embedding(max(n_codebooks - 1, 1) * codebook_size, d_model)
        self.pos = nn.Parameter(torch.zeros(n, d_model))
        block = nn.TransformerEncoderLayer(
            d_model, heads, 2 * d_model, dropout=0.0, activation="gelu", batch_first=True, norm_first=True
        )
        self.blocks = nn.TransformerEncoder(block, layers, enable_nested_tensor=False)
        self.out = nn.Parameter(torch.zeros(n, codebook_size, d_model))
        nn.init.normal_(self.embed.weight, std=0.02)
        nn.init.normal_(self.pos, std=0.02)
        nn.init.normal_(self.out, std=0.02)

    def _hidden(self, h_ND: torch.Tensor, codes_Nc: torch.Tensor) -> torch.Tensor:
        """Outputs [N, c-first+1, d] of positions 0..c-first for the columns codes_Nc = columns 0..c-1."""
        c = codes_Nc.shape[1]
        e = self.embed(codes_Nc + torch.arange(c, device=codes_Nc.device) * self.K)  # [N, c, d]
        x = (
            torch.cat([(h_ND + e[:, : self.first].sum(1))[:, None], e[:, self.first :]], 1)
            + self.pos[: c - self.first + 1]
        )
        mask = nn.Transformer.generate_square_subsequent_mask(x.shape[1], device=x.device, dtype=x.dtype)
        y = self.blocks(x, mask=mask, is_causal=True)
        return nn.functional.rms_norm(y, (y.shape[-1],))

    def logits(self, h_ND: torch.Tensor, codes_NC: torch.Tensor) -> torch.Tensor:
        """Teacher-forced logits [N, C-first, K] of columns first..C-1 given the frame's ids [N, C]."""
        y = self._hidden(h_ND, codes_NC[:, :-1])
        return torch.einsum("ncd,ckd->nck", y, self.out)

    def column_logits(self, h_ND: torch.Tensor, codes_Nc: torch.Tensor) -> torch.Tensor:
        """Logits [N, K] of column c = codes_Nc.shape[1] >= first, given the frame's columns 0..c-1."""
        c = codes_Nc.shape[1]
        return self._hidden(h_ND, codes_Nc)[:, -1] @ self.out[c - self.first].T


@torch.no_grad()
def cache(bb, items, batch: int = 16):
    hs, frames = [], []
    for i in range(0, len(items), batch):
        chunk = items[i : i + batch]
        tfs = bb.teacher_forced_batch([(it.text, it.tokens, it.instruct) for it in chunk])
        for it, tf in zip(chunk, tfs, strict=False):
            n = len(it.tokens)
            hs.append(tf.final[-n - 1 : -1].float().cpu())
            frames.append(it.tokens.long())
    return torch.cat(hs), torch.cat(frames)


def nll_per_column(head, h, f, bs: int = 4096):
    tot = torch.zeros(head.C - head.first)
    with torch.no_grad():
        for i in range(0, len(h), bs):
            lg = head.logits(h[i : i + bs], f[i : i + bs])
            tot += nn.functional.cross_entropy(lg.transpose(1, 2), f[i : i + bs, head.first :], reduction="none").sum(0)
    return (tot / len(h)).tolist()


def fit(head, h, f, epochs: int, lr: float, bs: int, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(head.parameters(), lr=lr, weight_decay=0.01, betas=(0.9, 0.98))
    steps = epochs * (len(h) // bs)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, lr, total_steps=steps, pct_start=0.05)
    head.train()
    t0, step = time.perf_counter(), 0
    for _ in range(epochs):
        perm = torch.randperm(len(h), generator=gen)
        for i in range(0, len(h) - bs + 1, bs):
            idx = perm[i : i + bs]
            lg = head.logits(h[idx], f[idx])
            loss = nn.functional.cross_entropy(lg.reshape(-1, head.K), f[idx, head.first :].reshape(-1))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(head.parameters(), 1.0)
            opt.step()
            sched.step()
            step += 1
            if step % 50 == 0:
                print(f"  step {step}/{steps} loss {loss.item():.3f} {time.perf_counter() - t0:.0f}s", flush=True)
    head.eval()
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--train", type=int, default=3000, help="training utterances")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--wer-items", type=int, default=16)
    ap.add_argument("--heads", default="mlp,transformer")
    ap.add_argument("--out", default=str(RESULTS / "depth_head.json"))
    args = ap.parse_args()
    torch.manual_seed(0)
    bb = load_backbone("demo")
    corpus = bb.default_corpus()
    train = corpus.items("train")[: args.train]
    held = corpus.items("heldout")
    t = time.perf_counter()
    h_tr, f_tr = cache(bb, train)
    h_ho, f_ho = cache(bb, held)
    print(f"cached {len(h_tr)} / {len(h_ho)} frames in {time.perf_counter() - t:.0f}s", flush=True)
    C, K, d = bb.tok.n_codebooks, bb.tok.codebook_size, h_tr.shape[1]
    heads = {"shipped": bb.depth.float()}
    for name in args.heads.split(","):
        heads[name] = (DepthHead if name == "mlp" else DepthTransformer)(d, C, K, first=PHONE_COLUMNS)
    report = {}
    for name, head in heads.items():
        secs = 0.0 if name == "shipped" else fit(head, h_tr, f_tr, args.epochs, 2e-3, 1024)
        per = nll_per_column(head, h_ho, f_ho)
        report[name] = {
            "parameters": sum(p.numel() for p in head.parameters()),
            "train_seconds": round(secs, 1),
            "heldout_nll": round(statistics.mean(per), 4),
            "nll_per_column": [round(x, 3) for x in per],
        }
        print(name, report[name], flush=True)
    asr = ASR.require("tiny.en")
    items = [
        it
        for it in held
        if "[" not in it.text and not it.instruct and not it.truth.get("spontaneous") and 20 <= len(it.text) <= 90
    ][: args.wer_items]
    for name, head in heads.items():
        bb.depth = head
        ws = []
        with torch.no_grad():
            for it in items:
                n = len(it.tokens)
                hh = bb.teacher_forced(it.text, it.tokens).final[-n - 1 : -1]
                codes = bb.sample_codes(hh, it.tokens[:, :PHONE_COLUMNS], None, 0.0)
                ws.append(wer(it.text, asr.text(bb.decode(codes), bb.sample_rate)))
        report[name]["tf_greedy_wer"] = {
            "mean": round(statistics.mean(ws), 4),
            "median": round(statistics.median(ws), 4),
        }
        print(name, report[name]["tf_greedy_wer"], flush=True)
    out = {"train_frames": len(h_tr), "heldout_frames": len(h_ho), "heads": report}
    out["command"] = " ".join(["python benchmarks/exp_depth_head.py", *sys.argv[1:]])
    Path(args.out).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()

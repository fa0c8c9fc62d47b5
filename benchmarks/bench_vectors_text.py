"""Trained steering vector vs fine-tuning all weights, on a tiny text LM with a verifiable reward (issue 16).

The task: "q 3 plus 4 : a" → the sum. The LM (a 2-layer Llama, word-level tokens, built and trained here) learns
from a corpus in which each question is answered three ways: correctly (40%), off by one (30%), or "i do not
know" (30%); so it can add, but answers correctly only about 40% of the time. A vector at one layer and, on the
same budget (steps × prompts × samples, the same GRPO objective, sampling and seeds, `train_vectors` itself), the
whole model are trained by RL against the `answer` reward (the final number equals the sum) on 80 of the 100
questions; both are scored on the other 20 (16 samples each, the same seeds). Reported with the vector's logit-lens
readout, a layer-0 vector alone and combined with the layer-1 one (each trained in isolation), the layer-0
vector's path patching, and the layer-1 vector moved to a second LM of the same width (another seed). Fine-tuning
gets its best of several learning rates; the vector the default (0.05 × residual RMS).

    python benchmarks/bench_vectors_text.py          # → results/vectors_text.json; ~2 min on 2 cores
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

import torch

RESULTS = Path(__file__).parent / "results"


def corpus(pairs: list[tuple[int, int]], n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        a, b = rng.choice(pairs)
        u = rng.random()
        ans = str(a + b) if u < 0.4 else (str(a + b + rng.choice((-1, 1))) if u < 0.7 else "i do not know")
        out.append(f"q {a} plus {b} : a {ans} .")
    return out


def build_lm(work: Path, pairs, seed: int, steps: int) -> Path:
    from transformers import LlamaConfig, LlamaForCausalLM

    from ttslens.sae.lm.tiny import build_tokenizer

    out = work / "model"
    if (out / "config.json").exists():
        return out
    texts = corpus(pairs, 20_000, seed)
    vocab = ["q plus : a . i do not know"] + [" ".join(str(i) for i in range(-1, 40))]
    tok = build_tokenizer(vocab)  # a fixed vocabulary: LMs of other seeds share their token ids (transfer)
    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                      bos_token_id=2, eos_token_id=3, pad_token_id=0)  # fmt: skip
    model = LlamaForCausalLM(cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    rng = random.Random(seed)
    for _ in range(steps):
        batch = [t + " <eos>" for t in rng.sample(texts, 64)]
        enc = tok(batch, return_tensors="pt", padding=True)
        labels = enc["input_ids"].masked_fill(enc["attention_mask"] == 0, -100)
        loss = model(**enc, labels=labels).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval().save_pretrained(out)
    tok.save_pretrained(out)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", default="runs/vectors_text")
    ap.add_argument("--lm-steps", type=int, default=1500, help="pre-training steps of the tiny LM")
    ap.add_argument("--steps", type=int, default=150, help="RL steps (both runs)")
    ap.add_argument("--prompts-per-step", type=int, default=4)
    ap.add_argument("--samples", type=int, default=8)
    ap.add_argument("--layer", type=int, default=1)
    ap.add_argument("--ft-lrs", default="1e-4,3e-4,1e-3,3e-3", help="learning rates tried for fine-tuning")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=str(RESULTS / "vectors_text.json"))
    args = ap.parse_args()
    from ttslens.sae.lm.harvest import load_model
    from ttslens.sae.vectors.commands import ReadoutConfig, readout
    from ttslens.sae.vectors.lm import TextPolicy
    from ttslens.sae.vectors.train import Item, VectorConfig, train_vectors

    work = Path(args.work)
    pairs = [(a, b) for a in range(10) for b in range(10)]
    random.Random(args.seed).shuffle(pairs)
    model_dir = build_lm(work, pairs, args.seed, args.lm_steps)
    train_items = [Item(f"q {a} plus {b} : a", info={"answer": str(a + b)}) for a, b in pairs[:80]]
    held = [Item(f"q {a} plus {b} : a", info={"answer": str(a + b)}) for a, b in pairs[80:]]
    common = dict(reward="answer", steps=args.steps, prompts_per_step=args.prompts_per_step, samples=args.samples,
                  max_new_tokens=6, eval_samples=0, kl=0.0, seed=args.seed, overwrite=True)  # fmt: skip

    def score(policy, vec_dir=None) -> dict:
        from ttslens.sae.vectors.rewards import Reward
        from ttslens.sae.vectors.train import mean_reward
        from ttslens.sae.vectors.vectors import load_vectors

        vec, meta = load_vectors(vec_dir) if vec_dir else (None, {})
        scope = meta.get("scope", "all")  # the scope the vector was trained at
        return mean_reward(policy, held, Reward("answer"), vec, scope, 16, args.seed + 1, max_new_tokens=6)

    def kinds(policy, vec_dir=None) -> dict:
        """What the held-out completions are: correct, off by one, "i do not know", other (16 samples each)."""
        from ttslens.sae.vectors.rewards import final_number
        from ttslens.sae.vectors.vectors import load_vectors

        vec, meta = load_vectors(vec_dir) if vec_dir else (None, {})
        edits = policy.edits(vec, meta["scope"]) if vec_dir else []
        counts = {"correct": 0, "off_by_one": 0, "i do not know": 0, "other": 0}
        for j, it in enumerate(held):
            for c in policy.sample(it, 16, [10_000 + 16 * j + i for i in range(16)], edits, max_new_tokens=6):
                got, want = final_number(c.text), int(it.info["answer"])
                kind = "correct" if got == want else "off_by_one" if got is not None and abs(got - want) == 1 else None
                counts[kind or ("i do not know" if c.text.startswith("i do not know") else "other")] += 1
        n = sum(counts.values())
        return {k: round(v / n, 4) for k, v in counts.items()}

    def fresh() -> TextPolicy:
        model, tok = load_model(str(model_dir))
        return TextPolicy(model, tok)

    out = {
        "command": " ".join(["python benchmarks/bench_vectors_text.py", *sys.argv[1:]]),
        "task": __doc__.split("\n\n")[1],
    }
    policy = fresh()
    out["base"] = score(policy) | {"completions": kinds(policy)}
    t0 = time.perf_counter()
    cfg = VectorConfig(layers=[args.layer], out=str(work / "vector"), **common)
    s = train_vectors(cfg, policy, train_items, progress=True)
    out["vector"] = {"held_out": score(policy, cfg.out), "train_s": round(time.perf_counter() - t0, 1),
                     "lr": s["lr"], "norm": s["norms"][args.layer], "trainable_parameters": policy.d}  # fmt: skip
    out["vector"]["completions"] = kinds(policy, cfg.out)
    lens = readout(ReadoutConfig(vectors=cfg.out, top=8), policy)
    out["vector"]["logit_lens"] = lens["directions"][f"layer.{args.layer}"]["logit_lens"]
    # the same at layer 0, alone and combined with the layer-1 vector (each trained in isolation); its paths
    cfg0 = VectorConfig(layers=[0], out=str(work / "vector_l0"), **common)
    train_vectors(cfg0, policy, train_items, progress=True)
    from ttslens.sae.vectors.vectors import combine, load_vectors, save_vectors

    v0, meta0 = load_vectors(cfg0.out)
    v1, _ = load_vectors(cfg.out)
    save_vectors(combine([(v0, 1.0), (v1, 1.0)]), work / "combined", meta0 | {"combined": [cfg0.out, cfg.out]})
    out["vector_layer0"] = {"held_out": score(policy, cfg0.out), "completions": kinds(policy, cfg0.out)}
    out["combined_layers_0_1"] = {
        "held_out": score(policy, work / "combined"),
        "completions": kinds(policy, work / "combined"),
    }
    from ttslens.sae.vectors.analysis import attention_change, first_token, path_patching

    comps = []
    for j, it in enumerate(held):
        comps += policy.sample(it, 8, [50_000 + 8 * j + i for i in range(8)], policy.edits(v0, "all"), max_new_tokens=6)
    out["vector_layer0"]["paths"] = path_patching(policy, v0, "all", comps)
    out["vector_layer0"]["attention_change"] = attention_change(policy, v0, "all", comps)  # layer 1's heads
    out["vector"]["first_token"] = first_token(policy, v1, "all", held)
    # transfer: the layer-1 vector on another LM of the same width and vocabulary (another seed)
    other = TextPolicy(*load_model(str(build_lm(work / "other_lm", pairs, args.seed + 1, args.lm_steps))))
    out["transfer"] = {"base": score(other), "with_vector_of_the_first_lm": score(other, cfg.out)}
    out["fine_tune"] = {}
    for lr in [float(x) for x in args.ft_lrs.split(",")]:
        ft = fresh()
        t0 = time.perf_counter()
        cfg = VectorConfig(layers=[args.layer], out=str(work / f"ft_{lr:g}"), lr=lr, **common)
        train_vectors(cfg, ft, train_items, progress=True, train_weights=True)
        n_params = sum(p.numel() for p in ft.parameters())
        out["fine_tune"][f"{lr:g}"] = {"held_out": score(ft), "train_s": round(time.perf_counter() - t0, 1),
                                       "trainable_parameters": n_params, "completions": kinds(ft)}  # fmt: skip
    best = max(out["fine_tune"].values(), key=lambda r: r["held_out"]["reward"])
    out["summary"] = {
        "base": out["base"]["reward"],
        "vector": out["vector"]["held_out"]["reward"],
        "fine_tune_best": best["held_out"]["reward"],
        "vector_gain_over_fine_tune_gain": (out["vector"]["held_out"]["reward"] - out["base"]["reward"])
        / max(best["held_out"]["reward"] - out["base"]["reward"], 1e-9),
    }
    Path(args.out).write_text(json.dumps(out, indent=1))
    print(json.dumps(out["summary"], indent=1))


if __name__ == "__main__":
    main()

"""One pass over a corpus: for every feature, its strongest positions, a uniform sample of its
activations, and a random sample of positions with all features' values there.

Streaming and memory-bounded: per chunk of positions the SAE's latents [n, F] update
- the top-`pool` activations per feature (merged with a top-k over [previous pool, chunk]);
- a reservoir of `reservoir` activating positions per feature (random keys, the same merge), from which
  quantile samples are drawn;
- a reservoir of `random` positions (any modality) with their dense latents, the source of
  non-activating negatives and of the random baseline;
- fire counts and activation sums (mean activation when active = the steering scale Z̄).
Every position keeps its modality, token id, speech time and (item, position) in a table.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import NamedTuple

import torch
from safetensors.torch import load_file, save_file
from tqdm import tqdm

from ttslens.sae.activations import SPECIAL
from ttslens.sae.files import atomic_path, atomic_write_json


class Collection(NamedTuple):
    items: torch.Tensor  # [I] corpus indices of the scanned items
    starts: torch.Tensor  # [I + 1] offsets of each item's positions in the table
    modality: torch.Tensor  # [P] int8 per position
    token_id: torch.Tensor  # [P] int32
    time: torch.Tensor  # [P] float32, speech start time (s), nan elsewhere
    item_of: torch.Tensor  # [P] int32 index into `items`
    pos: torch.Tensor  # [P] int32 position within its item's sequence
    top_act: torch.Tensor  # [F, M] descending, 0 where fewer than M activations
    top_idx: torch.Tensor  # [F, M] int64 position index, -1 where none
    res_act: torch.Tensor  # [F, R] activations of a uniform sample of each feature's active positions
    res_idx: torch.Tensor  # [F, R] int64, -1 where none
    fires: torch.Tensor  # [F] int64 active positions
    act_sum: torch.Tensor  # [F] float64 sum of activations
    rand_idx: torch.Tensor  # [S] int64 random positions
    rand_act: torch.Tensor  # [S, F] float16 latents there

    @property
    def n_positions(self) -> int:
        return int(self.modality.shape[0])

    @property
    def n_features(self) -> int:
        return int(self.fires.shape[0])

    def save(self, path: Path, meta: dict) -> None:
        with atomic_path(path) as tmp:
            save_file({k: v.contiguous() for k, v in self._asdict().items()}, str(tmp))
        atomic_write_json(path.with_suffix(".json"), meta)

    @classmethod
    def load(cls, path: Path) -> Collection:
        t = load_file(str(path))
        return cls(**{k: t[k] for k in cls._fields})


def _merge_top(vals_FM, idx_FM, new_vals_FN, new_idx_N, m):
    """Keep the m largest of [current, new] per row."""
    vals = torch.cat([vals_FM, new_vals_FN], dim=1)
    idx = torch.cat([idx_FM, new_idx_N.expand(new_vals_FN.shape[0], -1)], dim=1)
    top = vals.topk(min(m, vals.shape[1]), dim=1)
    return top.values, idx.gather(1, top.indices)


BATCH = 8  # corpus items per teacher-forced pass


@torch.no_grad()
def collect(
    backbone,
    sae,
    layer: int,
    items: list,
    corpus_index: list[int],
    pool: int = 200,
    reservoir: int = 128,
    random: int = 4000,
    chunk: int = 4096,
    skip_special: bool = False,
    seed: int = 0,
    progress: bool = True,
) -> Collection:
    """Scan `items` (CorpusItem list; `corpus_index` their ids in the corpus) teacher-forced through
    `backbone` and `sae` at `layer`."""
    F = sae.cfg.d_sae
    sae_device = next(sae.parameters()).device
    gen = torch.Generator().manual_seed(seed)
    top_act, top_idx = torch.zeros(F, 0), torch.zeros(F, 0, dtype=torch.long)
    res_key, res_act, res_idx = torch.zeros(F, 0), torch.zeros(F, 0), torch.zeros(F, 0, dtype=torch.long)
    rnd_key, rnd_idx, rnd_act = torch.zeros(0), torch.zeros(0, dtype=torch.long), torch.zeros(0, F)
    fires, act_sum = torch.zeros(F, dtype=torch.long), torch.zeros(F, dtype=torch.float64)
    table: dict[str, list[torch.Tensor]] = {k: [] for k in ("modality", "token_id", "time", "item_of", "pos")}
    starts = [0]
    buf_x: list[torch.Tensor] = []
    buf_keep: list[torch.Tensor] = []

    def flush() -> None:
        nonlocal top_act, top_idx, res_key, res_act, res_idx, rnd_key, rnd_idx, rnd_act, fires, act_sum
        if not buf_x:
            return
        x_ND, keep_N = torch.cat(buf_x), torch.cat(buf_keep)
        buf_x.clear()
        buf_keep.clear()
        n0 = starts[-1] - x_ND.shape[0]
        idx_N = torch.arange(n0, n0 + x_ND.shape[0])
        x_ND, idx_N = x_ND[keep_N], idx_N[keep_N]
        if not len(idx_N):
            return
        acts_NF = sae.encode(x_ND.float().to(sae_device)).clamp_min(0).cpu()
        active_NF = acts_NF > 0
        fires += active_NF.sum(0)
        act_sum += acts_NF.sum(0, dtype=torch.float64)
        acts_FN = acts_NF.T
        top_act, top_idx = _merge_top(top_act, top_idx, acts_FN, idx_N[None], pool)
        keys_FN = torch.rand(acts_FN.shape, generator=gen).masked_fill_(~active_NF.T, -1.0)
        k = torch.cat([res_key, keys_FN], 1).topk(min(reservoir, res_key.shape[1] + keys_FN.shape[1]), dim=1)
        res_act = torch.cat([res_act, acts_FN], 1).gather(1, k.indices)
        res_idx = torch.cat([res_idx, idx_N[None].expand(F, -1)], 1).gather(1, k.indices)
        res_key = k.values
        keys_N = torch.rand(len(idx_N), generator=gen)
        r = torch.cat([rnd_key, keys_N]).topk(min(random, len(rnd_key) + len(keys_N)))
        rnd_act = torch.cat([rnd_act, acts_NF])[r.indices]
        rnd_idx = torch.cat([rnd_idx, idx_N])[r.indices]
        rnd_key = r.values

    n_buf = 0
    bar = tqdm(total=len(items), desc="collect activations", unit="utt", disable=not progress)
    for j0 in range(0, len(items), BATCH):  # one padded pass per BATCH items, stopped after `layer`
        group = items[j0 : j0 + BATCH]
        tfs = backbone.teacher_forced_batch(
            [(it.text, it.tokens, it.instruct) for it in group], layers=[layer], logits=False
        )
        for j, tf in enumerate(tfs, j0):
            seq, n = tf.sequence, len(tf.sequence)
            table["modality"].append(seq.modality)
            table["token_id"].append(seq.token_ids.int())
            table["time"].append(seq.times.float())
            table["item_of"].append(torch.full((n,), j, dtype=torch.int32))
            table["pos"].append(torch.arange(n, dtype=torch.int32))
            starts.append(starts[-1] + n)
            buf_x.append(tf.hidden[layer])
            buf_keep.append(seq.modality != SPECIAL if skip_special else torch.ones(n, dtype=torch.bool))
            n_buf += n
            if n_buf >= chunk:
                flush()
                n_buf = 0
        bar.update(len(group))
    bar.close()
    flush()
    res_act = torch.where(res_key >= 0, res_act, torch.zeros(()))
    res_idx = torch.where(res_key >= 0, res_idx, torch.full((), -1))
    top_idx = torch.where(top_act > 0, top_idx, torch.full((), -1))
    return Collection(
        items=torch.tensor(corpus_index, dtype=torch.long),
        starts=torch.tensor(starts, dtype=torch.long),
        **{k: torch.cat(v) for k, v in table.items()},
        top_act=top_act.float(),
        top_idx=top_idx,
        res_act=res_act.float(),
        res_idx=res_idx,
        fires=fires,
        act_sum=act_sum,
        rand_idx=rnd_idx,
        rand_act=rnd_act.half(),
    )


def load_or_collect(path: Path, meta: dict, make) -> Collection:
    """The collection at `path` if it was made with `meta`, else `make()` saved there."""
    side = path.with_suffix(".json")
    if path.exists() and side.exists():
        try:
            if json.loads(side.read_text()) == json.loads(json.dumps(meta)):
                return Collection.load(path)
        except (ValueError, KeyError, OSError):
            pass  # unreadable: collect again
    col = make()
    col.save(path, meta)
    return col

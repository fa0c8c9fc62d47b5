"""Where activations come from, and the shuffled batch stream the trainer reads.

A *source* produces blocks of rows: `acts` [n, d] plus per-row metadata tensors (e.g. `modality`
int8: 0 text, 1 speech, 2 special). Every block starts from a small `state` dict, so a stream can
be re-created exactly at a block boundary (that is how `--resume` is bit-identical).

- `CachedActivations`: a safetensors file, or a directory of shards, holding `activations` [N, d]
  and optional companions with the same first dimension. A directory written by `ttslens harvest`
  is read through its manifest.json: exactly the shards it lists.
- `ModelActivations` (in `ttslens.sae.lm.harvest`): a Hugging Face causal LM + a text dataset, hooked at a layer.

`BatchStream` shuffles each block with a generator seeded by (seed, rank, block) and yields
batches; its position is (source state at block start, block number, batches taken).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple, Protocol

import torch
from safetensors import safe_open

from ttslens.sae.errors import BadInput, MissingFile

MODALITIES = ("text", "speech", "special")
TEXT, SPEECH, SPECIAL = 0, 1, 2
ACTS_KEY = "activations"
MANIFEST = "manifest.json"


class Block(NamedTuple):
    acts: torch.Tensor  # [n, d]
    meta: dict[str, torch.Tensor]  # each [n]
    next_state: dict  # the state that produces the following block


class ActivationSource(Protocol):
    d: int

    def block(self, state: dict, n_rows: int) -> Block: ...

    def start_state(self, rank: int, world: int) -> dict: ...


def check_finite(acts: torch.Tensor, where: str) -> None:
    if not torch.isfinite(acts).all():
        bad = (~torch.isfinite(acts)).any(1).nonzero()[:3].flatten().tolist()
        raise BadInput(f"activations contain NaN/Inf ({where}, e.g. rows {bad}); drop or re-harvest them")


class CachedActivations:
    """Rows of one safetensors file or of a directory of shards, read lazily block by block."""

    def __init__(self, path: str | Path, window: tuple[int, int] | None = None) -> None:
        """`window=(lo, hi)`: use only rows lo..hi-1 (e.g. to hold out the tail for evaluation)."""
        self.path = Path(path)
        listed_rows = None  # rows a harvest manifest records
        if (self.path / MANIFEST).exists():
            files, listed_rows = self._manifest_shards()
        elif self.path.is_dir():
            files = sorted(self.path.glob("*.safetensors"))
        elif self.path.exists():
            files = [self.path]
        else:
            raise MissingFile(f"activations not found: {self.path} (write them with `ttslens harvest`)")
        if not files:
            raise MissingFile(f"no *.safetensors shards in {self.path} (write them with `ttslens harvest`)")
        self.files, self.starts = files, [0]
        self.d = 0
        self.meta_keys: list[str] = []
        for f in files:
            try:
                with safe_open(str(f), "pt") as h:
                    keys = list(h.keys())
                    if ACTS_KEY not in keys:
                        raise BadInput(f"{f} holds no tensor named '{ACTS_KEY}' (found {keys[:5]})")
                    shape = h.get_slice(ACTS_KEY).get_shape()
                    dtype = h.get_slice(ACTS_KEY).get_dtype()
                    metas = [k for k in keys if k != ACTS_KEY and h.get_slice(k).get_shape()[:1] == shape[:1]]
            except ValueError:
                raise
            except Exception as e:  # safetensors raises its own error types for corrupt files
                raise BadInput(f"cannot read activations file {f}: {e} (corrupt or truncated? re-harvest it)") from e
            if len(shape) != 2 or dtype not in ("F32", "F16", "BF16"):
                raise BadInput(f"{f}: '{ACTS_KEY}' must be float32/16/bf16 [N, d], got {dtype} {shape}")
            if self.d and shape[1] != self.d:
                raise BadInput(f"{f}: width {shape[1]} differs from the other shards ({self.d})")
            self.d = shape[1]
            self.meta_keys = metas if f == files[0] else [k for k in self.meta_keys if k in metas]
            self.starts.append(self.starts[-1] + shape[0])
        self.total_rows = self.starts[-1]
        if listed_rows is not None and self.total_rows != listed_rows:
            raise BadInput(
                f"{self.path}: its shards hold {self.total_rows} rows, {MANIFEST} says {listed_rows}; re-harvest it"
            )
        if self.total_rows == 0:
            raise BadInput(f"{self.path} holds no activation rows")
        self.lo, hi = window or (0, self.total_rows)
        self.n_rows = hi - self.lo

    def _manifest_shards(self) -> tuple[list[Path], int]:
        """The shards a harvest's manifest lists (a stray or half-written file beside them is never read)."""
        where = self.path / MANIFEST
        try:
            manifest = json.loads(where.read_text())
            names, rows = list(manifest["shards"]), int(manifest["rows"])
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
            raise BadInput(f"{where} is not a harvest manifest ({e}); re-harvest into a new directory") from e
        files = [self.path / n for n in names]
        missing = [f.name for f in files if not f.exists()]
        if missing:
            raise MissingFile(f"{where} lists shards that are missing ({', '.join(missing[:3])}); re-harvest them")
        return files, rows

    def start_state(self, rank: int = 0, world: int = 1) -> dict:
        return {"block": rank, "stride": world}

    def rows(self, lo: int, hi: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Rows [lo, hi) of the concatenated shards (no wrap-around), as float32."""
        acts, meta = [], {k: [] for k in self.meta_keys}
        for i, f in enumerate(self.files):
            a, b = max(lo, self.starts[i]), min(hi, self.starts[i + 1])
            if a >= b:
                continue
            with safe_open(str(f), "pt") as h:
                acts.append(h.get_slice(ACTS_KEY)[a - self.starts[i] : b - self.starts[i]].float())
                for k in self.meta_keys:
                    meta[k].append(h.get_slice(k)[a - self.starts[i] : b - self.starts[i]])
        out = torch.cat(acts)
        check_finite(out, f"{self.path} rows {lo}..{hi}")
        return out, {k: torch.cat(v) for k, v in meta.items()}

    def block(self, state: dict, n_rows: int) -> Block:
        """Block number state['block'] of n_rows rows; the data wrap around (epochs)."""
        n_rows = min(n_rows, self.n_rows)
        lo = (state["block"] * n_rows) % self.n_rows
        hi = lo + n_rows
        acts, meta = self.rows(self.lo + lo, self.lo + min(hi, self.n_rows))
        if hi > self.n_rows:
            a2, m2 = self.rows(self.lo, self.lo + hi - self.n_rows)
            acts = torch.cat([acts, a2])
            meta = {k: torch.cat([meta[k], m2[k]]) for k in meta}
        return Block(acts, meta, {"block": state["block"] + state["stride"], "stride": state["stride"]})


class StreamState(NamedTuple):
    source: dict
    block_no: int
    taken: int  # batches already yielded from this block


class BatchStream:
    """Shuffled batches of `batch_size` rows from a source, block by block (memory: one block)."""

    def __init__(
        self,
        source: ActivationSource,
        batch_size: int,
        block_rows: int,
        seed: int,
        rank: int = 0,
        world: int = 1,
        exclude_special: bool = False,
        state: StreamState | None = None,
        modality: str = "all",
    ) -> None:
        self.source, self.batch_size, self.seed, self.rank = source, batch_size, seed, rank
        self.block_rows = max(batch_size, block_rows // batch_size * batch_size)
        self.exclude_special = exclude_special
        if modality != "all" and modality not in MODALITIES:
            raise BadInput(f"unknown --modality {modality!r}: use all, {', '.join(MODALITIES)}")
        self.modality = modality
        self.state = state or StreamState(source.start_state(rank, world), 0, 0)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, dict[str, torch.Tensor]]]:
        while True:
            src_state, block_no, taken = self.state
            acts, meta, next_state = self.source.block(src_state, self.block_rows)
            if self.exclude_special and "modality" in meta:
                keep = meta["modality"] != SPECIAL
                acts, meta = acts[keep], {k: v[keep] for k, v in meta.items()}
            if self.modality != "all":
                if "modality" not in meta:
                    raise BadInput(f"--modality {self.modality}: these activations record no modality (use all)")
                keep = meta["modality"] == MODALITIES.index(self.modality)
                acts, meta = acts[keep], {k: v[keep] for k, v in meta.items()}
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.rank * 10_007 + block_no)
            perm = torch.randperm(acts.shape[0], generator=g)
            n_batches = acts.shape[0] // self.batch_size
            if n_batches == 0:
                raise BadInput(
                    f"a data block holds {acts.shape[0]} usable rows, fewer than one batch of {self.batch_size}; "
                    "lower --batch-size or provide more data"
                )
            for i in range(taken, n_batches):
                sel = perm[i * self.batch_size : (i + 1) * self.batch_size]
                self.state = StreamState(src_state, block_no, i + 1)
                yield acts[sel], {k: v[sel] for k, v in meta.items()}
            self.state = StreamState(next_state, block_no + 1, 0)


def take_tokens(batches, n_tokens: int):
    """The first batches of an (endless) stream covering at least n_tokens rows."""
    seen = 0
    for x, meta in batches:
        if seen >= n_tokens:
            return
        yield x, meta
        seen += x.shape[0]


def mean_norm(batches: Iterator[tuple[torch.Tensor, dict]], n_batches: int) -> float:
    """E||x|| over the first n batches (for the sqrt(d) activation scaling)."""
    norms = [x.norm(dim=1).mean().item() for x, _ in (next(batches) for _ in range(n_batches))]
    return sum(norms) / max(1, len(norms)) or 1.0


def geometric_median(x_ND: torch.Tensor, iters: int = 50, eps: float = 1e-6) -> torch.Tensor:
    """Weiszfeld iterations, started at the mean."""
    y = x_ND.mean(0)
    for _ in range(iters):
        w = 1.0 / (x_ND - y).norm(dim=1).clamp_min(eps)
        y_new = (w[:, None] * x_ND).sum(0) / w.sum()
        if (y_new - y).norm() < eps * max(1.0, math.sqrt(x_ND.shape[1])):
            return y_new
        y = y_new
    return y

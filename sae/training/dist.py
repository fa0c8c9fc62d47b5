"""torch.distributed plumbing: the same training code runs alone or under `torchrun`."""

from __future__ import annotations

import os
from typing import NamedTuple

import torch
import torch.distributed as tdist


class DistInfo(NamedTuple):
    rank: int
    world: int
    device: str

    @property
    def main(self) -> bool:
        return self.rank == 0


def setup(device: str) -> DistInfo:
    """Join the process group when launched by torchrun (gloo on CPU, nccl on CUDA)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return DistInfo(0, 1, device)
    if device.startswith("cuda"):
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        device = f"cuda:{local}"
    if not tdist.is_initialized():
        tdist.init_process_group("nccl" if device.startswith("cuda") else "gloo")
    return DistInfo(tdist.get_rank(), tdist.get_world_size(), device)


def all_sum(t: torch.Tensor) -> torch.Tensor:
    if tdist.is_initialized():
        tdist.all_reduce(t)
    return t


def broadcast_module(module: torch.nn.Module) -> None:
    if tdist.is_initialized():
        for t in list(module.parameters()) + list(module.buffers()):
            tdist.broadcast(t.data, 0)


def comm_device() -> torch.device:
    """Where collective tensors must live: the GPU for nccl, the CPU for gloo."""
    if tdist.is_initialized() and tdist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def broadcast_float(x: float) -> float:
    if not tdist.is_initialized():
        return x
    t = torch.tensor([x], dtype=torch.float64, device=comm_device())
    tdist.broadcast(t, 0)
    return float(t)


def broadcast_tensor(t: torch.Tensor) -> torch.Tensor:
    """Rank 0's value of `t` (a copy, on t's device) on every process."""
    if not tdist.is_initialized():
        return t.detach().clone()
    c = t.detach().to(comm_device(), copy=True)
    tdist.broadcast(c, 0)
    return c.to(t.device)


def barrier() -> None:
    if tdist.is_initialized():
        tdist.barrier()


def teardown() -> None:
    """End of a torchrun job: every rank done, then leave the process group (left to interpreter exit, gloo's
    teardown has aborted a finished run with SIGABRT)."""
    if tdist.is_initialized():
        tdist.barrier()
        tdist.destroy_process_group()


def check_replicas(module: torch.nn.Module) -> None:
    """Fail loudly if data-parallel replicas drifted apart (they must hold identical weights)."""
    if not tdist.is_initialized():
        return
    sums = torch.stack([p.detach().double().sum() for p in module.parameters()])
    lo, hi = sums.clone(), sums.clone()
    tdist.all_reduce(lo, tdist.ReduceOp.MIN)
    tdist.all_reduce(hi, tdist.ReduceOp.MAX)
    if not torch.equal(lo, hi):
        raise RuntimeError("data-parallel replicas hold different weights")

"""`--device` / `--dtype` for every command that runs a model: one parser for both."""

from __future__ import annotations

import functools

import torch

from ttslens.sae.errors import BadInput, EnvironmentProblem

DTYPES = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
    "float16": torch.float16,
    "fp16": torch.float16,
}


def resolve_device(device: str | torch.device | None = "cpu") -> torch.device:
    """ "cpu" (default), "cuda", "cuda:1", "mps", or "auto" (cuda when available, else cpu)."""
    if isinstance(device, torch.device):
        return device
    name = (device or "cpu").strip().lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise BadInput(f"unknown device {device!r}: use cpu, cuda, cuda:N or auto") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise EnvironmentProblem(f"device {device!r} asked for but this torch sees no CUDA GPU: use --device cpu")
    return dev


def resolve_dtype(dtype: str | torch.dtype | None = "float32") -> torch.dtype:
    """ "float32" (default), "bfloat16" / "bf16", "float16" / "fp16"."""
    if isinstance(dtype, torch.dtype):
        return dtype
    key = (dtype or "float32").strip().lower()
    if key not in DTYPES:
        raise BadInput(f"unknown dtype {dtype!r}: use float32, bfloat16 or float16")
    return DTYPES[key]


def bf16_native(device: str | torch.device = "cpu") -> bool:
    """Whether bf16 matrix products run natively (much faster than fp32) on `device`: a CUDA GPU that
    supports bf16, or a CPU with AMX or avx512_bf16 (Linux: read from /proc/cpuinfo)."""
    return _bf16_native(torch.device(device).type)


@functools.cache
def _bf16_native(kind: str) -> bool:
    if kind == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if kind != "cpu":
        return False
    try:
        with open("/proc/cpuinfo") as f:
            flags = f.read()
    except OSError:
        return False
    return "amx_bf16" in flags or "avx512_bf16" in flags


def fused_ok(device: str | torch.device) -> bool:
    """Whether torch's fused Adam / AdamW kernels run on `device` (CPU and CUDA): one pass over the
    parameters instead of a dozen (on this 2-core CPU, 22 ms instead of 200 ms for 8.4M parameters)."""
    return torch.device(device).type in ("cpu", "cuda")

"""Shared helpers of the ragged ops: cu_seqlens validation, token→sequence maps, backend choice."""

from __future__ import annotations

import importlib.util
import os

import torch
from torch import Tensor

BACKENDS = ("auto", "torch", "triton")
TRITON_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
HAS_TRITON = importlib.util.find_spec("triton") is not None
# Read once, as triton.jit does when the kernel modules are imported.
TRITON_INTERPRET = os.environ.get("TRITON_INTERPRET", "0") == "1"


def check_cu_seqlens(cu_seqlens: Tensor, total: int, name: str = "cu_seqlens") -> None:
    """Raise ValueError unless `cu_seqlens` is int32 `[B+1]`, starts at 0, never decreases, ends at `total`.

    Runs on the host (one device sync): Triton's interpreter never fires device asserts.
    """
    if not isinstance(cu_seqlens, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(cu_seqlens).__name__}")
    if cu_seqlens.dtype != torch.int32:
        raise ValueError(f"{name} must be int32, got {cu_seqlens.dtype}")
    if cu_seqlens.dim() != 1 or cu_seqlens.numel() == 0:
        raise ValueError(f"{name} must be 1-D with B+1 >= 1 entries, got shape {tuple(cu_seqlens.shape)}")
    cu = cu_seqlens.tolist()
    if cu[0] != 0:
        raise ValueError(f"{name}[0] must be 0, got {cu[0]}")
    for i in range(1, len(cu)):
        if cu[i] < cu[i - 1]:
            raise ValueError(
                f"{name} must be non-decreasing: {name}[{i}]={cu[i]} < {name}[{i - 1}]={cu[i - 1]}"
            )
    if cu[-1] != total:
        raise ValueError(f"{name}[-1] = {cu[-1]} must equal the number of tokens T = {total}")


def seq_lengths(cu_seqlens: Tensor) -> Tensor:
    """Length of every sequence: `[B]` int64."""
    return (cu_seqlens[1:] - cu_seqlens[:-1]).long()


def segment_ids(cu_seqlens: Tensor, total: int) -> Tensor:
    """Sequence index of every token: `[T]` int64 (empty sequences own no token)."""
    ids = torch.arange(cu_seqlens.numel() - 1, device=cu_seqlens.device)
    return torch.repeat_interleave(ids, seq_lengths(cu_seqlens), output_size=total)


def sequence_starts(cu_seqlens: Tensor, total: int) -> Tensor:
    """Mask of the first token of every non-empty sequence: `[T]` bool."""
    starts = torch.zeros(total + 1, dtype=torch.bool, device=cu_seqlens.device)
    starts[cu_seqlens[:-1].long()] = True
    return starts[:total]


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype an op computes in: float64 stays float64, everything else runs in float32."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def resolve_backend(backend: str, op: str, x: Tensor) -> str:
    """The implementation that will run for input `x`: "torch" or "triton".

    "auto" takes Triton for CUDA tensors in float32/float16/bfloat16 and the torch reference
    otherwise; "triton" insists (CUDA tensors, or any device under `TRITON_INTERPRET=1`).
    """
    if backend not in BACKENDS:
        raise ValueError(f"{op}: backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "auto":
        return "triton" if HAS_TRITON and x.is_cuda and x.dtype in TRITON_DTYPES else "torch"
    if backend == "triton":
        if not HAS_TRITON:
            raise RuntimeError(f"{op}: backend='triton' needs the triton package, which is not installed")
        if not (x.is_cuda or TRITON_INTERPRET):
            raise ValueError(
                f"{op}: backend='triton' needs CUDA tensors (got {x.device}); on CPU set "
                "TRITON_INTERPRET=1 before importing mmchunk to run the kernels in Triton's interpreter"
            )
        if x.dtype not in TRITON_DTYPES:
            raise ValueError(f"{op}: backend='triton' takes float32/float16/bfloat16, got {x.dtype}")
    return backend


def next_power_of_2(n: int) -> int:
    """Smallest power of two >= max(n, 1)."""
    return 1 << max(n - 1, 0).bit_length()


def row_major(x: Tensor) -> Tensor:
    """`x` itself when its last axis is contiguous (row strides are free), else a contiguous copy."""
    return x if x.stride(-1) == 1 else x.contiguous()

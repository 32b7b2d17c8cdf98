"""segment_reduce: one sum / mean / max per sequence of a packed batch."""

from __future__ import annotations

from torch import Tensor

from ._common import HAS_TRITON, check_cu_seqlens, compute_dtype, resolve_backend, segment_ids, seq_lengths

if HAS_TRITON:
    from .segment_reduce_triton import segment_reduce_triton

REDUCTIONS = ("mean", "sum", "max")


def segment_reduce_torch(values: Tensor, cu_seqlens: Tensor, reduce: str = "mean") -> Tensor:
    """Reference: reduce `values [T, ...]` over each sequence to `[B, ...]`; empty sequences give 0.

    Max sends the gradient to the maximum (split evenly between exact ties).
    """
    total, batch = values.shape[0], cu_seqlens.numel() - 1
    x = values.to(compute_dtype(values.dtype))
    ids = segment_ids(cu_seqlens, total)
    out = x.new_zeros((batch, *x.shape[1:]))
    if reduce == "max":
        index = ids.view(-1, *([1] * (x.dim() - 1))).expand_as(x)
        out = out.scatter_reduce(0, index, x, "amax", include_self=False)
    else:
        out = out.index_add(0, ids, x)
        if reduce == "mean":
            counts = seq_lengths(cu_seqlens).clamp(min=1).to(x.dtype)
            out = out / counts.view(-1, *([1] * (x.dim() - 1)))
    return out.to(values.dtype)


def segment_reduce(values: Tensor, cu_seqlens: Tensor, reduce: str = "mean", backend: str = "auto") -> Tensor:
    """Reduce each sequence of a packed batch: `values [T, ...]`, `cu_seqlens [B+1]` → `[B, ...]`.

    `reduce` is "mean", "sum" or "max"; an empty sequence gives zeros. Differentiable.
    """
    if reduce not in REDUCTIONS:
        raise ValueError(f"segment_reduce: reduce must be one of {REDUCTIONS}, got {reduce!r}")
    if resolve_backend(backend, "segment_reduce", values) == "triton":
        return segment_reduce_triton(values, cu_seqlens, reduce)
    check_cu_seqlens(cu_seqlens, values.shape[0])
    return segment_reduce_torch(values, cu_seqlens, reduce)

"""Ragged (packed, variable-length) ops over `values [T, ...]` + int32 `cu_seqlens [B+1]`.

Every op takes `backend="auto" | "torch" | "triton"`; the `*_torch` functions are the pure-PyTorch
references that define what each op computes, the `*_triton` functions the Triton kernels (used by
"auto" for CUDA tensors; on CPU through Triton's interpreter when `TRITON_INTERPRET=1` is set before
import), registered as `torch.library` custom ops so that `torch.compile` sees no graph break.
"""

from ._common import HAS_TRITON, check_cu_seqlens, segment_ids, seq_lengths, sequence_starts
from .boundary_probs import boundary_probs, boundary_probs_torch
from .ema_scan import ema_scan, ema_scan_torch, linear_scan
from .segment_reduce import segment_reduce, segment_reduce_torch
from .varlen_attention import varlen_attention, varlen_attention_torch

if HAS_TRITON:
    from .boundary_probs_triton import boundary_probs_triton
    from .ema_scan_triton import ema_scan_triton
    from .segment_reduce_triton import segment_reduce_triton
    from .varlen_attention_triton import varlen_attention_triton

__all__ = [
    "HAS_TRITON",
    "boundary_probs",
    "boundary_probs_torch",
    "boundary_probs_triton",
    "check_cu_seqlens",
    "ema_scan",
    "ema_scan_torch",
    "ema_scan_triton",
    "linear_scan",
    "segment_ids",
    "segment_reduce",
    "segment_reduce_torch",
    "segment_reduce_triton",
    "seq_lengths",
    "sequence_starts",
    "varlen_attention",
    "varlen_attention_torch",
    "varlen_attention_triton",
]

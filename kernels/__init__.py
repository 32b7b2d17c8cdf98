"""Ragged (packed, variable-length) ops over `values [T, ...]` + int32 `cu_seqlens [B+1]`.

Every op takes `backend="auto" | "torch" | "triton"`; the `*_torch` functions are the pure-PyTorch
references that define what each op computes.
"""

from ._common import check_cu_seqlens, segment_ids, seq_lengths, sequence_starts
from .boundary_probs import boundary_probs, boundary_probs_torch
from .ema_scan import ema_scan, ema_scan_torch, linear_scan
from .segment_reduce import segment_reduce, segment_reduce_torch
from .varlen_attention import varlen_attention, varlen_attention_torch

__all__ = [
    "boundary_probs",
    "boundary_probs_torch",
    "check_cu_seqlens",
    "ema_scan",
    "ema_scan_torch",
    "linear_scan",
    "segment_ids",
    "segment_reduce",
    "segment_reduce_torch",
    "seq_lengths",
    "sequence_starts",
    "varlen_attention",
    "varlen_attention_torch",
]

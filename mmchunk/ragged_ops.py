"""Sequence-level operations on Ragged batches: selecting sequences or rows, pooling each sequence."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from mmchunk.kernels import segment_ids, segment_reduce, seq_lengths
from mmchunk.ragged import METADATA, Ragged


def take_sequences(x: Ragged, index: Tensor) -> Ragged:
    """The sequences `index [B']` of `x`, in that order (repeats allowed), metadata included."""
    index = index.long()
    starts, lengths = x.cu_seqlens.long()[index], x.lengths[index]
    cu = F.pad(lengths.cumsum(0), (1, 0))
    total = int(cu[-1])
    owner = torch.repeat_interleave(torch.arange(len(index), device=index.device), lengths, output_size=total)
    rows = starts[owner] + torch.arange(total, device=index.device) - cu[owner]
    meta = {name: getattr(x, name)[rows] for name in METADATA if getattr(x, name) is not None}
    return Ragged(x.values[rows], cu.to(torch.int32), **meta)


def select_rows(x: Ragged, keep: Tensor) -> Ragged:
    """The rows where `keep [T]` (bool) holds, each staying in its sequence (which may become empty),
    metadata included."""
    lengths = torch.bincount(x.seq_ids[keep], minlength=x.batch_size)
    meta = {name: getattr(x, name)[keep] for name in METADATA if getattr(x, name) is not None}
    return Ragged(x.values[keep], F.pad(lengths.cumsum(0), (1, 0)).to(torch.int32), **meta)


def mean_pool(x: Ragged) -> Tensor:
    """Mean of every sequence `[B, D]` (zeros for an empty sequence)."""
    return segment_reduce(x.values, x.cu_seqlens, "mean")


def window_means(values: Tensor, cu_seqlens: Tensor, width: Tensor) -> tuple[Tensor, Tensor]:
    """Means over windows of `width [T]` tokens within each sequence of `values [T, D]`.

    Returns `ahead [T, D]` (token t and up to `width_t − 1` after it) and `behind [T, D]` (token t and
    up to `width_t − 1` before it); windows stop at their sequence's edges. Width 1 gives `values`.
    Prefix sums in float64, so long sequences keep float32 precision.
    """
    total = values.shape[0]
    lengths = (cu_seqlens[1:] - cu_seqlens[:-1]).long()
    owner = torch.repeat_interleave(
        torch.arange(len(lengths), device=values.device), lengths, output_size=total
    )
    start, end = cu_seqlens.long()[owner], cu_seqlens.long()[owner + 1]
    index = torch.arange(total, device=values.device)
    prefix = F.pad(values.double().cumsum(0), (0, 0, 1, 0))
    stop = torch.minimum(index + width, end)
    first = torch.maximum(index - width + 1, start)
    ahead = (prefix[stop] - prefix[index]) / (stop - index)[:, None]
    behind = (prefix[index + 1] - prefix[first]) / (index + 1 - first)[:, None]
    return ahead.to(values.dtype), behind.to(values.dtype)


def segment_quantile(values: Tensor, cu_seqlens: Tensor, q: float) -> Tensor:
    """The `q`-quantile of every sequence of `values [T]`: `[B]` (torch.quantile's linear
    interpolation; NaN for an empty sequence). One stable sort by value, then one by sequence."""
    if not 0.0 <= q <= 1.0:
        raise ValueError(f"segment_quantile: q must be in [0, 1], got {q}")
    lengths = seq_lengths(cu_seqlens).long()
    if values.numel() == 0:
        return values.new_full((len(lengths),), float("nan"))
    by_value = values.argsort(stable=True)
    ordered = values[by_value[segment_ids(cu_seqlens, values.shape[0])[by_value].argsort(stable=True)]]
    top = (lengths - 1).clamp(min=0)
    position = q * top.to(values.dtype)
    low = position.floor().long()
    start, last = cu_seqlens[:-1].long(), values.shape[0] - 1
    below = ordered[(start + low).clamp(max=last)]
    above = ordered[(start + (low + 1).clamp(max=top)).clamp(max=last)]
    quantile = below + (position - low.to(values.dtype)) * (above - below)
    return quantile.masked_fill(lengths == 0, float("nan"))

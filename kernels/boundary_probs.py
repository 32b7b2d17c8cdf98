"""boundary_probs: H-Net routing probabilities from the cosine of neighbouring query/key vectors."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from ._common import HAS_TRITON, check_cu_seqlens, compute_dtype, resolve_backend, sequence_starts

if HAS_TRITON:
    from .boundary_probs_triton import boundary_probs_triton


def boundary_probs_torch(q: Tensor, k: Tensor, cu_seqlens: Tensor) -> Tensor:
    """Reference: `p_t = clamp((1 − cos(q_t, k_{t−1})) / 2, 0, 1)`, `p = 1` at each sequence start.

    `q, k [T, D]` → `[T]` in `q`'s dtype, computed in float32. A zero vector has cosine 0 (p = 0.5).
    """
    dtype = compute_dtype(q.dtype)
    qn = F.normalize(q.to(dtype), dim=-1)
    kn = F.normalize(k.to(dtype), dim=-1)
    cos = (qn[1:] * kn[:-1]).sum(dim=-1)
    p = F.pad(((1.0 - cos) / 2.0).clamp(0.0, 1.0), (1, 0), value=1.0)[: q.shape[0]]
    return p.masked_fill(sequence_starts(cu_seqlens, q.shape[0]), 1.0).to(q.dtype)


def boundary_probs(q: Tensor, k: Tensor, cu_seqlens: Tensor, backend: str = "auto") -> Tensor:
    """Boundary probability of every token of a packed batch: `q, k [T, D]`, `cu_seqlens [B+1]` → `[T]`.

    `p_t = clamp((1 − cos(q_t, k_{t−1})) / 2, 0, 1)`; the first token of every sequence gets 1.
    Differentiable in `q` and `k`.
    """
    if q.dim() != 2 or q.shape != k.shape:
        raise ValueError(
            f"boundary_probs: q and k must both be [T, D], got {tuple(q.shape)} and {tuple(k.shape)}"
        )
    if resolve_backend(backend, "boundary_probs", q) == "triton":
        return boundary_probs_triton(q, k, cu_seqlens)
    check_cu_seqlens(cu_seqlens, q.shape[0])
    return boundary_probs_torch(q, k, cu_seqlens)

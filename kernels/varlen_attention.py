"""varlen_attention: softmax attention inside each sequence of a packed batch."""

from __future__ import annotations

import itertools

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor

from ._common import HAS_TRITON, check_cu_seqlens, compute_dtype, resolve_backend

if HAS_TRITON:
    from .varlen_attention_triton import varlen_attention_triton


def band_mask(length: int, causal: bool, window: int | None, device: torch.device) -> Tensor | None:
    """Which keys each query may see in one sequence: `[L, L]` bool (True = attend), None = all."""
    if window is None and not causal:
        return None
    offset = torch.arange(length, device=device)
    dist = offset[:, None] - offset[None, :]
    allowed = dist >= 0 if causal else torch.ones_like(dist, dtype=torch.bool)
    if window is not None:
        allowed &= dist.abs() <= window
    return allowed


def varlen_attention_torch(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    cu_seqlens: Tensor,
    causal: bool = False,
    window: int | None = None,
    scale: float | None = None,
) -> Tensor:
    """Reference: SDPA on each sequence in turn; `q, k [T, H, Dh]`, `v [T, H, Dv]` → `[T, H, Dv]`.

    Work and memory are per sequence (at most `L_max × L_max` scores), computed in float32.
    """
    dtype = compute_dtype(q.dtype)
    qf, kf, vf = (t.to(dtype).transpose(0, 1) for t in (q, k, v))
    bounds = cu_seqlens.tolist()
    outs = []
    for start, end in itertools.pairwise(bounds):
        if end == start:
            continue
        mask = band_mask(end - start, causal, window, q.device)
        outs.append(
            F.scaled_dot_product_attention(
                qf[:, start:end], kf[:, start:end], vf[:, start:end], attn_mask=mask, scale=scale
            )
        )
    out = torch.cat(outs, dim=1) if outs else vf[:, :0] * 0.0
    return out.transpose(0, 1).to(q.dtype)


def varlen_attention_bucketed(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    cu_seqlens: Tensor,
    causal: bool = False,
    window: int | None = None,
    scale: float | None = None,
) -> Tensor:
    """`varlen_attention_torch`'s result with one SDPA per distinct sequence length: the sequences
    of length L are gathered into `[n_L, H, L, D]` (no padding), so a batch of equal lengths is one
    call instead of a Python loop over sequences. The torch backend's path on CPU."""
    dtype = compute_dtype(q.dtype)
    qf, kf, vf = (t.to(dtype) for t in (q, k, v))
    starts, lengths = cu_seqlens[:-1].long(), (cu_seqlens[1:] - cu_seqlens[:-1]).long()
    out = vf.new_zeros(q.shape[0], q.shape[1], v.shape[2])
    for length in lengths.unique().tolist():
        if length == 0:
            continue
        rows = starts[lengths == length][:, None] + torch.arange(length, device=q.device)  # [n, L]
        qs, ks, vs = (rearrange(t[rows], "n l h d -> n h l d") for t in (qf, kf, vf))
        # plain causal attention goes through SDPA's is_causal (no L×L mask, flash path on CPU)
        mask = band_mask(length, causal, window, q.device) if window is not None else None
        o = F.scaled_dot_product_attention(
            qs, ks, vs, attn_mask=mask, is_causal=causal and window is None, scale=scale
        )
        out = out.index_put((rows.flatten(),), rearrange(o.to(dtype), "n h l d -> (n l) h d"))
    return out.to(q.dtype)


def varlen_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    cu_seqlens: Tensor,
    causal: bool = False,
    window: int | None = None,
    scale: float | None = None,
    backend: str = "auto",
) -> Tensor:
    """Attention within each sequence of a packed batch: `q, k [T, H, Dh]`, `v [T, H, Dv]` → `[T, H, Dv]`.

    A token attends only to tokens of its own sequence; `causal` hides later keys; `window=w` keeps
    keys at distance ≤ w (to the left only when causal); `scale` defaults to `1/sqrt(Dh)`. No
    attention matrix spans more than one sequence. Differentiable in `q`, `k`, `v`.
    """
    if q.dim() != 3 or k.shape != q.shape or v.dim() != 3 or v.shape[:2] != q.shape[:2]:
        raise ValueError(
            "varlen_attention: q, k must be [T, H, Dh] and v [T, H, Dv], got "
            f"{tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}"
        )
    if window is not None and (isinstance(window, bool) or not isinstance(window, int) or window < 0):
        raise ValueError(f"varlen_attention: window must be a non-negative int or None, got {window!r}")
    if resolve_backend(backend, "varlen_attention", q) == "triton":
        return varlen_attention_triton(q, k, v, cu_seqlens, causal, window, scale)
    check_cu_seqlens(cu_seqlens, q.shape[0])
    return varlen_attention_bucketed(q, k, v, cu_seqlens, causal, window, scale)

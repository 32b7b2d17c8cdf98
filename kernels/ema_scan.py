"""ema_scan: the per-sequence EMA / gated linear recurrence h_t = p_t·x_t + (1 − p_t)·h_{t−1}."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor
from torch.autograd.function import once_differentiable

from ._common import HAS_TRITON, check_cu_seqlens, compute_dtype, resolve_backend, sequence_starts

if HAS_TRITON:
    from .ema_scan_triton import ema_scan_triton

DIRECT_SCAN_MAX = 64


def _sequential_scan(a: Tensor, b: Tensor, reverse: bool) -> Tensor:
    """`linear_scan` one position per step, for short inputs."""
    h = torch.empty_like(b)
    state = b.new_zeros(b.shape[1:])
    for t in reversed(range(b.shape[0])) if reverse else range(b.shape[0]):
        state = torch.addcmul(b[t], a[t], state)
        h[t] = state
    return h


def linear_scan(a: Tensor, b: Tensor, reverse: bool = False) -> Tensor:
    """First-order linear recurrence along the first axis: `a [T, 1|D]`, `b [T, D]` → `h [T, D]`.

    Forward: `h_t = a_t·h_{t−1} + b_t` from `h_{−1} = 0`; reverse: `h_t = a_t·h_{t+1} + b_t` from
    `h_T = 0`. Chunked scan: positions are cut into ~√T chunks; each step of the within-chunk
    recurrence runs on all chunks and channels at once, the carries between chunks come from the
    same scan one level up, and one fix-up pass adds them in. O(√T) Python steps, O(T·D) work.
    """
    total = b.shape[0]
    if total <= DIRECT_SCAN_MAX:
        return _sequential_scan(a, b, reverse)
    length = math.isqrt(total - 1) + 1
    pad = -total % length
    a = rearrange(F.pad(a, (0, 0, 0, pad)), "(n l) d -> n l d", l=length)
    b = rearrange(F.pad(b, (0, 0, 0, pad)), "(n l) d -> n l d", l=length)
    h = torch.empty_like(b)
    decay = torch.empty_like(a)
    first, last, step = (length - 1, 0, 1) if reverse else (0, length - 1, -1)
    h[:, first] = b[:, first]
    decay[:, first] = a[:, first]
    for i in range(first - step, last - step, -step):
        torch.addcmul(b[:, i], a[:, i], h[:, i + step], out=h[:, i])
        torch.mul(decay[:, i + step], a[:, i], out=decay[:, i])
    carry = linear_scan(decay[:, last], h[:, last], reverse)
    if reverse:
        h[:-1] += decay[:-1] * carry[1:, None]
    else:
        h[1:] += decay[1:] * carry[:-1, None]
    return rearrange(h, "n l d -> (n l) d")[:total]


class _EmaScan(torch.autograd.Function):
    """Forward scan; the backward is the reverse (adjoint) scan of the incoming gradient."""

    @staticmethod
    def forward(ctx, x: Tensor, p: Tensor, starts: Tensor) -> Tensor:
        dtype = compute_dtype(x.dtype)
        xf, pf = x.to(dtype), p.to(dtype)
        decay = (1.0 - pf).masked_fill_(starts[:, None], 0.0)
        h = linear_scan(decay, pf * xf)
        ctx.save_for_backward(xf, pf, decay, h, starts)
        ctx.dtypes = (x.dtype, p.dtype)
        return h.to(x.dtype)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: Tensor) -> tuple[Tensor | None, Tensor | None, None]:
        xf, pf, decay, h, starts = ctx.saved_tensors
        decay_next = F.pad(decay[1:], (0, 0, 0, 1))
        grad_h = linear_scan(decay_next, grad.to(xf.dtype), reverse=True)
        grad_x = grad_p = None
        if ctx.needs_input_grad[0]:
            grad_x = (grad_h * pf).to(ctx.dtypes[0])
        if ctx.needs_input_grad[1]:
            innovation = xf.clone()
            innovation[1:] -= h[:-1]
            innovation[starts] = xf[starts]
            grad_p = innovation.mul_(grad_h)
            if pf.shape[1] == 1:
                grad_p = grad_p.sum(dim=1, keepdim=True)
            grad_p = grad_p.to(ctx.dtypes[1])
        return grad_x, grad_p, None


def ema_scan_torch(x: Tensor, p: Tensor, cu_seqlens: Tensor) -> Tensor:
    """Reference: `h_t = p_t·x_t + (1 − p_t)·h_{t−1}`, `h = 0` before each sequence; `x [T, D]`,
    `p [T, 1]` or `[T, D]` → `[T, D]`, computed in float32 (float64 stays float64)."""
    starts = sequence_starts(cu_seqlens, x.shape[0])
    return _EmaScan.apply(x, p, starts)


def ema_scan(x: Tensor, p: Tensor, cu_seqlens: Tensor, backend: str = "auto") -> Tensor:
    """EMA over each sequence of a packed batch: `x [T, D]`, rates `p [T]`, `[T, 1]` or `[T, D]`.

    `h_t = p_t·x_t + (1 − p_t)·h_{t−1}` with `h = 0` before every sequence's first token. One rate
    per token is H-Net's dechunk smoothing; one rate per channel is a gated linear recurrence
    (minGRU / HGRN style). Returns `[T, D]`; differentiable in `x` and `p`.
    """
    if x.dim() != 2:
        raise ValueError(f"ema_scan: x must be [T, D], got shape {tuple(x.shape)}")
    rates = p.unsqueeze(-1) if p.dim() == 1 else p
    if rates.dim() != 2 or rates.shape[0] != x.shape[0] or rates.shape[1] not in (1, x.shape[1]):
        raise ValueError(
            f"ema_scan: p must be [T], [T, 1] or [T, D] for x {tuple(x.shape)}, got {tuple(p.shape)}"
        )
    if resolve_backend(backend, "ema_scan", x) == "triton":
        return ema_scan_triton(x, rates, cu_seqlens)
    check_cu_seqlens(cu_seqlens, x.shape[0])
    return ema_scan_torch(x, rates, cu_seqlens)

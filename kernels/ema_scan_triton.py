"""ema_scan in Triton: a blocked associative scan per (sequence, channel block) with a carried state."""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

from ._common import check_cu_seqlens, next_power_of_2, row_major

BLOCK_T = 32


@triton.jit
def _combine(a1, b1, a2, b2):
    """Compose h ↦ a1·h + b1, then h ↦ a2·h + b2."""
    return a1 * a2, b1 * a2 + b2


@triton.jit
def _ema_fwd(
    X,
    P,
    H,
    CU,
    D,
    stride_x,
    stride_p,
    PER_CHANNEL: tl.constexpr,
    BLOCK_T: tl.constexpr,
    BLOCK_D: tl.constexpr,
):
    seq = tl.program_id(0)
    cols = tl.program_id(1) * BLOCK_D + tl.arange(0, BLOCK_D)
    col_ok = cols < D
    start = tl.load(CU + seq)
    end = tl.load(CU + seq + 1)
    rows = tl.arange(0, BLOCK_T)
    carry = tl.zeros([BLOCK_D], tl.float32)
    for t0 in range(start, end, BLOCK_T):
        r = t0 + rows
        row_ok = r < end
        ok = row_ok[:, None] & col_ok[None, :]
        r64 = r.to(tl.int64)
        x = tl.load(X + r64[:, None] * stride_x + cols[None, :], mask=ok, other=0.0).to(tl.float32)
        if PER_CHANNEL:
            p = tl.load(P + r64[:, None] * stride_p + cols[None, :], mask=ok, other=0.0).to(tl.float32)
        else:
            p = tl.load(P + r64 * stride_p, mask=row_ok, other=0.0).to(tl.float32)[:, None]
        # Rows past the end are the identity map (a = 1, b = 0): the last row carries the state.
        a = tl.where(ok, 1.0 - p, 1.0)
        scan_a, scan_b = tl.associative_scan((a, p * x), 0, _combine)
        h = scan_b + scan_a * carry[None, :]
        tl.store(H + r64[:, None] * D + cols[None, :], h, mask=ok)
        carry = tl.sum(tl.where((rows == BLOCK_T - 1)[:, None], h, 0.0), axis=0)


@triton.jit
def _ema_bwd(
    X,
    P,
    H,
    G,
    DX,
    DP,
    CU,
    D,
    stride_x,
    stride_p,
    stride_dp,
    PER_CHANNEL: tl.constexpr,
    BLOCK_T: tl.constexpr,
    BLOCK_D: tl.constexpr,
):
    seq = tl.program_id(0)
    block = tl.program_id(1)
    cols = block * BLOCK_D + tl.arange(0, BLOCK_D)
    col_ok = cols < D
    start = tl.load(CU + seq)
    end = tl.load(CU + seq + 1)
    rows = tl.arange(0, BLOCK_T)
    carry = tl.zeros([BLOCK_D], tl.float32)
    # Walk the sequence backwards: gh_t = g_t + (1 − p_{t+1})·gh_{t+1}, a forward scan over reversed rows.
    for k0 in range(0, end - start, BLOCK_T):
        r = end - 1 - k0 - rows
        row_ok = r >= start
        ok = row_ok[:, None] & col_ok[None, :]
        nxt = r + 1
        nxt_ok = (nxt < end)[:, None] & ok
        r64 = r.to(tl.int64)
        n64 = nxt.to(tl.int64)
        g = tl.load(G + r64[:, None] * D + cols[None, :], mask=ok, other=0.0).to(tl.float32)
        if PER_CHANNEL:
            p = tl.load(P + r64[:, None] * stride_p + cols[None, :], mask=ok, other=0.0).to(tl.float32)
            p_next = tl.load(P + n64[:, None] * stride_p + cols[None, :], mask=nxt_ok, other=1.0)
        else:
            p = tl.load(P + r64 * stride_p, mask=row_ok, other=0.0).to(tl.float32)[:, None]
            p_next = tl.load(P + n64 * stride_p, mask=row_ok & (nxt < end), other=1.0)[:, None]
        a = tl.where(ok, 1.0 - p_next.to(tl.float32), 1.0)
        scan_a, scan_b = tl.associative_scan((a, g), 0, _combine)
        gh = scan_b + scan_a * carry[None, :]
        carry = tl.sum(tl.where((rows == BLOCK_T - 1)[:, None], gh, 0.0), axis=0)
        x = tl.load(X + r64[:, None] * stride_x + cols[None, :], mask=ok, other=0.0).to(tl.float32)
        prev_ok = (r > start)[:, None] & ok
        h_prev = tl.load(H + (r64 - 1)[:, None] * D + cols[None, :], mask=prev_ok, other=0.0)
        tl.store(DX + r64[:, None] * D + cols[None, :], (gh * p).to(DX.dtype.element_ty), mask=ok)
        dp = gh * (x - h_prev)
        if PER_CHANNEL:
            tl.store(DP + r64[:, None] * stride_dp + cols[None, :], dp, mask=ok)
        else:
            tl.store(DP + r64 * stride_dp + block, tl.sum(tl.where(ok, dp, 0.0), axis=1), mask=row_ok)


def _launch_shape(x: Tensor, cu_seqlens: Tensor) -> tuple[int, tuple[int, int]]:
    block_d = min(next_power_of_2(x.shape[1]), 64)
    return block_d, (cu_seqlens.numel() - 1, triton.cdiv(x.shape[1], block_d))


@torch.library.custom_op("mmchunk::ema_scan", mutates_args=())
def _ema_scan_op(x: Tensor, p: Tensor, cu_seqlens: Tensor) -> Tensor:
    """Forward: the states `h [T, D]` in float32 (kept for backward; the caller casts)."""
    check_cu_seqlens(cu_seqlens, x.shape[0])
    x, p = row_major(x), row_major(p)
    h = torch.empty(x.shape, dtype=torch.float32, device=x.device)
    block_d, grid = _launch_shape(x, cu_seqlens)
    if x.numel():
        _ema_fwd[grid](
            x, p, h, cu_seqlens, x.shape[1], x.stride(0), p.stride(0), p.shape[1] != 1, BLOCK_T, block_d
        )
    return h


@_ema_scan_op.register_fake
def _(x: Tensor, p: Tensor, cu_seqlens: Tensor) -> Tensor:
    return x.new_empty(x.shape, dtype=torch.float32)


@torch.library.custom_op("mmchunk::ema_scan_backward", mutates_args=())
def _ema_scan_backward_op(
    grad: Tensor, x: Tensor, p: Tensor, h: Tensor, cu_seqlens: Tensor
) -> tuple[Tensor, Tensor]:
    """Backward: gradients of `x [T, D]` and `p [T, 1 | D]` by the reverse scan."""
    x, p, grad = row_major(x), row_major(p), grad.contiguous()
    per_channel = p.shape[1] != 1
    block_d, grid = _launch_shape(x, cu_seqlens)
    dx = torch.empty(x.shape, dtype=x.dtype, device=x.device)
    dp = torch.empty(
        (x.shape[0], x.shape[1] if per_channel else grid[1]), dtype=torch.float32, device=x.device
    )
    if x.numel():
        _ema_bwd[grid](
            x,
            p,
            h,
            grad,
            dx,
            dp,
            cu_seqlens,
            x.shape[1],
            x.stride(0),
            p.stride(0),
            dp.stride(0),
            per_channel,
            BLOCK_T,
            block_d,
        )
    if not per_channel:
        dp = dp.sum(dim=1, keepdim=True)
    return dx, dp.to(p.dtype)


@_ema_scan_backward_op.register_fake
def _(grad: Tensor, x: Tensor, p: Tensor, h: Tensor, cu_seqlens: Tensor) -> tuple[Tensor, Tensor]:
    return torch.empty_like(x), torch.empty_like(p)


def _setup_context(ctx, inputs, output) -> None:
    x, p, cu_seqlens = inputs
    ctx.save_for_backward(x, p, output, cu_seqlens)


def _backward(ctx, grad: Tensor) -> tuple[Tensor, Tensor, None]:
    x, p, h, cu_seqlens = ctx.saved_tensors
    dx, dp = _ema_scan_backward_op(grad, x, p, h, cu_seqlens)
    return dx, dp, None


_ema_scan_op.register_autograd(_backward, setup_context=_setup_context)


def ema_scan_triton(x: Tensor, p: Tensor, cu_seqlens: Tensor) -> Tensor:
    """Triton `ema_scan`: `x [T, D]`, `p [T, 1]` or `[T, D]` → `[T, D]` (a `torch.library` custom op)."""
    return torch.ops.mmchunk.ema_scan(x, p, cu_seqlens).to(x.dtype)

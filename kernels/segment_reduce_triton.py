"""segment_reduce in Triton: one program per (sequence, feature block); backward scatters."""

from __future__ import annotations

import math

import torch
import triton
import triton.language as tl
from torch import Tensor

from ._common import check_cu_seqlens, next_power_of_2, row_major

BLOCK_T = 32
REDUCE_IDS = {"sum": 0, "mean": 1, "max": 2}


@triton.jit
def _segment_reduce_fwd(
    X, OUT, ARG, CU, F, stride_x, REDUCE: tl.constexpr, BLOCK_T: tl.constexpr, BLOCK_F: tl.constexpr
):
    seq = tl.program_id(0)
    cols = tl.program_id(1) * BLOCK_F + tl.arange(0, BLOCK_F)
    col_ok = cols < F
    start = tl.load(CU + seq)
    end = tl.load(CU + seq + 1)
    rows = tl.arange(0, BLOCK_T)
    if REDUCE == 2:
        acc = tl.full([BLOCK_F], float("-inf"), tl.float32)
        arg = tl.full([BLOCK_F], -1, tl.int32)
    else:
        acc = tl.zeros([BLOCK_F], tl.float32)
    for t0 in range(start, end, BLOCK_T):
        r = t0 + rows
        ok = (r < end)[:, None] & col_ok[None, :]
        ptr = X + r.to(tl.int64)[:, None] * stride_x + cols[None, :]
        if REDUCE == 2:
            x = tl.load(ptr, mask=ok, other=float("-inf")).to(tl.float32)
            block_max = tl.max(x, axis=0)
            block_arg = tl.min(tl.where(x == block_max[None, :], r[:, None], 2147483647), axis=0)
            arg = tl.where(block_max > acc, block_arg, arg)
            acc = tl.maximum(acc, block_max)
        else:
            x = tl.load(ptr, mask=ok, other=0.0).to(tl.float32)
            acc += tl.sum(x, axis=0)
    count = end - start
    if REDUCE == 1:
        acc = acc / tl.maximum(count, 1).to(tl.float32)
    if REDUCE == 2:
        acc = tl.where(count > 0, acc, 0.0)
        tl.store(ARG + seq.to(tl.int64) * F + cols, arg, mask=col_ok)
    tl.store(OUT + seq.to(tl.int64) * F + cols, acc.to(OUT.dtype.element_ty), mask=col_ok)


@triton.jit
def _segment_reduce_bwd(
    G, ARG, DX, CU, F, REDUCE: tl.constexpr, BLOCK_T: tl.constexpr, BLOCK_F: tl.constexpr
):
    seq = tl.program_id(0)
    cols = tl.program_id(1) * BLOCK_F + tl.arange(0, BLOCK_F)
    col_ok = cols < F
    start = tl.load(CU + seq)
    end = tl.load(CU + seq + 1)
    g = tl.load(G + seq.to(tl.int64) * F + cols, mask=col_ok, other=0.0).to(tl.float32)
    if REDUCE == 2:
        arg = tl.load(ARG + seq.to(tl.int64) * F + cols, mask=col_ok, other=-1)
        tl.store(DX + arg.to(tl.int64) * F + cols, g.to(DX.dtype.element_ty), mask=col_ok & (arg >= 0))
    else:
        if REDUCE == 1:
            g = g / tl.maximum(end - start, 1).to(tl.float32)
        rows = tl.arange(0, BLOCK_T)
        for t0 in range(start, end, BLOCK_T):
            r = t0 + rows
            ok = (r < end)[:, None] & col_ok[None, :]
            tile = tl.zeros([BLOCK_T, BLOCK_F], tl.float32) + g[None, :]
            tl.store(DX + r.to(tl.int64)[:, None] * F + cols[None, :], tile.to(DX.dtype.element_ty), mask=ok)


def _grid(cu_seqlens: Tensor, features: int, block_f: int) -> tuple[int, int]:
    return (cu_seqlens.numel() - 1, triton.cdiv(features, block_f))


@torch.library.custom_op("mmchunk::segment_reduce", mutates_args=())
def _segment_reduce_op(values: Tensor, cu_seqlens: Tensor, reduce: str) -> tuple[Tensor, Tensor]:
    """Forward: reduced `[B, ...]` and, for max, the argmax row `[B, F]` int32 (else empty)."""
    check_cu_seqlens(cu_seqlens, values.shape[0])
    features = math.prod(values.shape[1:])
    x = row_major(values.reshape(values.shape[0], features))
    batch = cu_seqlens.numel() - 1
    out = torch.empty((batch, features), dtype=values.dtype, device=values.device)
    is_max = reduce == "max"
    arg = torch.empty((batch, features) if is_max else (0,), dtype=torch.int32, device=values.device)
    block_f = min(next_power_of_2(features), 128)
    if batch and features:
        _segment_reduce_fwd[_grid(cu_seqlens, features, block_f)](
            x, out, arg, cu_seqlens, features, x.stride(0), REDUCE_IDS[reduce], BLOCK_T, block_f
        )
    return out.reshape(batch, *values.shape[1:]), arg


@_segment_reduce_op.register_fake
def _(values: Tensor, cu_seqlens: Tensor, reduce: str) -> tuple[Tensor, Tensor]:
    batch = cu_seqlens.shape[0] - 1
    features = math.prod(values.shape[1:])
    arg_shape = (batch, features) if reduce == "max" else (0,)
    return values.new_empty((batch, *values.shape[1:])), values.new_empty(arg_shape, dtype=torch.int32)


@torch.library.custom_op("mmchunk::segment_reduce_backward", mutates_args=())
def _segment_reduce_backward_op(
    grad: Tensor, arg: Tensor, cu_seqlens: Tensor, total: int, reduce: str
) -> Tensor:
    """Backward: `grad [B, ...]` → gradient of the values `[T, ...]`."""
    features = math.prod(grad.shape[1:])
    g = grad.reshape(grad.shape[0], features).contiguous()
    alloc = torch.zeros if reduce == "max" else torch.empty
    dx = alloc((total, features), dtype=grad.dtype, device=grad.device)
    block_f = min(next_power_of_2(features), 128)
    if grad.shape[0] and features:
        _segment_reduce_bwd[_grid(cu_seqlens, features, block_f)](
            g, arg, dx, cu_seqlens, features, REDUCE_IDS[reduce], BLOCK_T, block_f
        )
    return dx.reshape(total, *grad.shape[1:])


@_segment_reduce_backward_op.register_fake
def _(grad: Tensor, arg: Tensor, cu_seqlens: Tensor, total: int, reduce: str) -> Tensor:
    return grad.new_empty((total, *grad.shape[1:]))


def _setup_context(ctx, inputs, output) -> None:
    values, cu_seqlens, reduce = inputs
    ctx.save_for_backward(cu_seqlens, output[1])
    ctx.total, ctx.reduce = values.shape[0], reduce


def _backward(ctx, grad: Tensor, _grad_arg: Tensor) -> tuple[Tensor, None, None]:
    cu_seqlens, arg = ctx.saved_tensors
    return _segment_reduce_backward_op(grad, arg, cu_seqlens, ctx.total, ctx.reduce), None, None


_segment_reduce_op.register_autograd(_backward, setup_context=_setup_context)


def segment_reduce_triton(values: Tensor, cu_seqlens: Tensor, reduce: str = "mean") -> Tensor:
    """Triton `segment_reduce` (a `torch.library` custom op: compiles without graph breaks).

    Same contract as `segment_reduce_torch`, except that max sends the gradient to one argmax row
    (the first) where the reference splits it between exact ties.
    """
    return torch.ops.mmchunk.segment_reduce(values, cu_seqlens, reduce)[0]

"""boundary_probs in Triton: fused norms, neighbour cosine and sequence starts; backward recomputes."""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

from ._common import check_cu_seqlens, next_power_of_2, row_major, sequence_starts

BLOCK_T = 32
EPS = 1e-12  # F.normalize's default


@triton.jit
def _load_neighbours(Q, K, r64, row_ok, prev_ok, cols, D, stride_q, stride_k):
    """`q_t` and `k_{t−1}` for the block's rows over channels `cols`, float32, zeros where masked."""
    col_ok = (cols < D)[None, :]
    q = tl.load(Q + r64[:, None] * stride_q + cols[None, :], mask=row_ok[:, None] & col_ok, other=0.0)
    k = tl.load(K + (r64 - 1)[:, None] * stride_k + cols[None, :], mask=prev_ok[:, None] & col_ok, other=0.0)
    return q.to(tl.float32), k.to(tl.float32)


@triton.jit
def _dot_and_norms(
    Q, K, r64, prev_ok, row_ok, D, stride_q, stride_k, BLOCK_T: tl.constexpr, BLOCK_D: tl.constexpr
):
    """`q_t·k_{t−1}`, `|q_t|²`, `|k_{t−1}|²` over all channels, one value per row of the block."""
    dot = tl.zeros([BLOCK_T], tl.float32)
    qq = tl.zeros([BLOCK_T], tl.float32)
    kk = tl.zeros([BLOCK_T], tl.float32)
    for d0 in range(0, D, BLOCK_D):
        cols = d0 + tl.arange(0, BLOCK_D)
        q, k = _load_neighbours(Q, K, r64, row_ok, prev_ok, cols, D, stride_q, stride_k)
        dot += tl.sum(q * k, axis=1)
        qq += tl.sum(q * q, axis=1)
        kk += tl.sum(k * k, axis=1)
    return dot, qq, kk


@triton.jit
def _row_cosines(
    Q, K, STARTS, T, D, stride_q, stride_k, EPS: tl.constexpr, BLOCK_T: tl.constexpr, BLOCK_D: tl.constexpr
):
    """This program's rows and, per row, `cos(q_t, k_{t−1})` with the clamped norms it divides by."""
    r = tl.program_id(0) * BLOCK_T + tl.arange(0, BLOCK_T)
    row_ok = r < T
    start = tl.load(STARTS + r, mask=row_ok, other=1) != 0
    prev_ok = row_ok & ~start
    r64 = r.to(tl.int64)
    dot, qq, kk = _dot_and_norms(Q, K, r64, prev_ok, row_ok, D, stride_q, stride_k, BLOCK_T, BLOCK_D)
    nq = tl.sqrt(qq)
    nk = tl.sqrt(kk)
    cq = tl.maximum(nq, EPS)
    ck = tl.maximum(nk, EPS)
    return r64, row_ok, start, prev_ok, nq, nk, cq, ck, dot / (cq * ck)


@triton.jit
def _boundary_fwd(
    Q,
    K,
    STARTS,
    OUT,
    T,
    D,
    stride_q,
    stride_k,
    EPS: tl.constexpr,
    BLOCK_T: tl.constexpr,
    BLOCK_D: tl.constexpr,
):
    r64, row_ok, start, _, _, _, _, _, cos = _row_cosines(
        Q, K, STARTS, T, D, stride_q, stride_k, EPS, BLOCK_T, BLOCK_D
    )
    p = tl.minimum(tl.maximum((1.0 - cos) * 0.5, 0.0), 1.0)
    p = tl.where(start, 1.0, p)
    tl.store(OUT + r64, p.to(OUT.dtype.element_ty), mask=row_ok)


@triton.jit
def _boundary_bwd(
    Q,
    K,
    STARTS,
    G,
    DQ,
    DK,
    T,
    D,
    stride_q,
    stride_k,
    EPS: tl.constexpr,
    BLOCK_T: tl.constexpr,
    BLOCK_D: tl.constexpr,
):
    r64, row_ok, _, prev_ok, nq, nk, cq, ck, cos = _row_cosines(
        Q, K, STARTS, T, D, stride_q, stride_k, EPS, BLOCK_T, BLOCK_D
    )
    half = (1.0 - cos) * 0.5
    g = tl.load(G + r64, mask=row_ok, other=0.0).to(tl.float32)
    # dp/dcos = −1/2 where the clamp passes the gradient (as torch.clamp does: bounds included).
    coef = tl.where(prev_ok & (half >= 0.0) & (half <= 1.0), -0.5 * g, 0.0)
    # d cos/dq = (k̂ − cos·q̂)/c_q, the projection dropped where |q| ≤ eps (normalize's clamp).
    sel_q = tl.where(nq > EPS, cos, 0.0)
    sel_k = tl.where(nk > EPS, cos, 0.0)
    for d0 in range(0, D, BLOCK_D):
        cols = d0 + tl.arange(0, BLOCK_D)
        q, k = _load_neighbours(Q, K, r64, row_ok, prev_ok, cols, D, stride_q, stride_k)
        qn = q / cq[:, None]
        kn = k / ck[:, None]
        dq = coef[:, None] * (kn - sel_q[:, None] * qn) / cq[:, None]
        dk = coef[:, None] * (qn - sel_k[:, None] * kn) / ck[:, None]
        col_ok = cols < D
        tl.store(
            DQ + r64[:, None] * D + cols[None, :],
            dq.to(DQ.dtype.element_ty),
            mask=row_ok[:, None] & col_ok[None, :],
        )
        tl.store(
            DK + (r64 - 1)[:, None] * D + cols[None, :],
            dk.to(DK.dtype.element_ty),
            mask=prev_ok[:, None] & col_ok[None, :],
        )


def _launch(t: int, d: int) -> tuple[int, tuple[int]]:
    return min(next_power_of_2(d), 128), (triton.cdiv(t, BLOCK_T),)


@torch.library.custom_op("mmchunk::boundary_probs", mutates_args=())
def _boundary_probs_op(q: Tensor, k: Tensor, cu_seqlens: Tensor) -> Tensor:
    """Forward: `p [T]` in `q`'s dtype."""
    check_cu_seqlens(cu_seqlens, q.shape[0])
    q, k = row_major(q), row_major(k)
    t, d = q.shape
    out = torch.empty(t, dtype=q.dtype, device=q.device)
    starts = sequence_starts(cu_seqlens, t).to(torch.int8)
    block_d, grid = _launch(t, d)
    if t:
        _boundary_fwd[grid](q, k, starts, out, t, d, q.stride(0), k.stride(0), EPS, BLOCK_T, block_d)
    return out


@_boundary_probs_op.register_fake
def _(q: Tensor, k: Tensor, cu_seqlens: Tensor) -> Tensor:
    return q.new_empty(q.shape[:1])


@torch.library.custom_op("mmchunk::boundary_probs_backward", mutates_args=())
def _boundary_probs_backward_op(
    grad: Tensor, q: Tensor, k: Tensor, cu_seqlens: Tensor
) -> tuple[Tensor, Tensor]:
    """Backward: gradients of `q` and `k` `[T, D]`, recomputing the cosines."""
    q, k, grad = row_major(q), row_major(k), grad.contiguous()
    t, d = q.shape
    dq = torch.empty((t, d), dtype=q.dtype, device=q.device)
    dk = torch.zeros((t, d), dtype=k.dtype, device=k.device)
    starts = sequence_starts(cu_seqlens, t).to(torch.int8)
    block_d, grid = _launch(t, d)
    if t:
        _boundary_bwd[grid](q, k, starts, grad, dq, dk, t, d, q.stride(0), k.stride(0), EPS, BLOCK_T, block_d)
    return dq, dk


@_boundary_probs_backward_op.register_fake
def _(grad: Tensor, q: Tensor, k: Tensor, cu_seqlens: Tensor) -> tuple[Tensor, Tensor]:
    return torch.empty_like(q), torch.empty_like(k)


def _setup_context(ctx, inputs, output) -> None:
    ctx.save_for_backward(*inputs)


def _backward(ctx, grad: Tensor) -> tuple[Tensor, Tensor, None]:
    q, k, cu_seqlens = ctx.saved_tensors
    dq, dk = _boundary_probs_backward_op(grad, q, k, cu_seqlens)
    return dq, dk, None


_boundary_probs_op.register_autograd(_backward, setup_context=_setup_context)


def boundary_probs_triton(q: Tensor, k: Tensor, cu_seqlens: Tensor) -> Tensor:
    """Triton `boundary_probs`: `q, k [T, D]` → `[T]` (a `torch.library` custom op)."""
    return torch.ops.mmchunk.boundary_probs(q, k, cu_seqlens)

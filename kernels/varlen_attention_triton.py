"""varlen_attention in Triton: FlashAttention-2 style tiles over `cu_seqlens`, causal and windowed."""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

from ._common import check_cu_seqlens, next_power_of_2, row_major, seq_lengths

BLOCK_M = 32
BLOCK_N = 32


@triton.jit
def _key_range(m0, length, window, CAUSAL: tl.constexpr, HAS_WINDOW: tl.constexpr, BLOCK_M: tl.constexpr):
    """Keys `[lo, hi)` that queries `[m0, m0 + BLOCK_M)` may see (lo not yet block-aligned)."""
    lo = 0
    hi = length
    if HAS_WINDOW:
        lo = tl.maximum(m0 - window, 0)
    if CAUSAL:
        hi = tl.minimum(m0 + BLOCK_M, length)
    elif HAS_WINDOW:
        hi = tl.minimum(m0 + BLOCK_M + window, length)
    return lo, hi


@triton.jit
def _query_range(n0, length, window, CAUSAL: tl.constexpr, HAS_WINDOW: tl.constexpr, BLOCK_N: tl.constexpr):
    """Queries `[lo, hi)` that may see keys `[n0, n0 + BLOCK_N)`."""
    lo = 0
    hi = length
    if CAUSAL:
        lo = n0
    elif HAS_WINDOW:
        lo = tl.maximum(n0 - window, 0)
    if HAS_WINDOW:
        hi = tl.minimum(n0 + BLOCK_N + window, length)
    return lo, hi


@triton.jit
def _allowed(offs_m, offs_n, length, window, CAUSAL: tl.constexpr, HAS_WINDOW: tl.constexpr):
    """`[BLOCK_M, BLOCK_N]` mask: both positions in the sequence, causal order, within the window."""
    ok = (offs_m[:, None] < length) & (offs_n[None, :] < length)
    diff = offs_m[:, None] - offs_n[None, :]
    if CAUSAL:
        ok = ok & (diff >= 0)
    if HAS_WINDOW:
        ok = ok & (diff <= window) & (diff >= -window)
    return ok


@triton.jit
def _load_rows(PTR, rows, stride_t, head_offset, length_ok, cols, width):
    """Rows of one head `[R, C]` as float32, zeros outside the sequence and the head width."""
    ptr = PTR + rows.to(tl.int64)[:, None] * stride_t + head_offset + cols[None, :]
    return tl.load(ptr, mask=length_ok[:, None] & (cols < width)[None, :], other=0.0).to(tl.float32)


@triton.jit
def _program_tile(CU, BLOCK: tl.constexpr):
    """This program's first row within its sequence, the sequence's offset and length, and its head."""
    seq = tl.program_id(1)
    start = tl.load(CU + seq)
    return tl.program_id(0) * BLOCK, start, tl.load(CU + seq + 1) - start, tl.program_id(2)


@triton.jit
def _recompute(q, k, v, do, lse, delta, offs_m, offs_n, length, scale, window, CAUSAL: tl.constexpr,
               HAS_WINDOW: tl.constexpr):  # fmt: skip
    """Backward tile: probabilities `P = exp(S − lse)` and score gradients `dS = P·(dO·Vᵀ − delta)`."""
    s = tl.dot(q, tl.trans(k)) * scale
    ok = _allowed(offs_m, offs_n, length, window, CAUSAL, HAS_WINDOW)
    p = tl.where(ok, tl.exp(s - lse[:, None]), 0.0)
    return p, p * (tl.dot(do, tl.trans(v)) - delta[:, None])


@triton.jit
def _attn_fwd(
    Q, K, V, OUT, LSE, CU, scale, window,
    stride_qt, stride_qh, stride_kt, stride_kh, stride_vt, stride_vh,
    H, DH, DV,
    CAUSAL: tl.constexpr, HAS_WINDOW: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_DH: tl.constexpr, BLOCK_DV: tl.constexpr,
):  # fmt: skip
    m0, start, length, head = _program_tile(CU, BLOCK_M)
    if m0 < length:
        offs_m = m0 + tl.arange(0, BLOCK_M)
        dh = tl.arange(0, BLOCK_DH)
        dv = tl.arange(0, BLOCK_DV)
        q_ok = offs_m < length
        q = _load_rows(Q, start + offs_m, stride_qt, head * stride_qh, q_ok, dh, DH)
        m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)
        l_i = tl.zeros([BLOCK_M], tl.float32)
        acc = tl.zeros([BLOCK_M, BLOCK_DV], tl.float32)
        lo, hi = _key_range(m0, length, window, CAUSAL, HAS_WINDOW, BLOCK_M)
        for n0 in range((lo // BLOCK_N) * BLOCK_N, hi, BLOCK_N):
            offs_n = n0 + tl.arange(0, BLOCK_N)
            k_ok = offs_n < length
            k = _load_rows(K, start + offs_n, stride_kt, head * stride_kh, k_ok, dh, DH)
            v = _load_rows(V, start + offs_n, stride_vt, head * stride_vh, k_ok, dv, DV)
            s = tl.dot(q, tl.trans(k)) * scale
            s = tl.where(_allowed(offs_m, offs_n, length, window, CAUSAL, HAS_WINDOW), s, float("-inf"))
            m_new = tl.maximum(m_i, tl.max(s, axis=1))
            m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)
            alpha = tl.exp(m_i - m_safe)
            p = tl.exp(s - m_safe[:, None])
            l_i = l_i * alpha + tl.sum(p, axis=1)
            acc = acc * alpha[:, None] + tl.dot(p, v)
            m_i = m_new
        l_safe = tl.where(l_i > 0.0, l_i, 1.0)
        rows = (start + offs_m).to(tl.int64)
        out_ptr = OUT + rows[:, None] * (H * DV) + head * DV + dv[None, :]
        out_ok = q_ok[:, None] & (dv < DV)[None, :]
        tl.store(out_ptr, (acc / l_safe[:, None]).to(OUT.dtype.element_ty), mask=out_ok)
        tl.store(LSE + rows * H + head, m_i + tl.log(l_safe), mask=q_ok)


@triton.jit
def _attn_bwd_dkdv(
    Q, K, V, DO, LSE, DELTA, DK, DV_OUT, CU, scale, window,
    stride_qt, stride_qh, stride_kt, stride_kh, stride_vt, stride_vh,
    H, DH, DV,
    CAUSAL: tl.constexpr, HAS_WINDOW: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_DH: tl.constexpr, BLOCK_DV: tl.constexpr,
):  # fmt: skip
    n0, start, length, head = _program_tile(CU, BLOCK_N)
    if n0 < length:
        offs_n = n0 + tl.arange(0, BLOCK_N)
        dh = tl.arange(0, BLOCK_DH)
        dv = tl.arange(0, BLOCK_DV)
        k_ok = offs_n < length
        k = _load_rows(K, start + offs_n, stride_kt, head * stride_kh, k_ok, dh, DH)
        v = _load_rows(V, start + offs_n, stride_vt, head * stride_vh, k_ok, dv, DV)
        dk = tl.zeros([BLOCK_N, BLOCK_DH], tl.float32)
        dv_acc = tl.zeros([BLOCK_N, BLOCK_DV], tl.float32)
        lo, hi = _query_range(n0, length, window, CAUSAL, HAS_WINDOW, BLOCK_N)
        for m0 in range((lo // BLOCK_M) * BLOCK_M, hi, BLOCK_M):
            offs_m = m0 + tl.arange(0, BLOCK_M)
            q_ok = offs_m < length
            rows = (start + offs_m).to(tl.int64)
            q = _load_rows(Q, start + offs_m, stride_qt, head * stride_qh, q_ok, dh, DH)
            do = _load_rows(DO, start + offs_m, H * DV, head * DV, q_ok, dv, DV)
            lse = tl.load(LSE + rows * H + head, mask=q_ok, other=0.0)
            delta = tl.load(DELTA + rows * H + head, mask=q_ok, other=0.0)
            p, ds = _recompute(
                q, k, v, do, lse, delta, offs_m, offs_n, length, scale, window, CAUSAL, HAS_WINDOW
            )
            dv_acc += tl.dot(tl.trans(p), do)
            dk += tl.dot(tl.trans(ds), q)
        rows_n = (start + offs_n).to(tl.int64)
        tl.store(
            DK + rows_n[:, None] * (H * DH) + head * DH + dh[None, :],
            (dk * scale).to(DK.dtype.element_ty),
            mask=k_ok[:, None] & (dh < DH)[None, :],
        )
        tl.store(
            DV_OUT + rows_n[:, None] * (H * DV) + head * DV + dv[None, :],
            dv_acc.to(DV_OUT.dtype.element_ty),
            mask=k_ok[:, None] & (dv < DV)[None, :],
        )


@triton.jit
def _attn_bwd_dq(
    Q, K, V, DO, LSE, DELTA, DQ, CU, scale, window,
    stride_qt, stride_qh, stride_kt, stride_kh, stride_vt, stride_vh,
    H, DH, DV,
    CAUSAL: tl.constexpr, HAS_WINDOW: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_DH: tl.constexpr, BLOCK_DV: tl.constexpr,
):  # fmt: skip
    m0, start, length, head = _program_tile(CU, BLOCK_M)
    if m0 < length:
        offs_m = m0 + tl.arange(0, BLOCK_M)
        dh = tl.arange(0, BLOCK_DH)
        dv = tl.arange(0, BLOCK_DV)
        q_ok = offs_m < length
        rows = (start + offs_m).to(tl.int64)
        q = _load_rows(Q, start + offs_m, stride_qt, head * stride_qh, q_ok, dh, DH)
        do = _load_rows(DO, start + offs_m, H * DV, head * DV, q_ok, dv, DV)
        lse = tl.load(LSE + rows * H + head, mask=q_ok, other=0.0)
        delta = tl.load(DELTA + rows * H + head, mask=q_ok, other=0.0)
        dq = tl.zeros([BLOCK_M, BLOCK_DH], tl.float32)
        lo, hi = _key_range(m0, length, window, CAUSAL, HAS_WINDOW, BLOCK_M)
        for n0 in range((lo // BLOCK_N) * BLOCK_N, hi, BLOCK_N):
            offs_n = n0 + tl.arange(0, BLOCK_N)
            k_ok = offs_n < length
            k = _load_rows(K, start + offs_n, stride_kt, head * stride_kh, k_ok, dh, DH)
            v = _load_rows(V, start + offs_n, stride_vt, head * stride_vh, k_ok, dv, DV)
            _, ds = _recompute(
                q, k, v, do, lse, delta, offs_m, offs_n, length, scale, window, CAUSAL, HAS_WINDOW
            )
            dq += tl.dot(ds, k)
        tl.store(
            DQ + rows[:, None] * (H * DH) + head * DH + dh[None, :],
            (dq * scale).to(DQ.dtype.element_ty),
            mask=q_ok[:, None] & (dh < DH)[None, :],
        )


def _launch(q: Tensor, v: Tensor, cu_seqlens: Tensor, block: int) -> tuple[tuple[int, int, int], dict]:
    """Grid over (row blocks of the longest sequence, sequences, heads) and the shared meta-arguments."""
    batch = cu_seqlens.numel() - 1
    longest = int(seq_lengths(cu_seqlens).max()) if batch else 0
    meta = {
        "BLOCK_M": BLOCK_M,
        "BLOCK_N": BLOCK_N,
        "BLOCK_DH": max(16, next_power_of_2(q.shape[2])),
        "BLOCK_DV": max(16, next_power_of_2(v.shape[2])),
    }
    return (triton.cdiv(longest, block), batch, q.shape[1]), meta


def _strides(q: Tensor, k: Tensor, v: Tensor) -> tuple[int, ...]:
    return (q.stride(0), q.stride(1), k.stride(0), k.stride(1), v.stride(0), v.stride(1))


@torch.library.custom_op("mmchunk::varlen_attention", mutates_args=())
def _attention_op(
    q: Tensor, k: Tensor, v: Tensor, cu_seqlens: Tensor, causal: bool, window: int, scale: float
) -> tuple[Tensor, Tensor]:
    """Forward: output `[T, H, Dv]` and the log-sum-exp of every query row `[T, H]` (float32)."""
    check_cu_seqlens(cu_seqlens, q.shape[0])
    q, k, v = row_major(q), row_major(k), row_major(v)
    t, h, dh = q.shape
    out = torch.empty((t, h, v.shape[2]), dtype=q.dtype, device=q.device)
    lse = torch.empty((t, h), dtype=torch.float32, device=q.device)
    grid, meta = _launch(q, v, cu_seqlens, BLOCK_M)
    if t:
        _attn_fwd[grid](
            q, k, v, out, lse, cu_seqlens, scale, max(window, 0), *_strides(q, k, v), h, dh, v.shape[2],
            CAUSAL=causal, HAS_WINDOW=window >= 0, **meta,
        )  # fmt: skip
    return out, lse


@_attention_op.register_fake
def _(q, k, v, cu_seqlens, causal, window, scale) -> tuple[Tensor, Tensor]:
    return q.new_empty((*q.shape[:2], v.shape[2])), q.new_empty(q.shape[:2], dtype=torch.float32)


@torch.library.custom_op("mmchunk::varlen_attention_backward", mutates_args=())
def _attention_backward_op(
    grad: Tensor,
    q: Tensor,
    k: Tensor,
    v: Tensor,
    out: Tensor,
    lse: Tensor,
    cu_seqlens: Tensor,
    causal: bool,
    window: int,
    scale: float,
) -> tuple[Tensor, Tensor, Tensor]:
    """Backward with recomputation of the scores: gradients of `q`, `k`, `v`."""
    q, k, v = row_major(q), row_major(k), row_major(v)
    grad = grad.contiguous()
    delta = (grad.float() * out.float()).sum(dim=-1).contiguous()
    t, h, dh = q.shape
    dq = torch.empty((t, h, dh), dtype=q.dtype, device=q.device)
    dk = torch.empty((t, h, dh), dtype=k.dtype, device=k.device)
    dv = torch.empty((t, h, v.shape[2]), dtype=v.dtype, device=v.device)
    if t:
        args = (cu_seqlens, scale, max(window, 0), *_strides(q, k, v), h, dh, v.shape[2])
        flags = {"CAUSAL": causal, "HAS_WINDOW": window >= 0}
        grid, meta = _launch(q, v, cu_seqlens, BLOCK_N)
        _attn_bwd_dkdv[grid](q, k, v, grad, lse, delta, dk, dv, *args, **flags, **meta)
        grid, meta = _launch(q, v, cu_seqlens, BLOCK_M)
        _attn_bwd_dq[grid](q, k, v, grad, lse, delta, dq, *args, **flags, **meta)
    return dq, dk, dv


@_attention_backward_op.register_fake
def _(grad, q, k, v, out, lse, cu_seqlens, causal, window, scale) -> tuple[Tensor, Tensor, Tensor]:
    return torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)


def _setup_context(ctx, inputs, output) -> None:
    q, k, v, cu_seqlens, causal, window, scale = inputs
    ctx.save_for_backward(q, k, v, *output, cu_seqlens)
    ctx.causal, ctx.window, ctx.scale = causal, window, scale


def _backward(ctx, grad: Tensor, _grad_lse: Tensor) -> tuple[Tensor | None, ...]:
    q, k, v, out, lse, cu_seqlens = ctx.saved_tensors
    dq, dk, dv = _attention_backward_op(
        grad, q, k, v, out, lse, cu_seqlens, ctx.causal, ctx.window, ctx.scale
    )
    return dq, dk, dv, None, None, None, None


_attention_op.register_autograd(_backward, setup_context=_setup_context)


def varlen_attention_triton(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    cu_seqlens: Tensor,
    causal: bool = False,
    window: int | None = None,
    scale: float | None = None,
) -> Tensor:
    """Triton `varlen_attention`: `q, k [T, H, Dh]`, `v [T, H, Dv]` → `[T, H, Dv]` (a custom op)."""
    scale = q.shape[-1] ** -0.5 if scale is None else float(scale)
    return torch.ops.mmchunk.varlen_attention(
        q, k, v, cu_seqlens, causal, -1 if window is None else window, scale
    )[0]

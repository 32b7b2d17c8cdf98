"""Triton kernels against the torch references: values and gradients, block edges, NaN-guarded buffers.

On CPU they run in Triton's interpreter (conftest sets TRITON_INTERPRET=1 before mmchunk is
imported); on a GPU machine `TRITON_INTERPRET=0` runs the same tests on CUDA.
"""

from __future__ import annotations

import importlib

import pytest
import torch
from conftest import cu_from_lengths

from mmchunk.kernels import (
    _common,
    boundary_probs,
    ema_scan,
    segment_reduce,
    varlen_attention,
)

# The op modules, not the functions of the same name that the package exports.
segment_reduce_module = importlib.import_module("mmchunk.kernels.segment_reduce")
ema_scan_module = importlib.import_module("mmchunk.kernels.ema_scan")
boundary_probs_module = importlib.import_module("mmchunk.kernels.boundary_probs")
varlen_attention_module = importlib.import_module("mmchunk.kernels.varlen_attention")

INTERPRET = _common.TRITON_INTERPRET
DEVICE = "cpu" if INTERPRET else "cuda"
pytestmark = pytest.mark.skipif(
    not _common.HAS_TRITON or not (INTERPRET or torch.cuda.is_available()),
    reason="needs triton with CUDA, or TRITON_INTERPRET=1",
)


def edge_lengths(block: int) -> list[int]:
    """Sequence lengths around one block: 1, BLOCK−1, BLOCK, BLOCK+1, with empty sequences."""
    return [1, block - 1, 0, block, block + 1, 0, 3]


def nan_guarded(shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
    """Random data as a view inside a NaN-filled buffer (rows before/after, extra last-dim slots)."""
    buf = torch.full((shape[0] + 6, *[n + 3 for n in shape[1:]]), float("nan"), dtype=dtype, device=DEVICE)
    view = buf[(slice(3, 3 + shape[0]), *[slice(0, n) for n in shape[1:]])]
    view.copy_(torch.randn(shape, dtype=dtype, device=DEVICE))
    return view


def tolerance(dtype: torch.dtype, grad: bool = False, dot: bool = False) -> dict[str, float]:
    """fp32 matches to rounding (TF32 dots on GPU are looser); fp16/bf16 to their precision."""
    if dtype == torch.float32:
        tol = 2e-3 if dot and not INTERPRET else 2e-5
    else:
        tol = {torch.float16: 2e-3, torch.bfloat16: 2e-2}[dtype] * (5 if grad else 1)
    return {"atol": tol, "rtol": tol}


def compare(fn_triton, fn_torch, inputs, dtype, dot=False):
    """Values and gradients of two implementations on the same leaf inputs."""
    inputs = [t.requires_grad_() for t in inputs]
    got, want = fn_triton(*inputs), fn_torch(*inputs)
    assert got.dtype == want.dtype and got.shape == want.shape
    assert not got.isnan().any()
    torch.testing.assert_close(got, want, **tolerance(dtype, dot=dot))
    g = torch.randn_like(want)
    for a, b in zip(torch.autograd.grad(got, inputs, g), torch.autograd.grad(want, inputs, g)):
        assert not a.isnan().any()
        torch.testing.assert_close(a, b, **tolerance(dtype, grad=True, dot=dot))


DTYPES = [torch.float32, torch.float16]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("reduce", ["sum", "mean", "max"])
@pytest.mark.parametrize("trailing", [(7,), (), (130,)])
def test_segment_reduce(dtype, reduce, trailing):
    from mmchunk.kernels.segment_reduce_triton import BLOCK_T

    cu = cu_from_lengths(edge_lengths(BLOCK_T), DEVICE)
    x = nan_guarded((int(cu[-1]), *trailing), dtype)
    compare(
        lambda t: segment_reduce(t, cu, reduce, backend="triton"),
        lambda t: segment_reduce(t, cu, reduce, backend="torch"),
        [x],
        dtype,
    )


@pytest.mark.parametrize("dtype", [*DTYPES, torch.bfloat16])
@pytest.mark.parametrize(("dim", "per_channel"), [(7, False), (7, True), (70, False), (70, True), (1, False)])
def test_ema_scan(dtype, dim, per_channel):
    from mmchunk.kernels.ema_scan_triton import BLOCK_T

    cu = cu_from_lengths([*edge_lengths(BLOCK_T), 2 * BLOCK_T + 5], DEVICE)
    t = int(cu[-1])
    x = nan_guarded((t, dim), dtype)
    p = nan_guarded((t, dim if per_channel else 1), dtype)
    with torch.no_grad():
        p.copy_(torch.rand_like(p))
    compare(
        lambda a, b: ema_scan(a, b, cu, backend="triton"),
        lambda a, b: ema_scan(a, b, cu, backend="torch"),
        [x, p],
        dtype,
    )


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("dim", [1, 7, 200])
def test_boundary_probs(dtype, dim):
    from mmchunk.kernels.boundary_probs_triton import BLOCK_T

    cu = cu_from_lengths(edge_lengths(BLOCK_T), DEVICE)
    t = int(cu[-1])
    q, k = nan_guarded((t, dim), dtype), nan_guarded((t, dim), dtype)
    compare(
        lambda a, b: boundary_probs(a, b, cu, backend="triton"),
        lambda a, b: boundary_probs(a, b, cu, backend="torch"),
        [q, k],
        dtype,
    )


def test_boundary_probs_zero_vector():
    cu = cu_from_lengths([6], DEVICE)
    q, k = nan_guarded((6, 5), torch.float32), nan_guarded((6, 5), torch.float32)
    with torch.no_grad():
        q[2] = 0.0  # cos = 0, p = 0.5; normalize's clamp makes the gradient |k̂|/eps
    q.requires_grad_()
    k.requires_grad_()
    got = boundary_probs(q, k, cu, backend="triton")
    want = boundary_probs(q, k, cu, backend="torch")
    assert got[2] == 0.5
    torch.testing.assert_close(got, want)
    g = torch.randn(6, device=DEVICE)
    for a, b in zip(torch.autograd.grad(got, (q, k), g), torch.autograd.grad(want, (q, k), g)):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(
    ("causal", "window"), [(False, None), (True, None), (False, 3), (True, 40), (True, 0)]
)
@pytest.mark.parametrize(("head_dim", "value_dim"), [(8, 8), (5, 7)])
def test_varlen_attention(dtype, causal, window, head_dim, value_dim):
    from mmchunk.kernels.varlen_attention_triton import BLOCK_M

    cu = cu_from_lengths(edge_lengths(BLOCK_M), DEVICE)
    t, heads = int(cu[-1]), 2
    q, k = nan_guarded((t, heads, head_dim), dtype), nan_guarded((t, heads, head_dim), dtype)
    v = nan_guarded((t, heads, value_dim), dtype)
    compare(
        lambda a, b, c: varlen_attention(a, b, c, cu, causal=causal, window=window, backend="triton"),
        lambda a, b, c: varlen_attention(a, b, c, cu, causal=causal, window=window, backend="torch"),
        [q, k, v],
        dtype,
        dot=True,
    )


def test_triton_path_really_runs(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("the torch reference ran")

    for module, name in [
        (segment_reduce_module, "segment_reduce_torch"),
        (ema_scan_module, "ema_scan_torch"),
        (boundary_probs_module, "boundary_probs_torch"),
        (varlen_attention_module, "varlen_attention_torch"),
    ]:
        monkeypatch.setattr(module, name, refuse)
    cu = cu_from_lengths([3, 5], DEVICE)
    x = torch.randn(8, 4, device=DEVICE)
    segment_reduce(x, cu, backend="triton")
    ema_scan(x, torch.rand(8, device=DEVICE), cu, backend="triton")
    boundary_probs(x, x, cu, backend="triton")
    varlen_attention(x[:, None], x[:, None], x[:, None], cu, backend="triton")


def test_auto_picks_triton_only_for_cuda(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("the Triton kernel ran")

    monkeypatch.setattr(segment_reduce_module, "segment_reduce_triton", refuse)
    cu = cu_from_lengths([2, 2])
    x = torch.randn(4, 3)
    torch.testing.assert_close(segment_reduce(x, cu, backend="auto"), x.view(2, 2, 3).mean(1))  # CPU: torch


def test_bad_offsets_are_caught_on_the_host():
    x = torch.randn(4, 3, device=DEVICE)
    bad = torch.tensor([0, 3, 2, 4], dtype=torch.int32, device=DEVICE)
    with pytest.raises(ValueError, match="non-decreasing"):
        segment_reduce(x, bad, backend="triton")
    with pytest.raises(ValueError, match="must equal the number of tokens"):
        ema_scan(x, torch.rand(4, device=DEVICE), bad[[0, 1, 2]].sort().values, backend="triton")


def test_compiles_without_graph_breaks():
    cu = cu_from_lengths([5, 0, 9], DEVICE)

    def model(x, p, q):
        pooled = segment_reduce(x, cu, "mean", backend="triton")
        smooth = ema_scan(x, p, cu, backend="triton")
        probs = boundary_probs(smooth, x, cu, backend="triton")
        att = varlen_attention(q, q, q, cu, causal=True, window=2, backend="triton")
        return pooled.sum() + smooth.sum() + probs.sum() + att.sum()

    x = torch.randn(14, 6, device=DEVICE, requires_grad=True)
    p = torch.rand(14, 6, device=DEVICE, requires_grad=True)
    q = torch.randn(14, 2, 4, device=DEVICE, requires_grad=True)
    compiled = torch.compile(model, fullgraph=True, backend="aot_eager" if INTERPRET else "inductor")
    got = compiled(x, p, q)
    want = model(x, p, q)
    torch.testing.assert_close(got, want)
    grads = torch.autograd.grad(got, (x, p, q))
    for a, b in zip(grads, torch.autograd.grad(want, (x, p, q))):
        torch.testing.assert_close(a, b)


def _opcheck_cases():
    cu = cu_from_lengths([3, 0, 5], DEVICE)
    x = torch.randn(8, 5, device=DEVICE, requires_grad=True)
    leaf = lambda t: t.detach().clone().requires_grad_()
    q = torch.randn(8, 2, 4, device=DEVICE, requires_grad=True)
    return [
        ("segment_reduce", (x, cu, "max")),
        ("segment_reduce", (x, cu, "mean")),
        ("ema_scan", (x, torch.rand(8, 1, device=DEVICE, requires_grad=True), cu)),
        ("ema_scan", (x, torch.rand(8, 5, device=DEVICE, requires_grad=True), cu)),
        ("boundary_probs", (x, leaf(x), cu)),
        ("varlen_attention", (q, leaf(q), leaf(q), cu, True, 2, 0.5)),
        ("varlen_attention", (q, leaf(q), leaf(q), cu, False, -1, 0.3)),
    ]


@pytest.mark.parametrize("case", range(7))
def test_custom_op_registrations(case):
    """Schema, fake (meta) kernel, autograd registration and AOT dispatch agree with the real kernel."""
    name, args = _opcheck_cases()[case]
    torch.library.opcheck(getattr(torch.ops.mmchunk, name).default, args)

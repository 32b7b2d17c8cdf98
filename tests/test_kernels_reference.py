"""The torch backend of every ragged op against per-sequence Python loops, gradcheck and hypothesis."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import EDGE_LENGTHS, bounds, cu_from_lengths
from hypothesis import given
from hypothesis import strategies as st

from mmchunk.kernels import boundary_probs, ema_scan, segment_reduce, varlen_attention

lengths_strategy = st.lists(st.integers(0, 12), min_size=1, max_size=6)


# ---- per-sequence loop references, written independently of the library ----


def loop_segment_reduce(x, cu, reduce):
    out = []
    for s, e in bounds(cu):
        seg = x[s:e]
        if e == s:
            out.append(torch.zeros_like(x[0]) if x.shape[0] else x.new_zeros(x.shape[1:]))
        elif reduce == "sum":
            out.append(seg.sum(0))
        elif reduce == "mean":
            out.append(seg.mean(0))
        else:
            out.append(seg.max(0).values)
    return torch.stack(out)


def loop_ema(x, p, cu):
    p = p if p.dim() == 2 else p[:, None]
    out = []
    for s, e in bounds(cu):
        h = torch.zeros_like(x[0]) if x.shape[0] else None
        for t in range(s, e):
            h = p[t] * x[t] + (1 - p[t]) * h
            out.append(h)
    return torch.stack(out) if out else x[:0] * 1.0


def loop_boundary_probs(q, k, cu):
    p = []
    for s, e in bounds(cu):
        for t in range(s, e):
            if t == s:
                p.append(torch.ones((), dtype=q.dtype))
                continue
            a, b = q[t], k[t - 1]
            cos = (a * b).sum() / (a.norm().clamp_min(1e-12) * b.norm().clamp_min(1e-12))
            p.append(((1 - cos) / 2).clamp(0, 1))
    return torch.stack(p) if p else q[:0, 0] * 1.0


def loop_attention(q, k, v, cu, causal=False, window=None, scale=None):
    out = []
    scale = 1 / math.sqrt(q.shape[-1]) if scale is None else scale
    for s, e in bounds(cu):
        n = e - s
        allowed = torch.tensor(
            [
                [(not causal or j <= i) and (window is None or abs(i - j) <= window) for j in range(n)]
                for i in range(n)
            ],
            dtype=torch.bool,
        ).reshape(n, n)
        for h in range(q.shape[1]):
            scores = (q[s:e, h] @ k[s:e, h].T) * scale
            weights = torch.softmax(scores.masked_fill(~allowed, float("-inf")), dim=-1)
            out.append((s, h, weights @ v[s:e, h]))
    result = torch.zeros(q.shape[0], q.shape[1], v.shape[-1], dtype=q.dtype)
    for s, h, o in out:
        result[s : s + o.shape[0], h] = o
    return result


# ---- segment_reduce ----


@pytest.mark.parametrize("reduce", ["sum", "mean", "max"])
@pytest.mark.parametrize("trailing", [(3,), (), (2, 5)])
def test_segment_reduce_matches_loop(reduce, trailing):
    cu = cu_from_lengths(EDGE_LENGTHS)
    x = torch.randn(int(cu[-1]), *trailing, dtype=torch.float64)
    torch.testing.assert_close(segment_reduce(x, cu, reduce), loop_segment_reduce(x, cu, reduce))


@pytest.mark.parametrize("reduce", ["sum", "mean", "max"])
def test_segment_reduce_gradcheck(reduce):
    cu = cu_from_lengths([3, 0, 1, 4])
    x = torch.randn(8, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: segment_reduce(t, cu, reduce), (x,))


def test_segment_reduce_max_gradient_goes_to_argmax():
    cu = cu_from_lengths([3, 2])
    x = torch.tensor([[1.0], [5.0], [2.0], [-1.0], [-3.0]], requires_grad=True)
    segment_reduce(x, cu, "max").sum().backward()
    assert x.grad.flatten().tolist() == [0.0, 1.0, 0.0, 1.0, 0.0]


@given(lengths=lengths_strategy, reduce=st.sampled_from(["sum", "mean", "max"]))
def test_segment_reduce_random_cu_seqlens(lengths, reduce):
    cu = cu_from_lengths(lengths)
    x = torch.randn(sum(lengths), 4, dtype=torch.float64, requires_grad=True)
    got = segment_reduce(x, cu, reduce)
    want = loop_segment_reduce(x, cu, reduce)
    torch.testing.assert_close(got, want)
    if sum(lengths):
        g = torch.randn_like(got)
        (ga,) = torch.autograd.grad(got, x, g)
        (gb,) = torch.autograd.grad(want, x, g)
        torch.testing.assert_close(ga, gb)


# ---- ema_scan ----


@pytest.mark.parametrize("rate_shape", ["T", "T1", "TD"])
@pytest.mark.parametrize("lengths", [EDGE_LENGTHS, [0], [1], [300, 0, 91, 1]])
def test_ema_scan_matches_loop(rate_shape, lengths):
    cu = cu_from_lengths(lengths)
    t, d = int(cu[-1]), 5
    x = torch.randn(t, d, dtype=torch.float64)
    shape = {"T": (t,), "T1": (t, 1), "TD": (t, d)}[rate_shape]
    p = torch.rand(shape, dtype=torch.float64)
    out = ema_scan(x, p, cu)
    assert out.shape == (t, d)
    torch.testing.assert_close(out, loop_ema(x, p, cu))


@pytest.mark.parametrize("rate_shape", ["T", "TD"])
def test_ema_scan_gradcheck(rate_shape):
    cu = cu_from_lengths([4, 0, 1, 3])
    x = torch.randn(8, 3, dtype=torch.float64, requires_grad=True)
    p = torch.rand((8,) if rate_shape == "T" else (8, 3), dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b: ema_scan(a, b, cu), (x, p))


def test_ema_scan_long_sequence_gradients_match_loop():
    # Long enough for the chunked scan (and its nested carry scan) to run, in both directions.
    cu = cu_from_lengths([2000, 7, 1, 0, 1500])
    t = int(cu[-1])
    x = torch.randn(t, 3, dtype=torch.float64, requires_grad=True)
    p = torch.rand(t, 3, dtype=torch.float64).mul(0.05).requires_grad_()
    g = torch.randn(t, 3, dtype=torch.float64)
    ga = torch.autograd.grad(ema_scan(x, p, cu), (x, p), g)
    gb = torch.autograd.grad(loop_ema(x, p, cu), (x, p), g)
    for a, b in zip(ga, gb):
        torch.testing.assert_close(a, b)


def test_ema_scan_resets_at_sequence_start():
    # p = 0 everywhere: the state never moves from zero, whatever came before.
    cu = cu_from_lengths([3, 3])
    x = torch.arange(6.0).reshape(6, 1)
    p = torch.tensor([1.0, 0.0, 0.0, 0.0, 0.0, 0.0])
    assert ema_scan(x, p, cu).flatten().tolist() == [0.0, 0.0, 0.0, 0.0, 0.0, 0.0]


@given(lengths=lengths_strategy, per_channel=st.booleans())
def test_ema_scan_random_cu_seqlens(lengths, per_channel):
    cu = cu_from_lengths(lengths)
    t = sum(lengths)
    x = torch.randn(t, 3, dtype=torch.float64, requires_grad=True)
    p = torch.rand((t, 3) if per_channel else (t,), dtype=torch.float64, requires_grad=True)
    got, want = ema_scan(x, p, cu), loop_ema(x, p, cu)
    torch.testing.assert_close(got, want)
    if t:
        g = torch.randn_like(got)
        for a, b in zip(torch.autograd.grad(got, (x, p), g), torch.autograd.grad(want, (x, p), g)):
            torch.testing.assert_close(a, b)


# ---- boundary_probs ----


@pytest.mark.parametrize("dim", [1, 7])
def test_boundary_probs_matches_loop(dim):
    cu = cu_from_lengths(EDGE_LENGTHS)
    q = torch.randn(int(cu[-1]), dim, dtype=torch.float64)
    k = torch.randn_like(q)
    torch.testing.assert_close(boundary_probs(q, k, cu), loop_boundary_probs(q, k, cu))


def test_boundary_probs_hand_values():
    cu = cu_from_lengths([3, 1])
    q = torch.tensor([[1.0, 0.0], [1.0, 0.0], [-1.0, 0.0], [0.0, 1.0]])
    k = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 0.0], [1.0, 0.0]])
    # t=1: cos(q1,k0)=1 → 0; t=2: cos(q2,k1)=0 → 0.5; t=3 starts a sequence → 1.
    assert boundary_probs(q, k, cu).tolist() == [1.0, 0.0, 0.5, 1.0]


def test_boundary_probs_gradcheck():
    cu = cu_from_lengths([4, 0, 1, 3])
    q = torch.randn(8, 5, dtype=torch.float64, requires_grad=True)
    k = torch.randn(8, 5, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b: boundary_probs(a, b, cu), (q, k))


@given(lengths=lengths_strategy)
def test_boundary_probs_random_cu_seqlens(lengths):
    cu = cu_from_lengths(lengths)
    q = torch.randn(sum(lengths), 4, dtype=torch.float64)
    k = torch.randn_like(q)
    torch.testing.assert_close(boundary_probs(q, k, cu), loop_boundary_probs(q, k, cu))


# ---- varlen_attention ----


@pytest.mark.parametrize(
    ("causal", "window"),
    [(False, None), (True, None), (False, 2), (True, 3), (True, 0), (False, 0)],
)
def test_varlen_attention_matches_loop(causal, window):
    cu = cu_from_lengths(EDGE_LENGTHS)
    t = int(cu[-1])
    q, k = torch.randn(2, t, 3, 5, dtype=torch.float64)
    v = torch.randn(t, 3, 6, dtype=torch.float64)
    got = varlen_attention(q, k, v, cu, causal=causal, window=window)
    torch.testing.assert_close(got, loop_attention(q, k, v, cu, causal, window))


def test_varlen_attention_scale_and_gradcheck():
    cu = cu_from_lengths([3, 0, 1, 4])
    q, k, v = (torch.randn(8, 2, 3, dtype=torch.float64, requires_grad=True) for _ in range(3))
    got = varlen_attention(q, k, v, cu, causal=True, scale=0.3)
    torch.testing.assert_close(got, loop_attention(q, k, v, cu, True, None, 0.3))
    assert torch.autograd.gradcheck(lambda a, b, c: varlen_attention(a, b, c, cu, window=1), (q, k, v))


@pytest.mark.parametrize(("causal", "window"), [(False, None), (True, None), (True, 2)])
def test_bucketed_attention_equals_the_reference_with_repeated_lengths(causal, window):
    """The CPU path groups sequences of equal length into one SDPA call: values and gradients."""
    from mmchunk.kernels.varlen_attention import varlen_attention_bucketed, varlen_attention_torch

    cu = cu_from_lengths([3, 3, 0, 5, 3, 1, 5, 0])
    inputs = [torch.randn(20, 2, 4, dtype=torch.float64, requires_grad=True) for _ in range(3)]
    got = varlen_attention_bucketed(*inputs, cu, causal, window)
    want = varlen_attention_torch(*inputs, cu, causal, window)
    torch.testing.assert_close(got, want)
    grads = [torch.autograd.grad(f.pow(2).sum(), inputs) for f in (got, want)]
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b)


def test_bucketed_attention_under_cpu_autocast():
    """`precision: bf16-mixed` on a CPU: SDPA returns bf16 inside autocast, the scatter still works
    and agrees with the fp32 reference to bf16 precision."""
    from mmchunk.kernels.varlen_attention import varlen_attention_bucketed, varlen_attention_torch

    cu = cu_from_lengths([3, 0, 5, 3, 1])
    q, k, v = (torch.randn(12, 2, 8) for _ in range(3))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = varlen_attention_bucketed(q, k, v, cu, causal=True)
    assert got.dtype == q.dtype
    torch.testing.assert_close(got, varlen_attention_torch(q, k, v, cu, True), atol=3e-2, rtol=3e-2)


def test_varlen_attention_never_spans_sequences(monkeypatch):
    import torch.nn.functional as F

    seen = []
    sdpa = F.scaled_dot_product_attention

    def spy(q, k, v, **kwargs):
        seen.append(q.shape[-2] * k.shape[-2])
        return sdpa(q, k, v, **kwargs)

    monkeypatch.setattr(F, "scaled_dot_product_attention", spy)
    lengths = [40, 3, 0, 25]
    cu = cu_from_lengths(lengths)
    q = torch.randn(68, 2, 4)
    varlen_attention(q, q, q, cu)
    assert max(seen) == 40 * 40 < 68 * 68
    assert len(seen) == 3


@given(lengths=lengths_strategy, causal=st.booleans(), window=st.one_of(st.none(), st.integers(0, 4)))
def test_varlen_attention_random_cu_seqlens(lengths, causal, window):
    cu = cu_from_lengths(lengths)
    t = sum(lengths)
    q, k, v = torch.randn(3, t, 2, 4, dtype=torch.float64)
    got = varlen_attention(q, k, v, cu, causal=causal, window=window)
    torch.testing.assert_close(got, loop_attention(q, k, v, cu, causal, window))


# ---- dtypes, validation, backends ----


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_low_precision_inputs_compute_in_float32(dtype):
    cu = cu_from_lengths([5, 0, 9])
    x = torch.randn(14, 8).to(dtype)
    p = torch.rand(14).to(dtype)
    q = torch.randn(14, 2, 4).to(dtype)
    cases = [
        (segment_reduce(x, cu, "mean"), loop_segment_reduce(x.float(), cu, "mean")),
        (ema_scan(x, p, cu), loop_ema(x.float(), p.float(), cu)),
        (
            boundary_probs(x, x.roll(1, 0), cu),
            loop_boundary_probs(x.float(), x.float().roll(1, 0), cu),
        ),
        (varlen_attention(q, q, q, cu), loop_attention(q.float(), q.float(), q.float(), cu)),
    ]
    for got, want in cases:
        assert got.dtype == dtype
        # Computed in float32, the result is off by the final rounding only (half an ulp).
        eps = torch.finfo(dtype).eps
        torch.testing.assert_close(got.float(), want, atol=eps, rtol=eps)


BAD_CU = [
    (torch.tensor([0, 2, 4], dtype=torch.int64), "int32"),
    (torch.tensor([1, 2, 4], dtype=torch.int32), r"\[0\] must be 0"),
    (torch.tensor([0, 3, 2, 4], dtype=torch.int32), "non-decreasing"),
    (torch.tensor([0, 2, 3], dtype=torch.int32), "= 3 must equal the number of tokens T = 4"),
    (torch.tensor([[0, 4]], dtype=torch.int32), "1-D"),
]


@pytest.mark.parametrize(("cu", "message"), BAD_CU)
def test_bad_cu_seqlens_raise_clear_errors(cu, message):
    x = torch.randn(4, 3)
    calls = [
        lambda: segment_reduce(x, cu),
        lambda: ema_scan(x, torch.rand(4), cu),
        lambda: boundary_probs(x, x, cu),
        lambda: varlen_attention(x[:, None], x[:, None], x[:, None], cu),
    ]
    for call in calls:
        with pytest.raises(ValueError, match=message):
            call()


def test_backends():
    cu = cu_from_lengths([2, 2])
    x = torch.randn(4, 3)
    torch.testing.assert_close(segment_reduce(x, cu, backend="torch"), segment_reduce(x, cu))
    with pytest.raises(ValueError, match="backend must be one of"):
        boundary_probs(x, x, cu, backend="cuda")
    with pytest.raises(ValueError, match="float32/float16/bfloat16"):
        ema_scan(x.double(), torch.rand(4).double(), cu, backend="triton")


def test_shape_errors():
    cu = cu_from_lengths([4])
    x = torch.randn(4, 3)
    with pytest.raises(ValueError, match="p must be"):
        ema_scan(x, torch.rand(4, 2), cu)
    with pytest.raises(ValueError, match="reduce must be"):
        segment_reduce(x, cu, "median")
    with pytest.raises(ValueError, match="window must be"):
        varlen_attention(x[:, None], x[:, None], x[:, None], cu, window=-1)

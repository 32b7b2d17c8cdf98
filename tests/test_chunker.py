"""DynamicChunker, dechunk, ratio loss, chunk targets and nested stages against hand references."""

from __future__ import annotations

import pytest
import torch
from conftest import bounds, cu_from_lengths
from torch import nn

from mmchunk import Ragged
from mmchunk.chunker import ChunkerOutput, DynamicChunker, chunk_targets, ratio_loss
from mmchunk.stage import ChunkedStage, StageOutput


def timed(lengths, dim=6, **kwargs):
    seqs = [torch.randn(n, dim) for n in lengths]
    t0 = [torch.arange(n) * 0.1 for n in lengths]
    return Ragged.from_list(seqs, t_start=t0, t_end=[t + 0.1 for t in t0], **kwargs)


def test_routing_starts_at_identity_and_residual_at_zero():
    c = DynamicChunker(5)
    assert torch.equal(c.q_proj.weight, torch.eye(5)) and torch.equal(c.k_proj.weight, torch.eye(5))
    assert not c.residual_proj.weight.any() and not c.residual_proj.bias.any()


def test_boundary_at_every_sequence_start():
    x = timed([5, 0, 1, 9, 2])
    out = DynamicChunker(6)(x)
    for s, e in bounds(x.cu_seqlens):
        if e > s:
            assert out.boundary_mask[s] and out.probs[s] == 1.0
    assert out.chunks.lengths.tolist() == [int(out.boundary_mask[s:e].sum()) for s, e in bounds(x.cu_seqlens)]


def test_no_boundary_inside_identical_stretches():
    a = torch.tensor([1.0, 2.0, 0.5, -1.0])
    b = -a + torch.tensor([0.1, 0.0, 0.0, 0.0])  # cos(a, b) < 0: a new chunk
    seq = torch.stack([a] * 6 + [b] * 4 + [torch.zeros(4)] * 3)
    x = Ragged.from_list([seq, torch.stack([b] * 7)])
    out = DynamicChunker(4)(x)
    # Zero vectors have p = 0.5 exactly, which is not a boundary (H-Net's argmax rule).
    assert out.boundary_mask.nonzero().flatten().tolist() == [0, 6, 13]
    assert out.chunks.lengths.tolist() == [2, 1]


def test_tied_routing_never_splits_repeats_after_training():
    torch.manual_seed(0)
    a, b = torch.randn(4), torch.randn(4)
    x = Ragged.from_list([torch.stack([a] * 5 + [b] * 5)])
    untied, tied = DynamicChunker(4), DynamicChunker(4, tied_routing=True)
    assert tied.k_proj is tied.q_proj
    with torch.no_grad():  # stand-in for trained projections
        for c in (untied, tied):
            c.q_proj.weight.normal_()
            if c.k_proj is not c.q_proj:
                c.k_proj.weight.normal_()
    assert tied(x).boundary_mask[1:5].sum() == 0 and tied(x).boundary_mask[6:].sum() == 0
    assert (untied(x).probs[1:5] > 0).all()  # H-Net's untied pair: repeats get p > 0


def test_chunks_inherit_time_spans_and_modality():
    x = timed([4, 0, 3], modality=[2, 0, 1])
    c = DynamicChunker(6, pooling="mean")
    out = c(x)
    starts = out.boundary_mask.nonzero().flatten().tolist()
    ends = [*starts[1:], x.num_tokens]
    for i, (s, e) in enumerate(zip(starts, ends)):
        assert out.chunks.t_start[i] == x.t_start[s]
        assert out.chunks.t_end[i] == x.t_end[e - 1]
        assert out.chunks.modality[i] == x.modality[s]
        torch.testing.assert_close(out.chunks.values[i], x.values[s:e].mean(0))
        assert (out.chunk_index[s:e] == i).all()


def test_boundary_pooling_keeps_boundary_tokens():
    x = timed([6, 3])
    out = DynamicChunker(6)(x)
    assert torch.equal(out.chunks.values, x.values[out.boundary_mask])


def test_dechunk_matches_hand_loop():
    x = timed([7, 0, 1, 5])
    c = DynamicChunker(6)
    with torch.no_grad():
        c.residual_proj.weight.normal_()
    out = c(x)
    z = torch.randn(out.chunks.num_tokens, 6)
    got = c.dechunk(z, out)
    assert got.shape == (x.num_tokens, 6)
    pc = out.probs[out.boundary_mask]
    want = torch.empty(x.num_tokens, 6)
    for s, e in bounds(out.chunks.cu_seqlens):
        h = torch.zeros(6)
        for ci in range(s, e):
            h = pc[ci] * z[ci] + (1 - pc[ci]) * h
            want[out.chunk_index == ci] = h
    want = want + c.residual_proj(x.values)
    torch.testing.assert_close(got, want)
    with pytest.raises(ValueError, match="dechunk: expected"):
        c.dechunk(z[:-1], out)


def test_confidence_gradient_passes_through_straight_through_estimator():
    x = timed([9, 4])
    c = DynamicChunker(6)
    out = c(x)
    probs = out.probs.detach().requires_grad_()
    routed = ChunkerOutput(out.chunks, out.boundary_mask, probs, out.chunk_index, out.residual)
    z = torch.randn(out.chunks.num_tokens, 6)
    y = c.dechunk(z, routed)
    g = torch.randn_like(y)
    (y * g).sum().backward()
    # Forward value of the confidence is 1; for a token inside a chunk, p only enters through
    # c = 1 − p, so dL/dp_t = −<z̄_chunk(t), g_t>.
    inner = ~out.boundary_mask
    smoothed = y.detach()  # residual is zero at init, so y = z̄ repeated over the chunk's tokens
    torch.testing.assert_close(probs.grad[inner], -(smoothed[inner] * g[inner]).sum(1))


def test_gradients_reach_routing_projections():
    x = timed([12, 5])
    c = DynamicChunker(6)
    out = c(x)
    loss = c.dechunk(out.chunks.values * 2, out).pow(2).sum() + ratio_loss(out.boundary_mask, out.probs, 3.0)
    loss.backward()
    for p in (c.q_proj.weight, c.k_proj.weight, c.residual_proj.weight):
        assert p.grad is not None and p.grad.abs().sum() > 0


def test_ratio_loss_values_and_gradient():
    n = 4.0
    mask = torch.tensor([True, False, False, False] * 3)
    probs = torch.full((12,), 0.25, requires_grad=True)
    loss = ratio_loss(mask, probs, n)
    torch.testing.assert_close(loss, torch.tensor(1.0))
    loss.backward()
    f = 0.25  # dL/dG = N/(N−1)·((N−1)F − (1−F)); G = mean(p), F carries no gradient
    torch.testing.assert_close(probs.grad, torch.full((12,), n / (n - 1) * ((n - 1) * f - (1 - f)) / 12))
    half = ratio_loss(torch.tensor([True, False]), torch.tensor([0.5, 0.5]), n)
    torch.testing.assert_close(half, torch.tensor(n / (n - 1) * ((n - 1) * 0.25 + 0.25)))
    assert float(ratio_loss(torch.ones(5, dtype=torch.bool), torch.ones(5), n)) > 1.0
    with pytest.raises(ValueError, match="target_N must be > 1"):
        ratio_loss(mask, probs, 1.0)


def test_ratio_loss_per_sequence_is_the_mean_of_each_sequences_loss():
    """With cu_seqlens every sequence is held to the target: one shattered and one whole sequence
    meet it on average over the batch, not per sequence."""
    lengths = [0, 8, 1, 8, 0, 5]
    cu = cu_from_lengths(lengths)
    gen = torch.Generator().manual_seed(0)
    probs = torch.rand(int(cu[-1]), generator=gen, requires_grad=True)
    mask = probs.detach() >= 0.5
    got = ratio_loss(mask, probs, 3.0, cu)
    want = torch.stack([ratio_loss(mask[s:e], probs[s:e], 3.0) for s, e in bounds(cu) if e > s]).mean()
    torch.testing.assert_close(got, want)
    got.backward()
    assert probs.grad is not None and torch.isfinite(probs.grad).all()
    two = cu_from_lengths([4, 4])
    uneven = torch.tensor([True, True, False, False, False, False, False, False])  # 2 + 0 boundaries
    even = torch.tensor([True, False, False, False, True, False, False, False])  # 1 + 1
    assert float(ratio_loss(uneven, uneven.float(), 4.0)) == pytest.approx(1.0)  # the batch meets N = 4
    assert float(ratio_loss(uneven, uneven.float(), 4.0, two)) == pytest.approx(
        4 / 3
    )  # neither sequence does
    assert float(ratio_loss(even, even.float(), 4.0, two)) == pytest.approx(1.0)
    one = cu_from_lengths([12])
    torch.testing.assert_close(
        ratio_loss(mask[:12], probs[:12], 3.0, one), ratio_loss(mask[:12], probs[:12], 3.0)
    )
    assert float(ratio_loss(mask[:0], probs[:0], 3.0, cu_from_lengths([0, 0]))) == 0.0


def test_modality_embedding_starts_at_zero_and_changes_routing():
    x = timed([6, 6], modality=[0, 1])
    plain, tagged = DynamicChunker(6), DynamicChunker(6, num_modalities=2)
    torch.testing.assert_close(plain(x).probs, tagged(x).probs)
    with torch.no_grad():
        tagged.modality_embedding.weight.normal_()
    assert not torch.allclose(plain(x).probs, tagged(x).probs)


def test_chunk_targets_from_one_rate():
    targets = chunk_targets(5.0, {"audio": 50.0, "video": 25.0, "text": 15.0})
    assert targets == pytest.approx({"audio": 10.0, "video": 5.0, "text": 3.0})
    with pytest.raises(ValueError, match=r"'video' runs at 4\.0 Hz"):
        chunk_targets(5.0, {"video": 4.0})


class Pointwise(nn.Module):
    """Ragged → Ragged: a linear map on every token."""

    def __init__(self, dim):
        super().__init__()
        self.linear = nn.Linear(dim, dim)

    def forward(self, x):
        return x.with_values(torch.tanh(self.linear(x.values)))


def test_nested_two_stage():
    torch.manual_seed(1)
    dim = 6
    inner = ChunkedStage(dim, main=Pointwise(dim), encoder=Pointwise(dim))
    outer = ChunkedStage(dim, main=inner, encoder=Pointwise(dim), decoder=Pointwise(dim))
    x = timed([40, 0, 1, 25], dim=dim)
    result = outer(x)
    assert isinstance(result, StageOutput)
    assert result.output.values.shape == (x.num_tokens, dim)
    assert torch.equal(result.output.cu_seqlens, x.cu_seqlens)
    first, second = result.routing
    assert second.residual.shape[0] == first.chunks.num_tokens
    assert second.chunks.num_tokens <= first.chunks.num_tokens <= x.num_tokens
    loss = result.output.values.pow(2).sum()
    for r, n in zip(result.routing, (3.0, 2.0)):
        loss = loss + ratio_loss(r.boundary_mask, r.probs, n)
    loss.backward()
    assert outer.chunker.q_proj.weight.grad.abs().sum() > 0
    assert inner.chunker.q_proj.weight.grad.abs().sum() > 0


def test_empty_batch():
    x = Ragged.from_list([torch.zeros(0, 4)])
    c = DynamicChunker(4)
    out = c(x)
    assert out.chunks.num_tokens == 0 and out.chunks.cu_seqlens.tolist() == [0, 0]
    assert c.dechunk(out.chunks, out).shape == (0, 4)
    assert ratio_loss(out.boundary_mask, out.probs, 2.0).item() == 0.0
    timed_empty = Ragged.from_list([torch.zeros(0, 4)], t_start=[torch.zeros(0)], t_end=[torch.zeros(0)])
    assert c(timed_empty).chunks.t_end.shape == (0,)  # no time spans invented for no tokens


def test_wrong_width_is_a_clear_error():
    with pytest.raises(ValueError, match=r"expected values \[T, 4\]"):
        DynamicChunker(4)(Ragged(torch.randn(3, 5), cu_from_lengths([3])))


def test_every_token_is_the_unchunked_baseline():
    x = timed([5, 0, 3])
    c = DynamicChunker(6, every_token=True)
    with torch.no_grad():
        c.residual_proj.weight.normal_()
    out = c(x)
    assert out.boundary_mask.all() and out.chunks.num_tokens == x.num_tokens
    z = torch.randn(x.num_tokens, 6)
    # p = 1 everywhere: the EMA keeps each chunk's own value, the confidence is 1
    torch.testing.assert_close(c.dechunk(z, out), z + c.residual_proj(x.values))


def test_routing_center_subtracts_each_sequence_mean_of_its_modality():
    """Centred routing equals routing on inputs with each centred sequence's mean removed (a
    per-sequence loop), leaves the other modality alone, keeps identical tokens unsplit, and turns a
    small change on a large shared component into a boundary."""
    gen = torch.Generator().manual_seed(1)
    dim = 6
    seqs = [torch.randn(n, dim, generator=gen) + 5.0 for n in (4, 0, 1, 7)]
    seqs[3][2:5] = seqs[3][2]  # a static stretch
    kinds = (1, 1, 0, 1)
    mods = [torch.full((len(v),), m, dtype=torch.long) for v, m in zip(seqs, kinds)]
    x = Ragged.from_list(seqs, modality=mods)
    centred = DynamicChunker(dim, tied_routing=True, num_modalities=2, routing_center=[False, True])
    plain = DynamicChunker(dim, tied_routing=True, num_modalities=2)
    by_hand = Ragged.from_list(
        [v - v.mean(0) if m == 1 and len(v) else v for v, m in zip(seqs, kinds)], modality=mods
    )
    torch.testing.assert_close(centred(x).probs, plain(by_hand).probs)
    assert not centred(x).boundary_mask[x.cu_seqlens[3] + 3 : x.cu_seqlens[3] + 5].any()
    assert DynamicChunker(dim, routing_center=[False, False]).routing_center is None

    background = torch.full((8, dim), 10.0)
    background[4:, 0] += 1.0  # an object appears: cos ≈ 0.999 on the raw frames
    frames = Ragged.from_list([background], modality=[torch.ones(8, dtype=torch.long)])
    assert int(plain(frames).boundary_mask.sum()) == 1
    assert centred(frames).boundary_mask.tolist() == [True, False, False, False, True, False, False, False]
    still = Ragged.from_list([torch.full((5, dim), 3.0)], modality=[torch.ones(5, dtype=torch.long)])
    assert int(centred(still).boundary_mask.sum()) == 1  # all-zero after centring: one chunk
    with pytest.raises(ValueError, match=r"routing\.center: unknown modality 'smell'"):
        from mmchunk.model import ChunkFusionModel

        ChunkFusionModel(dim=8, routing={"center": ["smell"]})
    with pytest.raises(ValueError, match="a list of modality names, got the string 'video'"):
        ChunkFusionModel(dim=8, routing={"center": "video"})


def test_window_means_match_a_per_sequence_loop():
    from mmchunk.ragged_ops import window_means

    lengths = [0, 1, 5, 0, 2, 17, 1]
    cu = cu_from_lengths(lengths)
    gen = torch.Generator().manual_seed(3)
    values = torch.randn(int(cu[-1]), 3, generator=gen)
    width = torch.randint(1, 5, (int(cu[-1]),), generator=gen)
    ahead, behind = window_means(values, cu, width)
    for s, e in bounds(cu):
        for t in range(s, e):
            w = int(width[t])
            torch.testing.assert_close(ahead[t], values[t : min(t + w, e)].mean(0))
            torch.testing.assert_close(behind[t], values[max(t - w + 1, s) : t + 1].mean(0))
    ones = window_means(values, cu, torch.ones_like(width))
    assert torch.equal(ones[0], values) and torch.equal(ones[1], values)


def test_routing_windows_compare_windows_and_ignore_stationary_noise():
    """Width 1 is H-Net's routing; width 3 on a noisy signal with one lasting change: the change stays
    a boundary, the noise opens far fewer chunks."""
    gen = torch.Generator().manual_seed(0)
    dim = 8
    level = torch.cat([torch.ones(40, dim), -torch.ones(40, dim)]) + 1.2 * torch.randn(80, dim, generator=gen)
    x = Ragged.from_list(
        [level, level[:1]], modality=[torch.zeros(80, dtype=torch.long), torch.zeros(1, dtype=torch.long)]
    )
    plain = DynamicChunker(dim, tied_routing=True, num_modalities=2)
    one = DynamicChunker(dim, tied_routing=True, num_modalities=2, routing_windows=[1, 1])
    three = DynamicChunker(dim, tied_routing=True, num_modalities=2, routing_windows=[3, 1])
    assert one.routing_windows is None and torch.equal(one(x).probs, plain(x).probs)
    p1, p3 = plain(x).boundary_mask, three(x).boundary_mask
    assert bool(p3[40]) and bool(p3[80])  # the change, and the second sequence's start
    assert int(p3.sum()) <= int(p1.sum()) / 2  # 4 of 8 on this seed
    with pytest.raises(ValueError, match="≥ 1"):
        DynamicChunker(dim, routing_windows=[0])

"""Baseline segmentations (fixed stride, random, VAD edges) and the chunker / model running on them."""

import math

import pytest
import torch

from mmchunk.chunker import DynamicChunker
from mmchunk.model import ChunkFusionModel
from mmchunk.ragged import Ragged
from mmchunk.segmentation import (
    BaselineSegmentation,
    fixed_stride_boundaries,
    local_positions,
    random_boundaries,
    time_boundaries,
)
from tests.test_model import small_net, tiny_batch, train_terms


def cu(lengths):
    return torch.tensor([0, *torch.tensor(lengths).cumsum(0).tolist()], dtype=torch.int32)


def test_fixed_stride_against_a_loop():
    lengths = [7, 0, 1, 10, 4]
    for k in (1.0, 3.0, 3.7, 2.5, 50.0):
        got = fixed_stride_boundaries(cu(lengths), sum(lengths), k)
        want = []
        for n in lengths:  # a boundary wherever the running count of k-strides steps up
            want += [i == 0 or math.floor(i / k) > math.floor((i - 1) / k) for i in range(n)]
        assert got.tolist() == want
    assert fixed_stride_boundaries(cu([6]), 6, 3.0).tolist() == [1, 0, 0, 1, 0, 0]
    long = fixed_stride_boundaries(cu([3700]), 3700, 3.7)
    assert long.sum().item() == 1000  # a fractional stride keeps its mean exactly
    assert local_positions(cu([2, 0, 3]), 5).tolist() == [0, 1, 0, 1, 2]
    with pytest.raises(ValueError, match="frames_per_chunk"):
        fixed_stride_boundaries(cu([3]), 3, 0.5)


def test_random_boundaries_rate_seed_and_batch_independence():
    lengths = [4000, 0, 1, 300]
    mask = random_boundaries(cu(lengths), sum(lengths), 4.0, seed=3)
    first = mask[:4000]
    assert first[0] and abs(first.float().mean().item() - 0.25) < 0.03
    assert mask[4000].item()  # the length-1 sequence is one chunk
    alone = random_boundaries(cu([300]), 300, 4.0, seed=3)
    assert torch.equal(mask[4001:], alone)  # a clip's draw does not depend on its batch
    assert not torch.equal(random_boundaries(cu([300]), 300, 4.0, seed=4), alone)
    assert random_boundaries(cu([0]), 0, 4.0, seed=0).numel() == 0


def test_time_boundaries_by_hand():
    starts = [torch.arange(6) * 0.04, torch.zeros(0), torch.arange(3) * 0.04]
    x = Ragged.from_list(
        [torch.zeros(len(s), 2) for s in starts], t_start=starts, t_end=[s + 0.04 for s in starts]
    )
    mask = time_boundaries(x, [[0.05, 0.08, 0.5], [0.1], []])
    # 0.05 → the token at 0.08 (index 2); 0.08 → index 2 again; 0.5: past the clip; the empty clip has none
    assert mask.tolist() == [True, False, True, False, False, False, True, False, False]
    with pytest.raises(ValueError, match="3 sequences"):
        time_boundaries(x, [[0.1]])


def test_chunker_with_imposed_boundaries_pools_and_dechunks_plainly():
    torch.manual_seed(0)
    x = Ragged.from_list([torch.randn(n, 8) for n in (7, 1, 5)])
    chunker = DynamicChunker(8, pooling="mean")
    mask = fixed_stride_boundaries(x.cu_seqlens, x.num_tokens, 3.0)
    out = chunker(x, boundaries=mask)
    assert torch.equal(out.boundary_mask, mask)
    want = []
    for seq in x.split():  # each fixed stride pooled on its own
        want += [seq[i : i + 3].mean(0) for i in range(0, len(seq), 3)]
    torch.testing.assert_close(out.chunks.values, torch.stack(want))
    assert out.chunks.cu_seqlens.tolist() == [0, 3, 4, 6]
    z = torch.randn(out.chunks.num_tokens, 8)
    # p = 1 at every chunk: no smoothing, no scaling; the residual projection starts at zero
    torch.testing.assert_close(chunker.dechunk(z, out), z[out.chunk_index])
    only_inner = torch.zeros(x.num_tokens, dtype=torch.bool)
    assert chunker(x, boundaries=only_inner).chunks.num_tokens == 3  # sequence starts still open chunks
    with pytest.raises(ValueError, match="imposed boundaries"):
        chunker(x, boundaries=mask[:-1])
    with pytest.raises(ValueError, match="imposed boundaries"):
        chunker(x, boundaries=mask.float())


def test_model_with_fixed_audio_segmentation_trains_without_audio_ratio_loss():
    rule = {"audio": {"rule": "fixed", "frames_per_chunk": 2.5}}
    model, objectives = small_net(("audio", "text", "video"), segmentation=rule)
    out, terms = train_terms(model, objectives, tiny_batch())
    routing = out.routing["audio"]
    frames = model.encoders["audio"](tiny_batch()["audio"]).cu_seqlens.diff().tolist()
    expected = torch.cat([fixed_stride_boundaries(cu([n]), n, 2.5) for n in frames])
    assert torch.equal(routing.boundary_mask, expected)
    assert "ratio_audio" not in terms and "ratio_text" in terms
    terms["total"].backward()
    assert model.encoders["audio"].proj.weight.grad.abs().sum() > 0


def test_model_with_vad_segmentation_cuts_at_the_vad_edges():
    rate = 16_000
    t = torch.arange(rate) / rate
    tone = 0.3 * torch.sin(2 * math.pi * 220 * t)
    wave = torch.cat(
        [torch.zeros(rate // 2), tone, torch.zeros(rate // 2)]
    )  # speech-like energy from 0.5 s to 1.5 s
    audio = Ragged.from_list([wave])
    small = {"audio": {"depth": 1}, "text": {"depth": 1}}
    model = ChunkFusionModel(
        dim=16,
        embed_dim=8,
        backbone={"depth": 1},
        heads=2,
        encoders=small,
        segmentation={"audio": {"rule": "energy_vad"}},
    ).eval()
    feats = model.encoders["audio"](audio)
    routed = model.route("audio", audio, feats)
    opened = feats.t_start[routed.boundary_mask].tolist()
    assert opened[0] == 0.0 and len(opened) == 3
    assert opened[1:] == pytest.approx([0.5, 1.5], abs=0.021)


def test_bad_segmentation_settings_are_one_line_errors():
    small = {"audio": {"depth": 1}, "text": {"depth": 1}, "video": {"depth": 1}}
    with pytest.raises(ValueError, match="unknown rule 'stride'"):
        ChunkFusionModel(dim=16, heads=2, encoders=small, segmentation={"audio": {"rule": "stride"}})
    with pytest.raises(ValueError, match="audio only"):
        ChunkFusionModel(dim=16, heads=2, encoders=small, segmentation={"video": {"rule": "silero_vad"}})
    with pytest.raises(ValueError, match="no 'smell' encoder"):
        ChunkFusionModel(dim=16, heads=2, encoders=small, segmentation={"smell": {"rule": "fixed"}})
    with pytest.raises(ValueError, match="waveforms"):
        BaselineSegmentation("energy_vad").boundaries(Ragged.from_list([torch.zeros(3, 2)]))

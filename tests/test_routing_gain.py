"""Gain control of the routing (`DynamicChunker`'s `routing_gain`) and `segment_quantile`, against
per-sequence loops; its windowed form for long recordings and its refusal by the step paths."""

from __future__ import annotations

import pytest
import torch
from test_longform import model, one_pass_starts, recording

from mmchunk import Ragged
from mmchunk.chunker import GAIN_RANGE, PEAK_QUANTILE, DynamicChunker
from mmchunk.data.decode import decode_audio
from mmchunk.longform import long_audio_boundaries
from mmchunk.model import ChunkFusionModel
from mmchunk.ragged_ops import segment_quantile

LENGTHS, KINDS = (6, 0, 1, 9, 12, 4), (0, 0, 0, 1, 0, 0)


def batch(seed: int = 0) -> Ragged:
    gen = torch.Generator().manual_seed(seed)
    seqs = [torch.randn(n, 5, generator=gen) for n in LENGTHS]
    mods = [torch.full((n,), k, dtype=torch.long) for n, k in zip(LENGTHS, KINDS)]
    return Ragged.from_list(seqs, modality=mods)


def chunkers() -> tuple[DynamicChunker, DynamicChunker]:
    """(gain on modality 0, no gain), with the same weights."""
    gained = DynamicChunker(5, tied_routing=True, num_modalities=2, routing_gain=[True, False])
    plain = DynamicChunker(5, tied_routing=True, num_modalities=2)
    return gained, plain


def per_sequence(probs: torch.Tensor, cu: torch.Tensor) -> list[torch.Tensor]:
    return [probs[a:b] for a, b in zip(cu[:-1].tolist(), cu[1:].tolist())]


@pytest.mark.parametrize("q", [0.0, 0.1, 0.5, 0.9, 1.0])
def test_segment_quantile_matches_torch_quantile_per_sequence(q):
    gen = torch.Generator().manual_seed(2)
    lengths = [0, 1, 2, 5, 17, 0, 100]
    cu = torch.tensor([0, *torch.tensor(lengths).cumsum(0).tolist()], dtype=torch.int32)
    values = torch.rand(int(cu[-1]), generator=gen)
    values[10:14] = 0.5  # ties
    expected = [
        torch.quantile(v, q) if len(v) else torch.tensor(float("nan")) for v in per_sequence(values, cu)
    ]
    torch.testing.assert_close(segment_quantile(values, cu, q), torch.stack(expected), equal_nan=True)
    assert segment_quantile(values[:0], torch.zeros(3, dtype=torch.int32), q).isnan().all()
    with pytest.raises(ValueError, match="q must be in"):
        segment_quantile(values, cu, 1.5)


def test_training_tracks_the_peak_level_and_leaves_the_probabilities():
    gained, plain = chunkers()
    assert gained.routing_peak.isnan().all()  # nothing measured: no gain
    levels = []
    for seed in (0, 1):
        x = batch(seed)
        probs = gained.train()(x).probs
        torch.testing.assert_close(probs, plain(x).probs, rtol=0, atol=0)
        flagged = [p for p, k in zip(per_sequence(probs, x.cu_seqlens), KINDS) if k == 0 and len(p)]
        levels.append(torch.stack([torch.quantile(p, PEAK_QUANTILE) for p in flagged]).mean())
    expected = levels[0] + 0.05 * (levels[1] - levels[0])  # the first measurement, then a running mean
    torch.testing.assert_close(gained.routing_peak[0], expected)
    assert gained.routing_peak[1].isnan()  # modality 1 has no gain control
    with torch.no_grad():
        gained.routing_peak.fill_(float("nan"))
    x = batch(3)
    torch.testing.assert_close(gained.eval()(x).probs, plain(x).probs, rtol=0, atol=0)


@pytest.mark.parametrize("level", [0.55, 0.9, 0.2])
def test_evaluation_scales_each_sequence_to_the_training_peak(level):
    """A per-sequence loop: p·clamp(level / own peak, GAIN_RANGE), clipped to [0, 1], the sequence
    start kept at 1; the other modality untouched. Where the gain is not clamped, the scaled
    sequence's peak level is the training's."""
    gained, plain = chunkers()
    with torch.no_grad():
        gained.routing_peak[0] = level
    x = batch(4)
    got = gained.eval()(x)
    raw = plain(x).probs.detach()
    checked = 0
    for p, g, kind in zip(per_sequence(raw, x.cu_seqlens), per_sequence(got.probs, x.cu_seqlens), KINDS):
        if not len(p):
            continue
        if kind == 1:
            torch.testing.assert_close(g, p, rtol=0, atol=0)
            continue
        gain = min(max(level / float(torch.quantile(p, PEAK_QUANTILE)), GAIN_RANGE[0]), GAIN_RANGE[1])
        expected = (p * gain).clamp(0, 1)
        expected[0] = 1.0
        torch.testing.assert_close(g, expected)
        unclamped = GAIN_RANGE[0] < level / float(torch.quantile(p, PEAK_QUANTILE)) < GAIN_RANGE[1]
        # long enough that the start (kept at 1) is not an order statistic of the quantile, no clipping
        if unclamped and len(p) > 10 and float((p[1:] * gain).max()) < 1:
            torch.testing.assert_close(torch.quantile(g, PEAK_QUANTILE), torch.tensor(level))
            checked += 1
    assert torch.equal(got.boundary_mask, got.probs > 0.5) and (checked or level != 0.55)
    measured = segment_quantile(raw, x.cu_seqlens, PEAK_QUANTILE)
    torch.testing.assert_close(gained(x, peak=measured).probs, got.probs)  # a given peak: the same
    unit = torch.full((len(LENGTHS),), level)
    torch.testing.assert_close(gained(x, peak=unit).probs[x.modality == 0], raw[x.modality == 0])
    torch.testing.assert_close(gained.raw_routing(x), raw, rtol=0, atol=0)


def test_identical_tokens_stay_unsplit_at_any_gain():
    gained, _ = chunkers()
    with torch.no_grad():
        gained.routing_peak[0] = 1.0
    still = Ragged.from_list([torch.full((7, 5), 2.0)], modality=[torch.zeros(7, dtype=torch.long)])
    assert gained.eval()(still).boundary_mask.tolist() == [True] + [False] * 6


def test_model_option_state_and_refusals():
    m = ChunkFusionModel(dim=16, embed_dim=8, heads=2, backbone={"depth": 1}, routing={"gain": ["audio"]},
                         encoders={"audio": {}, "text": {"depth": 1}})  # fmt: skip
    assert m.chunker.routing_gain.tolist() == [True, False, False]
    assert "chunker.routing_peak" in m.state_dict()
    with torch.no_grad():
        m.chunker.routing_peak[0] = 0.7
    again = ChunkFusionModel(dim=16, embed_dim=8, heads=2, backbone={"depth": 1}, routing={"gain": ["audio"]},
                             encoders={"audio": {}, "text": {"depth": 1}})  # fmt: skip
    again.load_state_dict(m.state_dict())
    assert float(again.chunker.routing_peak[0]) == pytest.approx(0.7)
    assert (
        "chunker.routing_peak"
        not in ChunkFusionModel(dim=16, encoders={"audio": {}, "text": {}}).state_dict()
    )
    with pytest.raises(ValueError, match=r"routing\.gain: unknown modality 'smell'"):
        ChunkFusionModel(dim=8, routing={"gain": ["smell"]})
    with pytest.raises(ValueError, match=r"routing\.gain: a list of modality names, got the string 'audio'"):
        ChunkFusionModel(dim=8, routing={"gain": "audio"})
    gained, _ = chunkers()
    with pytest.raises(ValueError, match="no routing windows, centring or gain"):
        gained.init_state(1, 4, torch.zeros(1, 5))


def test_windowed_recording_uses_the_whole_recording_peak(tmp_path):
    """Window by window (a first pass for the recording's peak level) equals one pass with the gain,
    at a gain inside GAIN_RANGE (so the windowed peak must be the recording's), and the gain changes
    the boundaries (so the comparison can fail); a peak taken from one window alone differs."""
    path = recording(tmp_path / "a.flac", 20.0, 44_100)
    m = model({"routing": {"windows": {"audio": 2}, "gain": ["audio"]}})
    plain = one_pass_starts(m, path)  # no level measured yet: no gain
    wave, _ = decode_audio(path.read_bytes(), 16_000)
    with torch.no_grad():
        feats = m.encoders["audio"](Ragged.from_list([wave]))
        tagged = Ragged(
            feats.values, feats.cu_seqlens, modality=torch.zeros(feats.num_tokens, dtype=torch.long)
        )
        whole = segment_quantile(m.chunker.raw_routing(tagged), feats.cu_seqlens, PEAK_QUANTILE)
        m.chunker.routing_peak[0] = 1.3 * whole[0]  # gain ×1.3: not clamped
        expected = one_pass_starts(m, path)
        first = Ragged(
            feats.values[:75], torch.tensor([0, 75], dtype=torch.int32), modality=tagged.modality[:75]
        )
        local = segment_quantile(m.chunker.raw_routing(first), first.cu_seqlens, PEAK_QUANTILE)
    assert not torch.allclose(local, whole)  # a window's own peak is not the recording's
    starts, frames, _ = long_audio_boundaries(m, path, window_s=3.0, context_s=1.0, block_s=1.1)
    assert torch.equal(starts, expected) and expected.numel() > plain.numel() and expected.numel() < frames

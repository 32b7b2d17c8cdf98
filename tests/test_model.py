"""Layers, encoders, the common chunk space and the fusion model against independent references."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import bounds, cu_from_lengths

from mmchunk import Ragged
from mmchunk.backbone import ChunkBackbone
from mmchunk.chunker import DynamicChunker
from mmchunk.chunkspace import MODALITY_IDS, merge_in_time
from mmchunk.encoders import (
    AudioSamples,
    TextBytes,
    VideoFrames,
    build_encoder,
    frame_waveforms,
    stack_context,
)
from mmchunk.layers import Attention, GatedRecurrence, rotary
from mmchunk.losses import (
    WORD_HASH_SPAN,
    bag_of_words_loss,
    byte_ctc_loss,
    hardest_negatives,
    info_nce,
    word_buckets,
    word_hash_table,
)
from mmchunk.metrics import retrieval_metrics
from mmchunk.model import ChunkFusionModel
from mmchunk.objectives import Objectives
from mmchunk.ragged_ops import mean_pool, select_rows, take_sequences


def test_rotary_depends_only_on_relative_position():
    q, k = torch.randn(2, 1, 1, 8, dtype=torch.float64)
    dots = [
        (
            rotary(q, torch.tensor([p + 3.7], dtype=torch.float64))
            * rotary(k, torch.tensor([p], dtype=torch.float64))
        ).sum()
        for p in (0.0, 1.5, 42.25)
    ]
    torch.testing.assert_close(torch.stack(dots), dots[0].expand(3))
    torch.testing.assert_close(rotary(q, torch.tensor([5.0])).norm(), q.norm())


def test_gated_recurrence_is_constant_on_constant_input():
    torch.manual_seed(0)
    layer = GatedRecurrence(6).double()
    x = torch.randn(1, 6, dtype=torch.float64).expand(9, 6).clone()
    out = layer(x, Ragged(x, cu_from_lengths([9])))
    torch.testing.assert_close(out, out[:1].expand(9, 6))


def test_gated_recurrence_matches_a_loop_and_never_crosses_sequences():
    torch.manual_seed(0)
    layer = GatedRecurrence(6).double()
    cu = cu_from_lengths([4, 0, 1, 7])
    x = torch.randn(12, 6, dtype=torch.float64)
    batch = Ragged(x, cu)
    got = layer(x, batch)
    cand, gate, out_gate = layer.in_proj(x).chunk(3, dim=-1)
    z = torch.sigmoid(gate)
    want = torch.empty_like(x)
    for s, e in bounds(cu):
        h = torch.zeros(6, dtype=torch.float64)
        for t in range(s, e):
            z[t] = 1.0 if t == s else z[t]
            h = z[t] * cand[t] + (1 - z[t]) * h
            want[t] = layer.out_proj(h * torch.nn.functional.silu(out_gate[t]))
    torch.testing.assert_close(got, want)


@pytest.mark.parametrize("window", [None, 2])
def test_attention_stays_inside_sequences_and_windows(window):
    torch.manual_seed(0)
    layer = Attention(8, heads=2, window=window).double()
    cu = cu_from_lengths([6, 5])
    x = torch.randn(11, 8, dtype=torch.float64)
    base = layer(x, Ragged(x, cu))
    changed = x.clone()
    changed[8] += 1.0  # a token of the second sequence
    out = layer(changed, Ragged(changed, cu))
    torch.testing.assert_close(out[:6], base[:6])  # the first sequence never sees it
    if window is not None:
        far = [i for i in range(6, 11) if abs(i - 8) > window]
        torch.testing.assert_close(out[far], base[far])
    assert not torch.allclose(out[8], base[8])


def test_frame_waveforms_matches_per_sequence_padding():
    cu = cu_from_lengths([700, 0, 1, 320])
    x = Ragged(torch.randn(1021), cu)
    frames, frame_cu, index = frame_waveforms(x, 320)
    assert frame_cu.tolist() == [0, 3, 3, 4, 5]
    want = []
    for s, e in bounds(cu):
        seq = x.values[s:e]
        padded = torch.nn.functional.pad(seq, (0, -len(seq) % 320))
        want += list(padded.reshape(-1, 320))
    torch.testing.assert_close(frames, torch.stack(want))
    assert index.tolist() == [0, 1, 2, 0, 0]


@pytest.mark.parametrize("width", [320, 640, 481])
def test_widened_frames_are_centred_windows_of_each_sequence_alone(width):
    cu = cu_from_lengths([700, 0, 1, 320, 999])
    x = Ragged(torch.randn(2020), cu)
    frames, frame_cu, _ = frame_waveforms(x, 320, width)
    want = []
    for s, e in bounds(cu):
        left = (width - 320) // 2
        padded = torch.nn.functional.pad(x.values[s:e], (left, width))
        want += [padded[i * 320 : i * 320 + width] for i in range(-(-(e - s) // 320))]
    assert frames.shape == (len(want), width)
    torch.testing.assert_close(frames, torch.stack(want))
    assert frame_cu.tolist() == [0, 3, 3, 4, 5, 9]


@pytest.mark.parametrize("context", [0, 1, 3])
def test_stack_context_takes_neighbours_within_each_sequence(context):
    lengths = [5, 0, 1, 2, 7]
    cu = cu_from_lengths(lengths)
    feats = torch.randn(sum(lengths), 3)
    index = torch.cat([torch.arange(n) for n in lengths])
    out = stack_context(feats, cu, index, context)
    want = []
    for s, e in bounds(cu):
        for i in range(e - s):
            rows = [s + min(max(i + o, 0), e - s - 1) for o in range(-context, context + 1)]
            want.append(feats[rows].reshape(-1))
    assert out.shape == (sum(lengths), 3 * (2 * context + 1))
    torch.testing.assert_close(out, torch.stack(want))


STEMS = {  # the plain stems, a 20 ms one with context, and the demo recipe's (25 Hz, CMN, ±1 frame)
    "logmel": {"stem": "logmel"},
    "conv": {"stem": "conv"},
    "logmel-cmn-context": {"stem": "logmel", "band_mean": True, "window_ms": 40.0, "context": 2},
    "recipe": {"stem": "logmel", "band_mean": True, "frame_ms": 40.0, "window_ms": 60.0, "context": 1},
}


@pytest.mark.parametrize("stem", STEMS)
def test_audio_encoder_sees_silence_as_stationary(stem):
    torch.manual_seed(0)
    enc = AudioSamples(16, depth=1, **STEMS[stem])
    wave = torch.cat([torch.zeros(3200), 0.3 * torch.randn(1600), torch.zeros(3200)])
    x = Ragged.from_list([wave, torch.zeros(1), torch.randn(500)])
    frames, frame_cu, index = frame_waveforms(x, enc.hop, enc.width)
    # frames that neither reach the noise burst at sample 3200 nor stack the context of one that does
    silent = 3200 // enc.hop - math.ceil((enc.width - enc.hop) / 2 / enc.hop) - enc.context
    stem_out = enc.features(frames, frame_cu, index)[:silent]
    assert silent >= 3
    torch.testing.assert_close(stem_out[1:], stem_out[0].expand(silent - 1, -1))
    out = enc(x)
    lengths = [math.ceil(8000 / enc.hop), 1, math.ceil(500 / enc.hop)]
    assert out.lengths.tolist() == lengths and out.values.shape == (sum(lengths), 16)
    period = enc.hop / 16_000
    assert out.t_start[:3].tolist() == pytest.approx([0.0, period, 2 * period])
    assert enc.native_rate_hz == pytest.approx(1 / period)


def _spoken_like(gen: torch.Generator) -> torch.Tensor:
    """Bursts of harmonic tones and noise between pauses, over a −60 dBFS noise floor: `[N]` at 16 kHz."""
    pieces = []
    for _ in range(4):
        t = torch.arange(3200) / 16_000
        tone = torch.sin(
            2 * math.pi * float(100 + 300 * torch.rand((), generator=gen)) * t * torch.arange(1, 4)[:, None]
        )
        pieces += [torch.zeros(2400), 0.2 * tone.sum(0), 0.1 * torch.randn(1600, generator=gen)]
    wave = torch.cat(pieces)
    return wave + 1e-3 * torch.randn(wave.numel(), generator=gen)


@pytest.mark.parametrize("stem", STEMS)
def test_routing_ignores_the_recording_level(stem):
    """A waveform, the same ×0.1 and ×10: the same stem features, the same chunk boundaries."""
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(1)
    enc = AudioSamples(32, depth=1, **STEMS[stem])
    chunker = DynamicChunker(32)
    with torch.no_grad():  # routing projections away from the identity, as after training
        chunker.q_proj.weight.add_(torch.randn(32, 32, generator=gen) / 4)
        chunker.k_proj.weight.add_(torch.randn(32, 32, generator=gen) / 4)
    waves = [_spoken_like(gen), _spoken_like(gen)[:5000], torch.zeros(700)]
    runs = []
    for gain in (1.0, 0.1, 10.0):
        with torch.no_grad():
            feats = enc(Ragged.from_list([w * gain for w in waves]))
            runs.append((feats.values, chunker(feats).boundary_mask))
    for feats, mask in runs[1:]:
        torch.testing.assert_close(feats, runs[0][0], atol=2e-4, rtol=1e-4)
        assert torch.equal(mask, runs[0][1])
    assert 4 < int(runs[0][1].sum()) < len(runs[0][1]) - 10  # real segmentation, neither none nor all


def test_video_and_text_encoders():
    torch.manual_seed(0)
    video = VideoFrames(16)
    frame = torch.randint(0, 255, (3, 48, 64), dtype=torch.uint8)
    clip = torch.stack([frame, frame, frame, torch.zeros_like(frame)])
    x = Ragged.from_list([clip, frame[None]], t_start=[torch.arange(4) * 0.04, torch.zeros(1)],
                         t_end=[torch.arange(1, 5) * 0.04, torch.full((1,), 0.04)])  # fmt: skip
    out = video(x)
    assert out.values.shape == (5, 16) and out.lengths.tolist() == [4, 1]
    stem = video.stem(clip)
    torch.testing.assert_close(stem[1], stem[0])  # identical frames, identical features
    assert video.stem(clip[:0]).shape == (0, 16) and video(Ragged.from_list([clip[:0]])).num_tokens == 0
    # the same object one patch further right: a spatial mean over patches could not tell them apart
    still = torch.full((2, 3, 48, 64), 50, dtype=torch.uint8)
    still[0, :, 8:18, 8:18] = 220
    still[1, :, 8:18, 16:26] = 220
    moved = video.stem(still)
    assert (1 - torch.nn.functional.cosine_similarity(moved[0], moved[1], dim=0)) > 1e-3
    odd = video.stem(torch.randint(0, 255, (2, 3, 37, 51), dtype=torch.uint8))  # any frame size
    assert odd.shape == (2, 16) and torch.isfinite(odd).all()
    with pytest.raises(ValueError, match="expected frames"):
        video(Ragged.from_list([torch.zeros(2, 48, 64, dtype=torch.uint8)]))
    text = TextBytes(16)
    t = Ragged.from_list([torch.tensor(list(b"ab c")), torch.tensor(list(b"z"))])
    assert text(t).values.shape == (5, 16)
    with pytest.raises(ValueError, match="unknown encoder"):
        build_encoder("smell", 16)


@pytest.mark.parametrize("size", [(48, 64), (37, 51), (8, 8)])
def test_video_stem_is_the_patch_convolution_of_pixels_in_minus_half_to_half(size):
    torch.manual_seed(0)
    video = VideoFrames(16)
    frames = torch.randint(0, 256, (3, 3, *size), dtype=torch.uint8)
    cells = torch.nn.functional.gelu(video.patch(frames.float() / 255.0 - 0.5))
    cells = torch.nn.functional.adaptive_avg_pool2d(cells, video.grid)
    want = video.norm(video.proj(cells.flatten(1)))
    torch.testing.assert_close(video.stem(frames), want, atol=1e-5, rtol=1e-5)


def test_frame_waveforms_of_no_sequences_and_a_window_shorter_than_the_hop():
    empty = Ragged(torch.zeros(0), torch.zeros(1, dtype=torch.int32))
    frames, frame_cu, index = frame_waveforms(empty, 320, 480)
    assert frames.shape == (0, 480) and frame_cu.tolist() == [0] and index.numel() == 0
    with pytest.raises(ValueError, match="shorter than the hop"):
        frame_waveforms(Ragged.from_list([torch.randn(700)]), 320, 200)
    with pytest.raises(ValueError, match="window_ms"):
        AudioSamples(16, frame_ms=40.0, window_ms=20.0)


def test_merge_in_time_orders_by_start_then_modality():
    audio = Ragged.from_list(
        [torch.tensor([[1.0], [2.0]]), torch.tensor([[3.0]])],
        t_start=[torch.tensor([0.0, 0.5]), torch.tensor([0.2])],
        t_end=[torch.tensor([0.5, 1.0]), torch.tensor([0.4])],
    )
    text = Ragged.from_list(
        [torch.tensor([[10.0]]), torch.zeros(0, 1)],
        t_start=[torch.tensor([0.5]), torch.zeros(0)],
        t_end=[torch.tensor([0.9]), torch.zeros(0)],
    )
    merged, order = merge_in_time({"text": text, "audio": audio})
    assert merged.values.flatten().tolist() == [1.0, 2.0, 10.0, 3.0]  # tie at 0.5: audio before text
    assert merged.lengths.tolist() == [3, 1]
    assert merged.modality.tolist() == [MODALITY_IDS[m] for m in ("audio", "audio", "text", "audio")]
    assert torch.equal(torch.cat([text.values, audio.values])[order], merged.values)


def test_take_sequences_and_mean_pool():
    x = Ragged.from_list([torch.ones(2, 3), torch.zeros(0, 3), 2 * torch.ones(3, 3)], modality=[0, 1, 2])
    y = take_sequences(x, torch.tensor([2, 0, 2, 1]))
    assert y.lengths.tolist() == [3, 2, 3, 0]
    assert y.modality.tolist() == [2, 2, 2, 0, 0, 2, 2, 2]
    assert mean_pool(y)[:, 0].tolist() == [2.0, 1.0, 2.0, 0.0]


def test_select_rows_keeps_sequences_against_a_loop():
    torch.manual_seed(0)
    seqs = [torch.randn(n, 3) for n in (4, 0, 1, 5)]
    x = Ragged.from_list(seqs, modality=[torch.randint(0, 2, (len(s),)) for s in seqs])
    keep = x.modality == 1
    y = select_rows(x, keep)
    assert y.batch_size == 4
    for got, seq, mod in zip(y.split(), seqs, x.modality.split(x.lengths.tolist())):
        torch.testing.assert_close(got, seq[mod == 1])
    assert (y.modality == 1).all()
    assert select_rows(x, torch.zeros_like(keep)).lengths.tolist() == [0, 0, 0, 0]


def test_retrieval_metrics_hand_values():
    sim = torch.tensor([[0.9, 0.1, 0.2], [0.8, 0.5, 0.1], [0.1, 0.2, 0.3]])
    m = retrieval_metrics(sim, "a2t")  # ranks 0, 1, 0
    assert m["a2t_R@1"] == pytest.approx(2 / 3) and m["a2t_R@5"] == 1.0
    assert m["a2t_mAP@10"] == pytest.approx((1 + 0.5 + 1) / 3)


def test_info_nce_and_negatives():
    a = torch.nn.functional.normalize(torch.randn(4, 8), dim=-1)
    b = torch.nn.functional.normalize(torch.randn(4, 8), dim=-1)
    scale = torch.tensor(math.log(10.0))
    logits = 10.0 * a @ b.T
    want = (
        sum(-torch.log_softmax(logits[i], 0)[i] - torch.log_softmax(logits[:, i], 0)[i] for i in range(4)) / 8
    )
    torch.testing.assert_close(info_nce(a, b, scale), want)
    negatives = hardest_negatives(torch.eye(4) * 5 + torch.randn(4, 4))
    assert (negatives != torch.arange(4)).all()


def test_byte_ctc_loss_matches_the_padded_library_call():
    """Per-sequence CTC on the packed frames equals torch's padded batch CTC ("mean": each loss over
    its transcript length, then the batch mean); an empty audio sequence is left out."""
    torch.manual_seed(0)
    frames, texts = [17, 1, 0, 9, 12], [b"hi there", b"", b"skipped", b"aab", b"a"]
    log_probs = torch.randn(sum(frames), 257).log_softmax(-1).requires_grad_()
    cu, text_cu = cu_from_lengths(frames), cu_from_lengths([len(t) for t in texts])
    text = torch.tensor([b for t in texts for b in t])
    got = byte_ctc_loss(log_probs, cu, text, text_cu)
    keep = [i for i, n in enumerate(frames) if n]
    parts = log_probs.split(frames)
    padded = torch.nn.utils.rnn.pad_sequence([parts[i] for i in keep])  # [T, N, C]
    targets = torch.nn.utils.rnn.pad_sequence(
        [torch.tensor(list(texts[i]) or [0]) + 1 for i in keep], batch_first=True
    )
    want = torch.nn.functional.ctc_loss(
        padded,
        targets,
        torch.tensor([frames[i] for i in keep]),
        torch.tensor([len(texts[i]) for i in keep]),
        zero_infinity=True,
    )  # "mean" divides by the target lengths clamped at 1
    torch.testing.assert_close(got, want)
    got.backward()
    assert log_probs.grad[cu[2] : cu[3]].numel() == 0 and torch.isfinite(log_probs.grad).all()
    impossible = byte_ctc_loss(log_probs[:1], cu_from_lengths([1]), text[:8], cu_from_lengths([8]))
    assert impossible.item() == 0.0  # one frame cannot emit eight bytes: zero_infinity


def test_word_buckets_and_bag_of_words_loss_match_a_per_sequence_reference():
    """Hashed words of packed transcripts equal a per-sequence regex split (ASCII case folded,
    punctuation splits, UTF-8 bytes stay in words, words longer than the table wrap around), and
    the loss equals a hand loop of soft-target cross-entropy; empty and word-less sequences drop out."""
    import re

    table, buckets = word_hash_table(), 97
    long_word = b"a" * (WORD_HASH_SPAN + 5)
    texts = [b"The red, star  MOVES up!", b"", b"...", b"caf\xc3\xa9 x", long_word, b"red red"]
    text = torch.tensor([b for t in texts for b in t], dtype=torch.uint8)
    cu = cu_from_lengths([len(t) for t in texts])
    got_bucket, got_seq = word_buckets(text, cu, table, buckets)
    want_bucket, want_seq = [], []
    for i, t in enumerate(texts):
        for word in re.findall(rb"[^\x00-\x20!-/:-@\[-`{-\x7f]+", t.lower()):
            want_bucket.append(sum(int(table[j % WORD_HASH_SPAN, c]) for j, c in enumerate(word)) % buckets)
            want_seq.append(i)
    assert got_bucket.tolist() == want_bucket and got_seq.tolist() == want_seq
    assert want_seq == [0, 0, 0, 0, 0, 3, 3, 4, 5, 5]
    assert word_buckets(text[:0], cu_from_lengths([0, 0]), table, buckets)[0].numel() == 0

    torch.manual_seed(0)
    logits = torch.randn(len(texts), buckets, requires_grad=True)
    got = bag_of_words_loss(logits, got_bucket, got_seq)
    terms = []
    for i in range(len(texts)):
        bag = {b for b, s in zip(want_bucket, want_seq) if s == i}
        if bag:
            terms.append(-sum(logits[i].log_softmax(-1)[b] for b in bag) / len(bag))
    torch.testing.assert_close(got, torch.stack(terms).mean())
    got.backward()
    assert logits.grad[1].abs().sum() == 0 and logits.grad[2].abs().sum() == 0  # no words: no gradient
    assert bag_of_words_loss(logits, got_bucket[:0], got_seq[:0]).item() == 0.0


def tiny_batch():
    torch.manual_seed(0)
    audio = Ragged.from_list([0.1 * torch.randn(n) for n in (4000, 2400, 3000)])
    audio = Ragged(
        audio.values,
        audio.cu_seqlens,
        t_start=torch.zeros(audio.num_tokens),
        t_end=torch.zeros(audio.num_tokens),
    )
    texts = [b"the red cube", b"two stars", b"near the river"]
    text = Ragged.from_list(
        [torch.tensor(list(t)) for t in texts],
        t_start=[torch.linspace(0, 0.2, len(t)) for t in texts],
        t_end=[torch.linspace(0.01, 0.25, len(t)) for t in texts],
    )
    frames = [torch.randint(0, 255, (n, 3, 48, 64), dtype=torch.uint8) for n in (6, 0, 1)]
    video = Ragged.from_list(
        frames,
        t_start=[torch.arange(len(f)) * 0.04 for f in frames],
        t_end=[torch.arange(1, len(f) + 1) * 0.04 for f in frames],
    )
    return {"audio": audio, "text": text, "video": video}


def small_model(modalities: tuple[str, ...] = ("audio", "text"), **network) -> ChunkFusionModel:
    """The tests' common network: seeded, 32 wide, one block per encoder and main network, on
    `modalities`; `network` goes to `ChunkFusionModel` (a `backbone` dict is merged)."""
    torch.manual_seed(0)
    encoders = {m: {"depth": 1} for m in modalities}
    backbone = network.pop("backbone", {})
    if backbone.get("kind", "chunk") == "chunk":
        backbone = {"depth": 1, **backbone}
    return ChunkFusionModel(dim=32, embed_dim=16, heads=2, encoders=encoders, backbone=backbone, **network)


def small_net(
    modalities=("audio", "text"), objectives=None, **network
) -> tuple[ChunkFusionModel, Objectives]:
    """`small_model` and the `Objectives` of `objectives` (None: the defaults) set up for it."""
    model = small_model(modalities, **network)
    return model, Objectives(objectives, model)


def train_terms(model: ChunkFusionModel, objectives: Objectives, inputs: dict, step: int = 0):
    """The network's output on `inputs` and every objective's terms, as a training step computes them."""
    out = model(inputs, align=objectives.needs_alignment)
    return out, objectives(out, inputs, step)


def test_fusion_model_trains_every_part():
    model, objectives = small_net(("audio", "text", "video"))
    out, terms = train_terms(model, objectives, tiny_batch())
    assert out.audio_embedding.shape == out.text_embedding.shape == (3, 16)
    torch.testing.assert_close(out.audio_embedding.norm(dim=-1), torch.ones(3))
    expected = {"contrastive", "match", "total"} | {
        f"{k}_{m}" for k in ("ratio", "predict") for m in ("audio", "text", "video")
    }
    assert set(terms) == expected
    assert all(torch.isfinite(v) for v in terms.values())
    weights = {"contrastive": 1.0, "match": 0.5, "ratio": 0.03, "predict": 0.1}  # the defaults, by hand
    want = sum(weights[k.split("_")[0]] * v for k, v in terms.items() if k != "total")
    torch.testing.assert_close(terms["total"], want)
    terms["total"].backward()
    names = ["chunker.q_proj.weight", "encoders.audio.proj.weight", "encoders.video.patch.weight"]
    names += [
        "encoders.text.embed.weight",
        "main.inner.0.mixer.qkv.weight",
        "main.outer.0.mixer.in_proj.weight",
        "fusion.0.mixer.qkv.weight",
        "logit_scale",
    ]
    for name in names:
        grad = dict(model.named_parameters())[name].grad
        assert grad is not None and grad.abs().sum() > 0, name
    for name in ("predict.heads.audio.weight", "match.head.1.weight"):
        grad = dict(objectives.named_parameters())[name].grad
        assert grad is not None and grad.abs().sum() > 0, name
    assert model.targets["audio"] == pytest.approx(50 / 6)


def test_video_clips_trains_on_the_first_clips_and_evaluates_all():
    model = small_model(("audio", "text", "video"), video_clips=2)
    batch = tiny_batch()  # clips of 6, 0 and 1 frames
    trained = model(batch).routing["video"]
    model.eval()
    with torch.no_grad():
        every = model(batch).routing["video"]
    assert trained.chunks.batch_size == 2 and every.chunks.batch_size == 3
    assert trained.probs.shape == (6,) and every.probs.shape == (7,)
    torch.testing.assert_close(trained.probs.detach(), every.probs[:6])  # each clip routes alone
    with pytest.raises(
        ValueError, match="match: fuses every clip's video: it cannot train with video_clips 2"
    ):
        small_net(("audio", "text", "video"), video_clips=2)  # the default objectives match
    with pytest.raises(ValueError, match="video_clips: a number of clips ≥ 1, got 0"):
        small_model(("audio", "text", "video"), video_clips=0)


def test_without_the_matching_objective_no_fusion_pass_runs():
    """The demo recipe's setting: no matching loss, and no fusion stack run in training."""
    model, objectives = small_net(objectives={"contrastive": {}, "ratio": {}, "predict": {}})
    batch = tiny_batch()
    _, terms = train_terms(model, objectives, {"audio": batch["audio"], "text": batch["text"]})
    assert "match" not in terms
    parts = terms["contrastive"] + sum(0.03 * v for k, v in terms.items() if k.startswith("ratio"))
    parts = parts + sum(0.1 * v for k, v in terms.items() if k.startswith("predict"))
    torch.testing.assert_close(terms["total"], parts)
    terms["total"].backward()
    assert model.fusion[0].mixer.qkv.weight.grad is None
    _, zero = small_net(objectives={"contrastive": {}, "match": {"weight": 0}})
    assert list(zero) == ["contrastive"]  # a weight of 0 turns an objective off


def test_ctc_objective_adds_a_byte_ctc_loss_that_trains_the_hierarchy():
    model, objectives = small_net(
        aligner={}, objectives={"contrastive": {}, "match": {}, "ctc": {"weight": 0.5}}
    )
    batch = tiny_batch()
    _, terms = train_terms(model, objectives, {"audio": batch["audio"], "text": batch["text"]})
    assert torch.isfinite(terms["ctc"]) and terms["ctc"] > 0
    torch.testing.assert_close(
        terms["total"], terms["contrastive"] + 0.5 * terms["match"] + 0.5 * terms["ctc"]
    )
    terms["ctc"].backward()
    for name in ("ctc_head.1.weight", "main.inner.0.mixer.qkv.weight", "encoders.audio.proj.weight"):
        grad = dict(model.named_parameters())[name].grad
        assert grad is not None and grad.abs().sum() > 0, name
    assert small_model().ctc_head is None
    with pytest.raises(ValueError, match=r"ctc: the network has no CTC head to train \(set model.aligner"):
        small_net(objectives={"ctc": {}})


def test_bag_of_words_objective_trains_the_audio_tower():
    model, objectives = small_net(objectives={"contrastive": {}, "words": {"weight": 0.5}})
    batch = tiny_batch()
    _, terms = train_terms(model, objectives, {"audio": batch["audio"], "text": batch["text"]})
    assert torch.isfinite(terms["words"]) and terms["words"] > 0
    torch.testing.assert_close(terms["total"], terms["contrastive"] + 0.5 * terms["words"])
    terms["words"].backward()
    for name in ("main.inner.0.mixer.qkv.weight", "encoders.audio.proj.weight"):
        grad = dict(model.named_parameters())[name].grad
        assert grad is not None and grad.abs().sum() > 0, name
    assert objectives["words"].head[1].weight.grad.abs().sum() > 0
    assert dict(model.named_parameters())["encoders.text.embed.weight"].grad is None  # audio only
    with pytest.raises(ValueError, match="words: buckets must be ≥ 2, got 1"):
        small_net(objectives={"words": {"buckets": 1}})


def test_objectives_by_import_path_and_bad_names():
    from mmchunk.objectives import Contrastive, objective_class

    assert objective_class("mmchunk.objectives.contrastive.Contrastive") is Contrastive
    _, objectives = small_net(objectives={"mmchunk.objectives.contrastive.Contrastive": {"weight": 2.0}})
    assert list(objectives) == ["mmchunk_objectives_contrastive_Contrastive"]
    unknown = r"objectives: unknown objective 'contrast' \(built in: contrastive, "
    with pytest.raises(ValueError, match=unknown):
        small_net(objectives={"contrast": {}})
    not_one = r"objectives: 'mmchunk\.model\.ChunkFusionModel' is not an Objective"
    with pytest.raises(ValueError, match=not_one):
        small_net(objectives={"mmchunk.model.ChunkFusionModel": {}})
    with pytest.raises(ValueError, match=r"objectives: ratio: .*unexpected keyword argument 'weigth'"):
        small_net(objectives={"ratio": {"weigth": 0.1}})
    with pytest.raises(ValueError, match="ratio: weight must be ≥ 0, got -1"):
        small_net(objectives={"ratio": {"weight": -1}})


def test_two_stage_model_adds_second_routing_and_trains_it():
    model, objectives = small_net(("audio", "text", "video"), backbone={"stages": 2})
    out, terms = train_terms(model, objectives, tiny_batch())
    for m in ("audio", "text", "video"):
        fine, coarse = out.routing[m], out.routing[f"{m}_stage2"]
        assert coarse.residual.shape[0] == fine.chunks.num_tokens  # stage 2 routes the fine chunks
        assert coarse.chunks.num_tokens <= fine.chunks.num_tokens
        assert (coarse.chunks.lengths > 0).tolist() == (fine.chunks.lengths > 0).tolist()
        assert torch.isfinite(terms[f"ratio_{m}_stage2"])
    terms["total"].backward()
    grad = model.main.chunker.q_proj.weight.grad
    assert grad is not None and grad.abs().sum() > 0
    with pytest.raises(ValueError, match="backbone: kind must be 'chunk' or 'hrm', got 'rnn'"):
        small_model(backbone={"kind": "rnn"})
    with pytest.raises(ValueError, match=r"backbone: .*unexpected keyword argument 'stage'"):
        small_model(backbone={"stage": 2})


@pytest.mark.parametrize("stages, outer_mixer", [(1, "recurrent"), (1, "window"), (2, "recurrent")])
def test_backbone_matches_a_per_sequence_loop(stages, outer_mixer):
    """Packed sequences do not see each other: the batch gives what each sequence gives alone."""
    torch.manual_seed(0)
    backbone = ChunkBackbone(16, depth=1, heads=2, outer_mixer=outer_mixer, stages=stages, window=2)
    with torch.no_grad():  # a non-trivial second-stage routing
        backbone.apply(lambda m: m.reset_parameters() if isinstance(m, torch.nn.Linear) else None)
    seqs = [torch.randn(n, 16) for n in (7, 1, 0, 12)]
    times = [torch.arange(len(s)) * 0.1 for s in seqs]
    batch = Ragged.from_list(seqs, t_start=times, t_end=[t + 0.1 for t in times])
    out, routed = backbone(batch)
    assert out.values.shape == (20, 16) and (routed is None) == (stages == 1)
    for i, (s, t) in enumerate(zip(seqs, times)):
        alone, _ = backbone(Ragged.from_list([s], t_start=[t], t_end=[t + 0.1]))
        torch.testing.assert_close(out.split()[i], alone.values, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="stages"):
        ChunkBackbone(16, stages=3)


def test_fixed_rate_baseline_keeps_every_token():
    model = small_model(chunking=False)
    batch = tiny_batch()
    out = model({"audio": batch["audio"], "text": batch["text"]})
    assert out.routing["audio"].compression == 1.0 and out.routing["text"].compression == 1.0


def test_objective_options_that_are_not_a_mapping_are_one_line_errors():
    with pytest.raises(
        ValueError, match=r"objectives: ratio: options must be a mapping, e\.g\. \{weight: 0\.5\}, got 0\.2"
    ):
        small_net(objectives={"ratio": 0.2})

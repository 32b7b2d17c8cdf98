"""Words on the audio's time axis by CTC forced alignment, and the forced-aligner scores."""

import dataclasses

import pytest
import torch

from mmchunk.alignment import (
    aligned_byte_times,
    alignment_scores,
    anchor_loss,
    ascii_lower,
    batch_byte_frames,
    ctc_byte_frames,
    ctc_word_onsets,
    ctc_word_spans,
    even_word_spans,
    onset_chunk_targets,
    onset_loss,
    pause_loss,
    pause_token_mask,
    word_byte_spans,
    word_onset_tokens,
)
from mmchunk.chunker import DynamicChunker
from mmchunk.ragged import Ragged


def peaked(length: int, emit: dict[int, int]) -> torch.Tensor:
    """Log-probabilities `[length, 257]`: blank everywhere except byte `emit[t]` at frame t."""
    logits = torch.full((length, 257), -10.0)
    logits[:, 0] = 5.0
    for t, byte in emit.items():
        logits[t, byte + 1] = 10.0
    return logits.log_softmax(-1)


def test_word_offsets_and_the_even_rule_by_hand():
    assert word_byte_spans("ab  cé d") == [(0, 2), (4, 7), (8, 9)]  # é is two bytes
    assert word_byte_spans("") == [] and word_byte_spans("   ") == []
    assert word_byte_spans("a\u00a0b\u3000c") == [(0, 1), (3, 4), (7, 8)]  # as str.split(): any Unicode space
    assert word_byte_spans("ab  cé\u00a0d".encode()) == word_byte_spans("ab  cé\u00a0d")
    assert word_byte_spans(b"a \xff b") == [(0, 1), (2, 3), (4, 5)]  # an invalid byte stays a word
    assert even_word_spans("ab cd", 5.0) == [(0.0, 2.0), (3.0, 5.0)]  # 5 bytes over 5 s
    assert even_word_spans("", 2.0) == []


def test_ctc_byte_frames_follow_the_peaks():
    data = b"ab a"
    log_probs = peaked(12, {1: ord("a"), 4: ord("b"), 6: ord(" "), 9: ord("a")})
    assert ctc_byte_frames(log_probs, data).tolist() == [1, 4, 6, 9]
    repeated = peaked(8, {2: ord("l"), 5: ord("l")})  # a repeated byte needs a blank between
    assert ctc_byte_frames(repeated, b"ll").tolist() == [2, 5]
    assert ctc_byte_frames(repeated[:2], b"ll") is None  # 2 frames cannot hold l, blank, l
    assert ctc_byte_frames(repeated, b"").numel() == 0


def test_ctc_word_starts_are_monotonic_inside_the_clip():
    torch.manual_seed(0)
    texts = ["the red cube", "go", "x"]
    lengths = [40, 6, 1]
    starts = [torch.arange(n) * 0.04 for n in lengths]
    ctc = Ragged.from_list(
        [torch.randn(n, 257).log_softmax(-1) for n in lengths],
        t_start=starts,
        t_end=[s + 0.04 for s in starts],
    )
    first, second, third = ctc_word_spans(ctc, texts)
    flat = [t for span in first for t in span]
    assert len(first) == 3 and flat == sorted(flat) and all(a < b for a, b in first)
    assert len({a for a, _ in first}) == 3 and all(0.0 <= t <= 40 * 0.04 for t in flat)
    assert len(second) == 1 and second[0][1] - second[0][0] >= 0.08 - 1e-6  # "go": two frames at least
    assert third is not None and len(third) == 1
    assert ctc_word_spans(ctc, ["b" * 30, "go", "x"])[0] is None  # 30 b's need 59 frames
    with pytest.raises(ValueError, match="t_start"):
        ctc_word_spans(Ragged.from_list([torch.zeros(3, 257)]), ["a"])


def test_alignment_scores_by_hand():
    scores = alignment_scores([[0.0, 0.5], None, [1.0]], [[0.03, 0.62], [1.0], []])
    assert scores["align_words"] == 3  # the clip without words counts no word
    assert scores["align_within_50ms"] == pytest.approx(1 / 3)
    assert scores["align_within_100ms"] == pytest.approx(1 / 3)
    assert scores["align_median_error_ms"] == pytest.approx(120.0)
    assert alignment_scores([[0.1, 0.2]], [[0.1]])["align_within_100ms"] == 0.0  # word count differs
    assert alignment_scores([None], [[]]) == {}


def test_model_with_a_ctc_head_places_words_and_validation_scores_them():
    from mmchunk.evaluation import ValidationAccumulator
    from tests.test_model import small_model, tiny_batch

    model = small_model(aligner={})
    inputs = {m: x for m, x in tiny_batch().items() if m != "video"}
    out = model(inputs)
    assert out.ctc.values.shape == (out.routing["audio"].residual.shape[0], 257)
    assert out.frames is None and model.eval()(inputs).frames is not None  # evaluation aligns
    frames = out.ctc.cu_seqlens.diff().tolist()
    texts = ["a b c", "d e", "x" * frames[2]]  # the third needs a blank between each of its x's
    spans = ctc_word_spans(out.ctc, texts)
    assert spans[2] is None and [len(p) for p in spans[:2]] == [3, 2]
    placed = [None if s is None else [a for a, _ in s] for s in spans]
    metas = [{"_seconds": n / 16000, "text": t, "words": [{"start": 0.01 * i} for i in range(len(t.split()))]}
             for n, t in zip((4000, 2400, 3000), texts)]  # fmt: skip
    acc = ValidationAccumulator()
    acc.update(out.audio_embedding, out.text_embedding, out.routing, metas, None, placed)
    scores = acc.compute()
    assert scores["align_words"] == scores["even_align_words"] == 6
    assert 0.0 <= scores["align_within_100ms"] <= 5 / 6  # the word of the unplaced clip is a miss
    assert small_model()(inputs).ctc is None


def test_a_word_starts_where_its_separator_is_emitted():
    log_probs = peaked(12, {1: ord("a"), 3: ord("b"), 5: ord(" "), 8: ord("c"), 10: ord("d")})
    times = torch.arange(12) * 0.04
    ctc = Ragged.from_list([log_probs], t_start=[times], t_end=[times + 0.04])
    (spans,) = ctc_word_spans(ctc, ["ab cd"])
    flat = [t for span in spans for t in span]
    assert flat == pytest.approx([0.04, 0.16, 0.20, 0.44])  # "cd" opens with the space at frame 5


def test_alignment_is_case_free():
    assert ascii_lower(torch.tensor(list("AbZ é@[".encode()))).tolist() == list("abz é@[".encode())
    log_probs = peaked(12, {1: ord("a"), 3: ord("b"), 5: ord(" "), 8: ord("c"), 10: ord("d")})
    times = torch.arange(12) * 0.04
    ctc = Ragged.from_list([log_probs], t_start=[times], t_end=[times + 0.04])
    assert ctc_word_spans(ctc, ["AB Cd"]) == ctc_word_spans(ctc, ["ab cd"])  # LibriSpeech-style capitals


def test_onset_targets_mark_the_chunk_nearest_each_word_opening():
    words = peaked(12, {1: ord("a"), 3: ord("b"), 5: ord(" "), 8: ord("c"), 10: ord("d")})
    log_probs = torch.cat([words, peaked(2, {0: ord("z")}), peaked(3, {})])
    cu = torch.tensor([0, 12, 14, 17], dtype=torch.int32)
    text = Ragged.from_list([torch.tensor(list(b), dtype=torch.long) for b in (b"ab cd", b"zz", b"")])
    imposed = torch.zeros(17, dtype=torch.bool)
    imposed[[4, 7, 9, 16]] = True  # chunks open at 0 4 7 9 | 12 | 14 16
    routed = DynamicChunker(4)(Ragged(torch.randn(17, 4), cu), imposed)
    target, scored = onset_chunk_targets(batch_byte_frames(log_probs, cu, text), cu, text, routed)
    # "ab" opens at frame 1 (nearest start 0), "cd" with its space at frame 5 (nearest start 4);
    # "zz" needs 3 frames and has 2 (not scored); the empty transcript has no onsets
    assert target.tolist() == [1, 1, 0, 0, 0, 0, 0]
    assert scored.tolist() == [False, True, True, True, False, False, True]


def test_onset_loss_trains_the_second_stage_from_the_ctc_head_alone():
    from tests.test_model import small_model, small_net, train_terms

    onset = {"ctc": {}, "onset": {"weight": 0.5}}
    untied = {"stages": 2, "tied_routing": False}
    with pytest.raises(ValueError, match="onset: trains a second chunking stage with untied routing"):
        small_net(aligner={}, objectives=onset)
    with pytest.raises(ValueError, match="onset: trains a second chunking stage with untied routing"):
        small_net(aligner={}, backbone={"stages": 2}, objectives=onset)  # tied
    with pytest.raises(
        ValueError, match="onset: trains the second stage from the CTC head's alignment: it needs"
    ):
        small_net(backbone=untied, objectives={"onset": {}})
    with pytest.raises(ValueError, match=r"aligner\.clips"):
        small_model(aligner={"clips": 16})  # without the probe
    with pytest.raises(ValueError, match=r"aligner\.clips"):
        small_model(aligner={"probe": True, "clips": 0})
    with pytest.raises(ValueError, match=r"aligner\.mixer: window or recurrent, got 'attention'"):
        small_model(aligner={"probe": True, "mixer": "attention"})
    with pytest.raises(ValueError, match=r"aligner: unknown option 'prob' \(known: probe, mixer, clips\)"):
        small_model(aligner={"prob": True})
    fixed = {"audio": {"rule": "fixed", "frames_per_chunk": 4}}  # fine chunks to choose from at init
    model, objectives = small_net(aligner={}, backbone=untied, objectives=onset, segmentation=fixed)
    torch.manual_seed(1)
    audio = Ragged.from_list([0.1 * torch.randn(n) for n in (32000, 24000)])
    text = Ragged.from_list([torch.tensor(list(t)) for t in (b"a red cube", b"two")])
    _, terms = train_terms(model, objectives, {"audio": audio, "text": text})
    assert torch.isfinite(terms["onset"]) and terms["onset"] > 0
    assert model.main.chunker.k_proj is not model.main.chunker.q_proj  # untied: an onset detector
    stage2 = model.main.chunker.q_proj.weight
    (grad,) = torch.autograd.grad(terms["onset"], stage2)
    assert grad.abs().sum() > 0
    with pytest.raises(ValueError, match="onset: pos_weight must be > 0, got 0"):
        small_net(aligner={}, backbone=untied, objectives={"ctc": {}, "onset": {"pos_weight": 0.0}})


def test_onset_loss_weights_the_onset_chunks_by_hand():
    frames = [torch.tensor([1, 1, 5, 5])]  # "ab cd" on 8 tokens: the words open at tokens 1 and 5
    cu = torch.tensor([0, 8], dtype=torch.int32)
    text = Ragged.from_list([torch.tensor(list(b"ab cd"))])
    imposed = torch.zeros(8, dtype=torch.bool)
    imposed[[2, 5]] = True  # fine chunks open at 0 2 5: the words' nearest are 0 and 5
    routed = DynamicChunker(4)(Ragged(torch.randn(8, 4), cu), imposed)
    inner = dataclasses.replace(routed, probs=torch.tensor([0.9, 0.4, 0.3]))
    target, scored = onset_chunk_targets(frames, cu, text, routed)
    assert target.tolist() == [1, 0, 1] and scored.tolist() == [False, True, True]  # a start always opens
    terms = -torch.log(torch.tensor([0.6, 0.3]))  # −log(1 − p) off the onsets, −log p at them
    for w in (1.0, 2.0):
        expected = (terms * torch.tensor([1.0, w])).sum() / 2
        assert onset_loss(frames, cu, text, routed, inner, w).item() == pytest.approx(expected.item())


def test_pause_tokens_lie_between_the_aligned_words_by_hand():
    words = peaked(20, {3: ord("a"), 5: ord("b"), 11: ord(" "), 13: ord("c"), 15: ord("d")})
    log_probs = torch.cat([words, peaked(2, {0: ord("z")}), peaked(3, {})])
    cu = torch.tensor([0, 20, 22, 25], dtype=torch.int32)
    text = Ragged.from_list([torch.tensor(list(b), dtype=torch.long) for b in (b"ab cd", b"zz", b"")])
    frames = batch_byte_frames(log_probs, cu, text)
    # "ab" spans frames 3-5, "cd" opens with its space at 11 and ends at 15; "zz" does not fit and
    # the empty transcript has no words: neither marks a pause
    assert pause_token_mask(frames, cu, text).nonzero().squeeze(1).tolist() == [8, 18, 19]
    # margin 0: every frame outside the words but frame 0, which opens the sequence
    expected = [1, 2, 6, 7, 8, 9, 10, 16, 17, 18, 19]
    assert pause_token_mask(frames, cu, text, margin=0).nonzero().squeeze(1).tolist() == expected
    assert not pause_token_mask(frames, cu, text, margin=20).any()
    imposed = torch.zeros(25, dtype=torch.bool)
    imposed[[8, 12, 18, 21, 24]] = True
    routed = DynamicChunker(4)(Ragged(torch.randn(25, 4), cu), imposed)
    # only the first sample has words that fit: two of its three boundaries (8, 12, 18) are in pauses
    assert pause_loss(frames, cu, text, routed).item() == pytest.approx(2 / 3)
    assert pause_loss([None, None], cu[:3], text, routed).item() == 0.0  # nothing placed


@pytest.mark.parametrize("kind", ["pause", "anchor"])
def test_pause_and_anchor_losses_train_the_audio_routing_from_the_ctc_head_alone(kind):
    from tests.test_model import small_net, train_terms

    base = {"contrastive": {}, "ratio": {}, "predict": {}, "ctc": {}}
    with_kind = {**base, kind: {"weight": 0.5}}
    with pytest.raises(ValueError, match=rf"{kind}: trains the learned audio chunker .* needs model.aligner"):
        small_net(objectives={kind: {}})
    with pytest.raises(ValueError, match="learned audio chunks"):
        small_net(
            aligner={}, objectives=with_kind, segmentation={"audio": {"rule": "fixed", "frames_per_chunk": 4}}
        )
    with pytest.raises(ValueError, match="learned audio chunks"):
        small_net(aligner={}, objectives=with_kind, chunking=False)
    model, objectives = small_net(aligner={}, objectives=with_kind)
    assert objectives.needs_alignment
    torch.manual_seed(1)
    audio = Ragged.from_list([0.1 * torch.randn(n) for n in (32000, 24000)])
    text = Ragged.from_list([torch.tensor(list(t)) for t in (b"a b", b"t")])
    inputs = {"audio": audio, "text": text}
    out, terms = train_terms(model, objectives, inputs)
    assert torch.isfinite(terms[kind]) and terms[kind] > 0
    (grad,) = torch.autograd.grad(terms[kind], model.chunker.q_proj.weight, retain_graph=True)
    assert grad.abs().sum() > 0
    without_model, without = small_net(aligner={}, objectives=base)
    assert not without.needs_alignment
    other = without(without_model(inputs), inputs)
    assert kind not in other
    weighted = terms["total"] - 0.5 * terms[kind]
    assert torch.allclose(weighted, other["total"], atol=1e-5)  # the same network otherwise
    assert torch.allclose(objectives(out, inputs)["total"], terms["total"])


def test_anchor_loss_is_the_log_boundary_probability_at_the_aligned_word_openings_by_hand():
    words = peaked(12, {1: ord("a"), 3: ord("b"), 5: ord(" "), 8: ord("c"), 10: ord("d")})
    log_probs = torch.cat(
        [words, peaked(2, {0: ord("z")}), peaked(4, {0: ord("q"), 2: ord(" "), 3: ord("r")})]
    )
    cu = torch.tensor([0, 12, 14, 18], dtype=torch.int32)
    text = Ragged.from_list([torch.tensor(list(b), dtype=torch.long) for b in (b"ab cd", b"zz", b"q r")])
    frames = batch_byte_frames(log_probs, cu, text)
    onsets = word_onset_tokens(frames, cu, text)
    # "ab" opens at frame 1 and "cd" with its space at 5; "zz" does not fit; "q" at frame 0 of the
    # third sample (token 14, its sequence start) and "r" with its space at 2 (token 16)
    assert [None if o is None else o.tolist() for o in onsets] == [[1, 5], None, [14, 16]]
    routed = DynamicChunker(4)(Ragged(torch.randn(18, 4), cu))
    probs = routed.probs
    expected = -(probs[[1, 5, 16]].log()).mean()  # the sequence start (14) is always a boundary
    assert anchor_loss(frames, cu, text, routed).item() == pytest.approx(expected.item(), rel=1e-6)
    assert anchor_loss([None, None, None], cu, text, routed).item() == 0.0  # nothing placed
    assert anchor_loss(frames[:1], cu, text, routed).item() == pytest.approx(
        -(probs[[1, 5]].log()).mean().item()
    )


def test_anchor_ramp_switches_the_anchors_on_linearly():
    from mmchunk.objectives import Anchor

    scale = Anchor(0.5, ramp=[10, 30]).weight_at
    assert [scale(s) for s in (0, 9, 10, 15, 20, 29, 30, 400)] == [
        0.0,
        0.0,
        0.0,
        0.125,
        0.25,
        0.475,
        0.5,
        0.5,
    ]
    step = Anchor(0.5, ramp=[5, 5]).weight_at
    assert [step(s) for s in (0, 4, 5, 6)] == [0.0, 0.0, 0.5, 0.5]  # a switch, no division by zero
    assert Anchor(0.5).weight_at(0) == 0.5  # no ramp: on from the first step
    for bad in ([30, 10], [-1, 5], [5]):
        with pytest.raises(ValueError, match=r"anchor: ramp: expected \[start, full\]"):
            Anchor(0.5, ramp=bad)


def test_aligned_byte_times_by_hand():
    words = peaked(12, {1: ord("a"), 3: ord("b"), 5: ord(" "), 8: ord("c"), 10: ord("d")})
    times = [torch.arange(12) * 0.04, torch.arange(2) * 0.04]
    ctc = Ragged.from_list([words, peaked(2, {})], t_start=times, t_end=[t + 0.04 for t in times])
    own = [torch.linspace(0, 1, 5), torch.linspace(0, 1, 2)]
    text = Ragged.from_list(
        [torch.tensor(list(b)) for b in (b"ab cd", b"zz")], t_start=own, t_end=[t + 0.5 for t in own]
    )
    starts, ends = aligned_byte_times(batch_byte_frames(ctc.values, ctc.cu_seqlens, text), ctc, text)
    assert starts.tolist() == pytest.approx([0.04, 0.12, 0.20, 0.32, 0.40, 0.0, 1.0])  # "zz" does not fit
    assert ends.tolist() == pytest.approx([0.12, 0.20, 0.32, 0.40, 0.44, 0.5, 1.5])


def test_text_chunks_take_the_aligned_times_and_the_text_embedding_ignores_them():
    from tests.test_model import small_model

    model = small_model(aligner={}).eval()
    torch.manual_seed(1)
    audio = Ragged.from_list([0.1 * torch.randn(n) for n in (32000, 24000)])
    audio = Ragged(audio.values, audio.cu_seqlens, t_start=torch.zeros(56000), t_end=torch.zeros(56000))
    texts = [b"a red cube", b"two"]
    own = [torch.linspace(0, 1, len(t)) for t in texts]
    text = Ragged.from_list([torch.tensor(list(t)) for t in texts], t_start=own, t_end=[t + 0.1 for t in own])
    with torch.no_grad():
        out = model.encode({"audio": audio, "text": text})
        chunks, routing, ctc = out.chunks, out.routing, out.ctc
        starts, ends = aligned_byte_times(batch_byte_frames(ctc.values, ctc.cu_seqlens, text), ctc, text)
        first = routing["text"].boundary_mask.nonzero().squeeze(1).tolist()
        last = [*(f - 1 for f in first[1:]), text.num_tokens - 1]
        assert chunks["text"].t_start.tolist() == starts[first].tolist()
        assert chunks["text"].t_end.tolist() == ends[last].tolist()
        assert not torch.equal(starts, text.t_start)  # the transcripts fit: times moved to the audio's axis
        assert torch.equal(model.embed(chunks)["text"], model.embed_text(text))  # no audio in the text tower


def test_word_onsets_without_the_transcript_by_hand():
    spoken = peaked(12, {1: ord("a"), 3: ord("b"), 5: ord(" "), 6: ord(" "), 8: ord("c"), 10: ord(" ")})
    times = [torch.arange(12) * 0.04, torch.arange(3) * 0.04, torch.arange(1) * 0.04]
    spaced = peaked(3, {0: ord(" "), 2: ord("x")})  # a clip that opens with the separator
    ctc = Ragged.from_list([spoken, spaced, peaked(1, {})], t_start=times, t_end=[t + 0.04 for t in times])
    onsets = ctc_word_onsets(ctc)
    # the first non-blank frame, then the first frame of every run of spaces (5-6 is one run)
    assert onsets[0] == pytest.approx([0.04, 0.20, 0.40]) and onsets[1] == [0.0] and onsets[2] == []
    with pytest.raises(ValueError, match="t_start"):
        ctc_word_onsets(Ragged.from_list([spoken]))


@pytest.mark.parametrize(("probe", "mixer"), [(False, "window"), (True, "window"), (True, "recurrent")])
def test_a_ctc_probe_leaves_the_retrieval_features_alone(probe, mixer):
    from tests.test_model import small_net, tiny_batch, train_terms

    model, objectives = small_net(aligner={"probe": probe, "mixer": mixer}, objectives={"ctc": {}})
    inputs = {m: x for m, x in tiny_batch().items() if m != "video"}
    inputs["text"] = Ragged.from_list([torch.tensor(list(t)) for t in (b"ab", b"c", b"de")])
    ctc = train_terms(model, objectives, inputs)[1]["ctc"]
    shared = [*model.encoders["audio"].parameters(), *model.main.parameters()]
    grads = torch.autograd.grad(ctc, shared, allow_unused=True)
    touched = any(g is not None and g.abs().sum() > 0 for g in grads)
    assert touched is not probe  # detached: the CTC loss trains only the probe and the head
    if probe:
        (grad,) = torch.autograd.grad(
            train_terms(model, objectives, inputs)[1]["ctc"], [next(model.ctc_probe.parameters())]
        )
        assert grad.abs().sum() > 0


def test_the_probe_trains_on_the_first_ctc_clips_and_evaluates_all():
    from tests.test_model import small_model, tiny_batch

    model = small_model(aligner={"probe": True, "clips": 2})
    inputs = {m: x for m, x in tiny_batch().items() if m != "video"}
    frames = model(inputs).ctc.cu_seqlens  # training: the first two clips
    model.eval()
    with torch.no_grad():
        every = model(inputs).ctc.cu_seqlens
    assert frames.tolist() == every[:3].tolist() and len(every) == 4

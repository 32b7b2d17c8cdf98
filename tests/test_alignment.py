"""Words on the audio's time axis by CTC forced alignment, and the forced-aligner scores."""

import pytest
import torch

from mmchunk.alignment import (
    alignment_scores,
    ascii_lower,
    ctc_byte_frames,
    ctc_word_spans,
    even_word_spans,
    word_byte_spans,
)
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

    model = small_model(ctc_weight=0.1)
    inputs = {m: x for m, x in tiny_batch().items() if m != "video"}
    out = model(inputs)
    assert out.ctc.values.shape == (out.routing["audio"].residual.shape[0], 257) and "ctc" in out.losses
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

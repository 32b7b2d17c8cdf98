"""Text on the audio's time axis without oracle timings: a transcript's words placed by CTC forced
alignment of the audio tokens' byte posteriors (the model's CTC head), scored as a forced aligner is
(the share of words whose predicted start lies within 50 and 100 ms of the true one, the median error).
"""

from __future__ import annotations

import itertools
import statistics
import warnings

import torch
import torch.nn.functional as F
from torch import Tensor

from mmchunk.chunker import ChunkerOutput
from mmchunk.kernels import segment_reduce, sequence_starts
from mmchunk.ragged import Ragged

MAX_ALIGN_CELLS = 10**9  # torchaudio's forced alignment keeps one byte per cell (T × (2S + 1)): ~1 GB


def word_byte_spans(text: str | bytes) -> list[tuple[int, int]]:
    """Byte offsets `(first, past the last)` of every word of `text` (words: `str.split()`, so any
    Unicode whitespace separates them; UTF-8 bytes are split the same way, invalid bytes kept)."""
    if isinstance(text, bytes):
        text = text.decode("utf-8", "surrogateescape")
    spans, position = [], 0
    data = text.encode("utf-8", "surrogateescape")
    for word in text.split():
        first = data.index(word.encode("utf-8", "surrogateescape"), position)
        position = first + len(word.encode("utf-8", "surrogateescape"))
        spans.append((first, position))
    return spans


def word_open_bytes(spans: list[tuple[int, int]]) -> list[int]:
    """The byte at which the aligner opens each word of `spans` (`word_byte_spans`): the separator
    before it (the first byte after the previous word), for the first word its own first byte. CTC
    emits a byte once it has heard it, so a word's first letter comes out well into the word, while
    the separator comes out at the word boundary itself (chosen on training clips: 93 % of words
    within 100 ms of the true start against 73 % for the first letter; see the README)."""
    return [spans[0][0], *(z for _, z in spans[:-1])] if spans else []


def even_word_spans(text: str, duration: float) -> list[tuple[float, float]]:
    """Word spans (s) under the evenly-spread rule: every byte of `text` takes an equal share of
    `duration` (what a model gets without any alignment)."""
    n = max(len(text.encode()), 1)
    return [(duration * a / n, duration * b / n) for a, b in word_byte_spans(text)]


def ascii_lower(data: Tensor) -> Tensor:
    """UTF-8 bytes `[S]` with A–Z lowered to a–z (every other byte kept, so offsets stay): the CTC
    head learns and aligns case-free text (LibriSpeech transcripts are upper case, the corpus lower)."""
    return torch.where((data >= 65) & (data <= 90), data + 32, data)


def ctc_byte_frames(log_probs: Tensor, data: bytes) -> Tensor | None:
    """The frame at which each byte of `data` (`ascii_lower`ed) is first emitted in the best CTC path
    through `log_probs [T, 257]` (blank 0, byte b → b + 1; torchaudio's forced alignment): `[S]` int64, or
    None when the bytes cannot fit in `T` frames (CTC needs one frame per byte plus a blank between
    repeated bytes) or their trellis would outgrow `MAX_ALIGN_CELLS` (a warning says so)."""
    import torchaudio.functional as AF

    if not data:
        return torch.zeros(0, dtype=torch.long)
    repeats = sum(a == b for a, b in itertools.pairwise(data))
    if log_probs.shape[0] < len(data) + repeats:
        return None
    if (cells := log_probs.shape[0] * (2 * len(data) + 1)) > MAX_ALIGN_CELLS:
        warnings.warn(
            f"a transcript of {len(data)} bytes over {log_probs.shape[0]} frames is not force-aligned: its "
            f"trellis ({cells:.2g} cells) exceeds {MAX_ALIGN_CELLS:.0e}; cut the recording shorter",
            stacklevel=2,
        )
        return None
    targets = ascii_lower(torch.tensor([list(data)], dtype=torch.int32)) + 1
    path, _ = AF.forced_align(log_probs[None].float().cpu(), targets, blank=0)
    path = path[0]
    emitted = (path != 0) & torch.cat([torch.ones(1, dtype=torch.bool), path[1:] != path[:-1]])
    frames = emitted.nonzero().squeeze(1)
    return frames[: len(data)]


def ctc_word_spans(ctc: Ragged, texts: list[str]) -> list[list[tuple[float, float]] | None]:
    """Per sequence of `ctc` (log-probabilities `[T, 257]` of the audio tokens, with their times)
    the span (s) of each word of `texts[i]`, from the best CTC path (`ctc_byte_frames`): a word
    starts with the frame that emits its opening byte (`word_open_bytes`) and ends with the one
    that emits its last byte. None where the transcript does not fit the clip's frames."""
    if ctc.t_start is None or ctc.t_end is None:
        raise ValueError("ctc_word_spans: the audio tokens carry no times (t_start, t_end)")
    out: list[list[tuple[float, float]] | None] = []
    cu = ctc.cu_seqlens.tolist()
    for b, text in enumerate(texts):
        lo, hi = cu[b], cu[b + 1]
        frames = ctc_byte_frames(ctc.values[lo:hi].detach(), text.encode())
        if frames is None:
            out.append(None)
            continue
        starts, ends = ctc.t_start[lo:hi].detach().cpu(), ctc.t_end[lo:hi].detach().cpu()
        spans = word_byte_spans(text)
        opens = word_open_bytes(spans)
        out.append(
            [(float(starts[frames[o]]), float(ends[frames[z - 1]])) for o, (_, z) in zip(opens, spans)]
        )
    return out


def ctc_word_onsets(ctc: Ragged, separator: int = ord(" ")) -> list[list[float]]:
    """Word onsets without a transcript: per sequence of `ctc` (log-probabilities `[T, 257]` of the
    audio tokens, with their times), the start times (s) of the tokens where the best path per token
    (greedy CTC decoding) opens a word, the first non-blank token and the first of each run of the
    `separator` byte (CTC emits the separator at the word boundary; see `word_open_bytes`)."""
    if ctc.t_start is None:
        raise ValueError("ctc_word_onsets: the audio tokens carry no times (t_start)")
    best = ctc.values.detach().argmax(-1)
    opens = best == separator + 1
    opens[1:] &= best[1:] != best[:-1]
    onsets = []
    for lo, hi in itertools.pairwise(ctc.cu_seqlens.tolist()):
        emitted = (best[lo:hi] != 0).nonzero().squeeze(1)
        mask = opens[lo:hi].clone()
        if emitted.numel():
            mask[emitted[0]] = True
        onsets.append(ctc.t_start[lo:hi][mask].tolist())
    return onsets


def alignment_scores(predicted: list[list[float] | None], reference: list[list[float]]) -> dict[str, float]:
    """Forced-aligner scores of predicted word starts against true ones, clip by clip (a clip counts
    where both have the same number of words; a clip the aligner could not place counts as missed):
    `align_within_50ms`, `align_within_100ms` (share of words), `align_median_error_ms`, `align_words`."""
    errors: list[float] = []
    for pred, ref in zip(predicted, reference):
        if not ref:
            continue
        if pred is None or len(pred) != len(ref):
            errors += [float("inf")] * len(ref)
            continue
        errors += [abs(p - r) for p, r in zip(pred, ref)]
    if not errors:
        return {}
    return {
        "align_within_50ms": sum(e <= 0.05 for e in errors) / len(errors),
        "align_within_100ms": sum(e <= 0.1 for e in errors) / len(errors),
        "align_median_error_ms": 1000 * statistics.median(errors),
        "align_words": float(len(errors)),
    }


def batch_byte_frames(log_probs: Tensor, cu_seqlens: Tensor, text: Ragged) -> list[Tensor | None]:
    """`ctc_byte_frames` of every sample: the audio tokens' log-probabilities `[T, 257]` in sequences
    `cu_seqlens [B+1]`, one transcript per sample in `text` (bytes `[S]`); per sample the frame
    (counted within the sample) that emits each transcript byte, or None where it does not fit."""
    cu, text_cu = cu_seqlens.tolist(), text.cu_seqlens.tolist()
    values, log_probs = text.values.long().cpu(), log_probs.detach()
    return [
        ctc_byte_frames(log_probs[cu[b] : cu[b + 1]], bytes(values[text_cu[b] : text_cu[b + 1]].tolist()))
        for b in range(len(cu) - 1)
    ]


def word_onset_tokens(frames: list[Tensor | None], cu_seqlens: Tensor, text: Ragged) -> list[Tensor | None]:
    """Per sample, the tokens `[W]` (indices into the batch's `[T]` tokens in sequences `cu_seqlens
    [B+1]`) at which the CTC alignment `frames` (`batch_byte_frames`) opens each word of the sample's
    transcript in `text` (`word_open_bytes`); None where the transcript did not fit."""
    cu, text_cu = cu_seqlens.tolist(), text.cu_seqlens.tolist()
    values = text.values.long().cpu()
    onsets: list[Tensor | None] = []
    for b, placed in enumerate(frames):
        data = bytes(values[text_cu[b] : text_cu[b + 1]].tolist())
        onsets.append(None if placed is None else placed[word_open_bytes(word_byte_spans(data))] + cu[b])
    return onsets


def onset_chunk_targets(
    frames: list[Tensor | None], cu_seqlens: Tensor, text: Ragged, routed: ChunkerOutput
) -> tuple[Tensor, Tensor]:
    """Routing targets at word onsets from the model's own CTC alignment (self-distillation: no
    timings). Per chunk of `routed.chunks` (the stage below the one being trained, chunking tokens
    `[T]` with `cu_seqlens [B+1]`): `[C]` float, 1 for the chunk whose first token lies nearest a
    word's opening frame (`word_open_bytes` of the transcript bytes `text`, one sequence per sample,
    at their `batch_byte_frames`), else 0; and `[C]` bool, the chunks to score: every chunk of a
    sample whose transcript fits its frames, but the first (always a boundary)."""
    count = routed.chunks.num_tokens
    device = routed.probs.device
    target = torch.zeros(count, device=device)
    scored = torch.zeros(count, dtype=torch.bool, device=device)
    starts = routed.boundary_mask.nonzero().squeeze(1)
    chunk_cu = routed.chunks.cu_seqlens.tolist()
    for b, onsets in enumerate(word_onset_tokens(frames, cu_seqlens, text)):
        lo, hi = chunk_cu[b], chunk_cu[b + 1]
        if onsets is None or hi == lo:
            continue
        scored[lo + 1 : hi] = True
        onsets = onsets.to(device)
        if onsets.numel():
            nearest = (starts[lo:hi][None, :] - onsets[:, None]).abs().argmin(1)
            target[lo + nearest] = 1.0
    return target, scored


def pause_token_mask(
    frames: list[Tensor | None], cu_seqlens: Tensor, text: Ragged, margin: int = 2
) -> Tensor:
    """The tokens that the model's own CTC alignment puts in a pause (self-distillation: no
    timings). Tokens `[T]` in sequences `cu_seqlens [B+1]`, one transcript per sample in `text`,
    placed at `batch_byte_frames`; returns `[T]` bool, True for a token more than `margin` tokens
    away from every word's span on the alignment (a word spans from its opening frame,
    `word_open_bytes`, to the frame of its last byte) and not its sequence's first token. A sample
    without a placement (None) or without words marks nothing."""
    mask = torch.zeros(int(cu_seqlens[-1]), dtype=torch.bool)
    cu, text_cu = cu_seqlens.tolist(), text.cu_seqlens.tolist()
    values = text.values.long().cpu()
    for b, placed in enumerate(frames):
        spans = word_byte_spans(bytes(values[text_cu[b] : text_cu[b + 1]].tolist()))
        if placed is None or not spans or cu[b + 1] == cu[b]:
            continue
        covered = torch.zeros(cu[b + 1] - cu[b], dtype=torch.bool)
        for first, (_, past) in zip(word_open_bytes(spans), spans):
            lo, hi = int(placed[first]) - margin, int(placed[past - 1]) + margin + 1
            covered[max(lo, 0) : hi] = True
        covered[0] = True
        mask[cu[b] : cu[b + 1]] = ~covered
    return mask.to(cu_seqlens.device)


def aligned_byte_times(frames: list[Tensor | None], ctc: Ragged, text: Ragged) -> tuple[Tensor, Tensor]:
    """Every byte of `text` (`[S]`, one transcript per sample) placed on the audio's time axis at its
    `batch_byte_frames` of the audio tokens `ctc` (with their times): a byte starts with the audio
    token that emits it and ends where the next byte starts (the last with its token). A sample
    whose transcript does not fit its frames keeps `text`'s own times. Returns `(t_start [S], t_end [S])`."""
    if ctc.t_start is None or ctc.t_end is None or text.t_start is None or text.t_end is None:
        raise ValueError(
            "aligned_byte_times: the audio tokens and the text bytes need times (t_start, t_end)"
        )
    t_start, t_end = text.t_start.clone(), text.t_end.clone()
    cu, text_cu = ctc.cu_seqlens.tolist(), text.cu_seqlens.tolist()
    for b, placed in enumerate(frames):
        lo, hi = text_cu[b], text_cu[b + 1]
        if placed is None or hi == lo:
            continue
        index = placed.to(ctc.t_start.device) + cu[b]
        starts = ctc.t_start[index].to(t_start.dtype)
        t_start[lo:hi] = starts
        t_end[lo:hi] = torch.cat([starts[1:], ctc.t_end[index[-1:]].to(t_end.dtype)])
    return t_start, t_end


def onset_loss(
    frames: list[Tensor | None],
    cu_seqlens: Tensor,
    text: Ragged,
    routed: ChunkerOutput,
    inner: ChunkerOutput,
    pos_weight: float = 1.0,
) -> Tensor:
    """Binary cross-entropy of the second stage's boundary probabilities `inner.probs [C]` against
    the word-onset chunks of the CTC alignment `frames` (`onset_chunk_targets` over `routed`'s chunks),
    averaged over the scored chunks with the onset chunks' terms ×`pos_weight` (> 1 moves the 0.5
    decision toward recall: to a target probability of 1 / (1 + pos_weight))."""
    target, scored = onset_chunk_targets(frames, cu_seqlens, text, routed)
    if not scored.any():
        return inner.probs.sum() * 0.0
    probs = inner.probs[scored].float().clamp(1e-6, 1.0 - 1e-6)
    weight = 1.0 + (pos_weight - 1.0) * target[scored]
    return F.binary_cross_entropy(probs, target[scored], weight=weight)


def anchor_loss(
    frames: list[Tensor | None], cu_seqlens: Tensor, text: Ragged, routed: ChunkerOutput
) -> Tensor:
    """Word anchors for the fine chunks: the mean negative log boundary probability `routed.probs
    [T]` at the tokens where the CTC alignment `frames` opens a word (`word_onset_tokens`; sequence
    starts, always boundaries, left out), so every word onset of the model's own alignment opens a
    fine chunk (self-distilled, no timings) and a second stage can pick it; 0 without any. Only
    positives: the ratio loss keeps the chunk rate."""
    placed = [o for o in word_onset_tokens(frames, cu_seqlens, text) if o is not None]
    onsets = torch.cat([torch.zeros(0, dtype=torch.long), *placed]).to(routed.probs.device)
    onsets = onsets[~sequence_starts(cu_seqlens, routed.probs.shape[0])[onsets]]
    if not onsets.numel():
        return routed.probs.sum() * 0.0
    return -routed.probs[onsets].float().clamp(min=1e-6).log().mean()


def pause_loss(
    frames: list[Tensor | None], cu_seqlens: Tensor, text: Ragged, routed: ChunkerOutput
) -> Tensor:
    """The share of the boundary probability mass `routed.probs [T]` that falls on the tokens the
    CTC alignment `frames` puts in pauses (`pause_token_mask`), averaged over the samples with
    words that it placed (sequence starts left out); 0 without any. A share, not a level: the
    ratio loss keeps the chunk rate, this loss moves boundaries from the pauses into the words."""
    placed = torch.tensor([f is not None and f.numel() > 0 for f in frames], device=routed.probs.device)
    if not placed.any():
        return routed.probs.sum() * 0.0
    cu = cu_seqlens[: len(frames) + 1]
    count = int(cu[-1])
    pauses = pause_token_mask(frames, cu, text).to(routed.probs.device)
    probs = routed.probs[:count].float() * ~sequence_starts(cu, count)
    inside = segment_reduce((probs * pauses)[:, None], cu, "sum")[:, 0]
    total = segment_reduce(probs[:, None], cu, "sum")[:, 0].clamp(min=1e-6)
    return (inside / total)[placed].mean()

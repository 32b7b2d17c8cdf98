"""Training objectives: symmetric InfoNCE with a learned temperature, audio-text matching, byte CTC."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def info_nce(a: Tensor, b: Tensor, logit_scale: Tensor) -> Tensor:
    """Symmetric InfoNCE of paired embeddings `a, b [B, E]` (L2-normalised), `exp(logit_scale)` as
    inverse temperature (clamped at 100, as CLIP does)."""
    logits = logit_scale.clamp(max=4.6052).exp() * a @ b.T
    target = torch.arange(a.shape[0], device=a.device)
    return (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2


def hardest_negatives(similarity: Tensor) -> Tensor:
    """For each row, the most similar column other than its own pair: `[B]` indices (B ≥ 2)."""
    masked = similarity.detach().clone()
    masked.fill_diagonal_(float("-inf"))
    return masked.argmax(dim=1)


def matching_loss(logits: Tensor, labels: Tensor) -> Tensor:
    """Binary cross-entropy of match logits `[N]` against 0/1 labels `[N]`."""
    return F.binary_cross_entropy_with_logits(logits, labels.float())


def byte_ctc_loss(log_probs: Tensor, cu_seqlens: Tensor, text: Tensor, text_cu: Tensor) -> Tensor:
    """CTC of each audio sequence's frames against its paired transcript's UTF-8 bytes.

    log_probs `[T, 257]` (log-softmax over blank = 0 and byte b = b + 1) of sequences `cu_seqlens
    [B+1]`; text bytes `[S]` of sequences `text_cu [B+1]`. Per sequence the CTC loss divided by its
    transcript's length (at least 1), averaged over the sequences with frames; impossible
    alignments (fewer frames than the transcript needs) count 0. No timing enters: CTC sums over
    every monotonic alignment.
    """
    losses = []
    for b in range(len(cu_seqlens) - 1):
        lo, hi = int(cu_seqlens[b]), int(cu_seqlens[b + 1])
        if hi == lo:
            continue
        target = text[int(text_cu[b]) : int(text_cu[b + 1])].long() + 1
        lengths = torch.tensor(hi - lo), torch.tensor(target.numel())
        loss = F.ctc_loss(log_probs[lo:hi], target, *lengths, reduction="sum", zero_infinity=True)
        losses.append(loss / max(target.numel(), 1))
    return torch.stack(losses).mean() if losses else log_probs.sum() * 0.0


WORD_HASH_SPAN = 32  # byte positions with their own hash table row (longer words wrap around)


def word_hash_table(seed: int = 0) -> Tensor:
    """The fixed random table `[WORD_HASH_SPAN, 256]` (int64) of `word_buckets`: entry (i, b) is the
    hash contribution of byte b at position i of a word."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 2**40, (WORD_HASH_SPAN, 256), generator=generator, dtype=torch.int64)


def word_buckets(text: Tensor, cu_seqlens: Tensor, table: Tensor, buckets: int) -> tuple[Tensor, Tensor]:
    """Hashed words of byte sequences: text bytes `[S]` (uint8 or int) of sequences `cu_seqlens
    [B+1]` → each word's bucket in `[0, buckets)` `[W]` and its sequence `[W]`.

    A word is a maximal run of bytes that are neither ASCII whitespace, control nor punctuation
    (UTF-8 bytes of other scripts belong to words); ASCII letters count lower-case. A word's hash is
    the sum of `table[i mod WORD_HASH_SPAN, byte_i]` over its bytes, modulo `buckets`.
    """
    b = text.long()
    b = torch.where((b >= 65) & (b <= 90), b + 32, b)
    ranges = ((33, 47), (58, 64), (91, 96), (123, 127))  # ASCII punctuation and DEL
    punct = torch.stack([(b >= lo) & (b <= hi) for lo, hi in ranges]).any(0)
    inside = (b > 32) & ~punct
    n = b.numel()
    position = torch.arange(n, device=b.device)
    first = torch.zeros(n, dtype=torch.bool, device=b.device)
    offsets = cu_seqlens[:-1].long()
    first[offsets[offsets < n]] = True
    previous = torch.cat([inside.new_zeros(1), inside[:-1]]) & ~first
    starts = inside & ~previous
    word = starts.long().cumsum(0) - 1
    start_at = torch.where(starts, position, torch.zeros_like(position)).cummax(0).values
    sums = torch.zeros(int(starts.sum()), dtype=torch.int64, device=b.device)
    rows = (position - start_at) % WORD_HASH_SPAN
    sums.index_add_(0, word[inside], table.to(b.device)[rows[inside], b[inside]])
    sequence = torch.searchsorted(cu_seqlens.long(), position[starts], right=True) - 1
    return sums % buckets, sequence


def bag_of_words_loss(logits: Tensor, bucket: Tensor, sequence: Tensor) -> Tensor:
    """Cross-entropy of word logits `[B, V]` against each sequence's bag of words (the uniform
    distribution over the distinct buckets `[W]` of its words, `sequence [W]`), averaged over the
    sequences that have words. No timing enters: only which words the transcript holds."""
    present = torch.zeros_like(logits)
    present[sequence, bucket] = 1.0
    counts = present.sum(1)
    has = counts > 0
    if not has.any():
        return logits.sum() * 0.0
    target = present[has] / counts[has, None]
    return -(target * logits[has].log_softmax(-1)).sum(-1).mean()

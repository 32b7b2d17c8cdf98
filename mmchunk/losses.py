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

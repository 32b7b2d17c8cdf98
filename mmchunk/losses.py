"""Training objectives: symmetric InfoNCE with a learned temperature, audio-text matching."""

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

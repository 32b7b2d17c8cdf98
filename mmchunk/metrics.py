"""Boundary metrics of the speech segmentation literature (precision, recall, F1, OS, R-value) and
retrieval metrics (R@k, mAP@10; several captions per clip by the LAION-CLAP protocol)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor


def match_boundaries(predicted: Sequence[float], reference: Sequence[float], tolerance: float) -> int:
    """Number of hits of a greedy one-to-one matching within `tolerance` seconds.

    All (predicted, reference) pairs closer than or equal to `tolerance` are taken nearest first
    (ties by earlier reference, then earlier prediction); each boundary is used at most once.
    """
    pairs = sorted(
        (abs(p - r), j, i)
        for i, p in enumerate(predicted)
        for j, r in enumerate(reference)
        if abs(p - r) <= tolerance
    )
    used_pred, used_ref = set(), set()
    for _, j, i in pairs:
        if i not in used_pred and j not in used_ref:
            used_pred.add(i)
            used_ref.add(j)
    return len(used_pred)


def boundary_scores(
    predicted: Sequence[float], reference: Sequence[float], tolerance: float
) -> dict[str, float]:
    """P = hits/predicted, R = hits/reference, F1, over-segmentation OS = R/P − 1 and the R-value.

    R-value = 1 − (|r1| + |r2|)/2 with r1 = √((1−R)² + OS²), r2 = (−OS + R − 1)/√2. Empty inputs
    give 0 for the undefined ratios (P with no prediction, R with no reference; OS needs P > 0).
    """
    hits = match_boundaries(predicted, reference, tolerance)
    precision = hits / len(predicted) if predicted else 0.0
    recall = hits / len(reference) if reference else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    over = recall / precision - 1.0 if precision else 0.0
    r1 = ((1.0 - recall) ** 2 + over**2) ** 0.5
    r2 = (-over + recall - 1.0) / 2**0.5
    return {
        "hits": float(hits),
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "os": over,
        "r_value": 1.0 - (abs(r1) + abs(r2)) / 2.0,
    }


def bootstrap_interval(hits: Tensor, level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of `hits [Q]` (one 0/1 per query), resampling the
    queries with replacement. A resample's mean of 0/1 values is Binomial(Q, mean)/Q, so the interval
    is that distribution's quantiles, exactly (the limit of infinitely many resamples; no seed, no
    [resamples, Q] draws). It measures how much the score depends on which queries the split holds,
    not how much a retrained model would differ. NaN for Q = 0."""
    from scipy.stats import binom

    if not 0.0 < level < 1.0:
        raise ValueError(f"bootstrap_interval: level must lie in (0, 1), got {level}")
    if hits.numel() == 0:
        return float("nan"), float("nan")
    queries, tail = hits.numel(), (1.0 - level) / 2
    low, high = binom.ppf([tail, 1.0 - tail], queries, float(hits.double().mean())) / queries
    return float(low), float(high)


def _rank_scores(rank: Tensor, prefix: str) -> dict[str, float]:
    """R@1/5/10 and mAP@10 of 0-based ranks `[Q]` of the true candidate, keys `{prefix}_...`, and
    the 95 % bootstrap interval of R@1 over the queries (`{prefix}_R@1_low`, `{prefix}_R@1_high`)."""
    scores = {f"{prefix}_R@{k}": float((rank < k).double().mean()) for k in (1, 5, 10)}
    scores[f"{prefix}_mAP@10"] = float(torch.where(rank < 10, 1.0 / (rank + 1), 0.0).mean())
    scores[f"{prefix}_R@1_low"], scores[f"{prefix}_R@1_high"] = bootstrap_interval(rank < 1)
    return scores


def retrieval_metrics(similarity: Tensor, prefix: str) -> dict[str, float]:
    """LAION-CLAP retrieval scores of queries (rows) against candidates (columns), true pair on the diagonal.

    `similarity [N, N]`: the rank of the true candidate counts from 0 among all N (candidates that
    tie with it do not push it down); R@k = share of
    queries with rank < k; mAP@10 = mean of 1/(rank+1) if rank < 10 else 0. Keys are
    `{prefix}_R@1`, `{prefix}_R@5`, `{prefix}_R@10`, `{prefix}_mAP@10`.
    """
    sim = torch.as_tensor(similarity, dtype=torch.float64)
    if sim.dim() != 2 or sim.shape[0] != sim.shape[1]:
        raise ValueError(f"retrieval_metrics: similarity must be square [N, N], got {tuple(sim.shape)}")
    return _rank_scores((sim > sim.diagonal()[:, None]).sum(dim=1), prefix)


def caption_retrieval_metrics(audio: Tensor, text: Tensor, owner: Tensor) -> dict[str, float]:
    """Audio-text retrieval with several captions per clip, by the LAION-CLAP protocol.

    audio `[N, E]`, text `[M, E]` embeddings; owner `[M]`: the clip of each caption (every clip owns
    at least one). t2a: every caption queries the N clips, scores averaged over all M captions.
    a2t: every clip queries the M captions and counts the rank of its best-ranked own caption.
    Ranks and keys as in `retrieval_metrics`, which this equals when each clip has one caption;
    `captions_per_clip` = M / N says which case was scored.
    """
    sim = torch.as_tensor(audio, dtype=torch.float64) @ torch.as_tensor(text, dtype=torch.float64).T
    owner = torch.as_tensor(owner, dtype=torch.long)
    n, m = sim.shape
    if owner.shape != (m,) or (m and not 0 <= int(owner.min()) <= int(owner.max()) < n):
        raise ValueError(f"caption_retrieval_metrics: owner must be [{m}] clip indices below {n}")
    own = owner[None, :] == torch.arange(n)[:, None]
    if not own.any(dim=1).all():
        missing = int((~own.any(dim=1)).nonzero()[0])
        raise ValueError(f"caption_retrieval_metrics: clip {missing} has no caption")
    best_own = sim.masked_fill(~own, -torch.inf).amax(dim=1, keepdim=True)
    t2a_true = sim.gather(0, owner[None, :])
    scores = _rank_scores((sim > best_own).sum(dim=1), "a2t")
    scores.update(_rank_scores((sim > t2a_true).sum(dim=0), "t2a"))
    scores["captions_per_clip"] = m / n
    return scores

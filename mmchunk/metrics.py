"""Boundary metrics of the speech segmentation literature: precision, recall, F1, OS, R-value."""

from __future__ import annotations

from collections.abc import Sequence


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

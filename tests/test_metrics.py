"""Boundary metrics against hand-computed values."""

from __future__ import annotations

import math

import pytest

from mmchunk.metrics import boundary_scores, match_boundaries


def test_hand_computed_scores():
    s = boundary_scores([0.10, 0.20, 0.50], [0.11, 0.52, 0.90], tolerance=0.05)
    assert s["hits"] == 2
    assert s["precision"] == pytest.approx(2 / 3) and s["recall"] == pytest.approx(2 / 3)
    assert s["f1"] == pytest.approx(2 / 3) and s["os"] == pytest.approx(0.0)
    r1 = 1 / 3
    r2 = (2 / 3 - 1) / math.sqrt(2)
    assert s["r_value"] == pytest.approx(1 - (abs(r1) + abs(r2)) / 2)


def test_matching_is_one_to_one_and_greedy_nearest_first():
    assert match_boundaries([0.10, 0.11, 0.12], [0.11], 0.05) == 1
    # Nearest pair first (0.13↔0.12) blocks the other two pairs: greedy, not optimal.
    assert match_boundaries([0.10, 0.13], [0.12, 0.16], 0.03) == 1
    assert match_boundaries([0.0], [0.05], 0.05) == 1
    assert match_boundaries([0.0], [0.0501], 0.05) == 0


def test_empty_inputs_and_perfect_match():
    assert boundary_scores([], [0.1], 0.02)["recall"] == 0.0
    assert boundary_scores([0.1], [], 0.02)["precision"] == 0.0
    perfect = boundary_scores([0.1, 0.4], [0.1, 0.4], 0.02)
    assert perfect["f1"] == 1.0 and perfect["r_value"] == pytest.approx(1.0)

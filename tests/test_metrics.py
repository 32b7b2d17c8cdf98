"""Boundary metrics against hand-computed values; the bootstrap interval of R@1 against the normal
approximation of a binomial share."""

from __future__ import annotations

import math

import pytest
import torch

from mmchunk.metrics import bootstrap_interval, boundary_scores, match_boundaries, retrieval_metrics


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


@pytest.mark.parametrize("queries", [100, 400, 2000])
def test_bootstrap_interval_matches_the_binomial_width(queries):
    """Half the queries hit: the interval is centred on 0.5 and as wide as ±1.96·√(0.25 / Q)."""
    hits = torch.arange(queries) % 2 == 0
    low, high = bootstrap_interval(hits)
    half = 1.96 * math.sqrt(0.25 / queries)
    assert low < 0.5 < high
    assert (high - low) / 2 == pytest.approx(half, rel=0.15)
    assert (low + high) / 2 == pytest.approx(0.5, abs=half / 5)


def test_bootstrap_interval_equals_resampling_and_edge_cases():
    """The closed form against resampling the queries by hand (20 000 resamples), and the edges."""
    hits = torch.tensor([1, 0, 1, 1, 0, 1, 1, 1, 0, 1] * 4, dtype=torch.bool)
    gen = torch.Generator().manual_seed(0)
    means = hits.double()[torch.randint(hits.numel(), (20_000, hits.numel()), generator=gen)].mean(1)
    drawn = torch.quantile(means, torch.tensor([0.025, 0.975], dtype=torch.float64)).tolist()
    assert bootstrap_interval(hits) == pytest.approx(tuple(drawn), abs=1 / hits.numel() + 1e-9)
    assert bootstrap_interval(torch.ones(7, dtype=torch.bool)) == (1.0, 1.0)
    assert bootstrap_interval(torch.zeros(1, dtype=torch.bool)) == (0.0, 0.0)
    assert all(math.isnan(v) for v in bootstrap_interval(torch.zeros(0, dtype=torch.bool)))
    low, high = bootstrap_interval(hits, level=0.5)
    wide = bootstrap_interval(hits, level=0.99)
    assert wide[0] <= low <= 0.7 <= high <= wide[1] and wide[0] < low
    with pytest.raises(ValueError, match="level"):
        bootstrap_interval(hits, level=1.0)


def test_retrieval_scores_carry_the_interval_of_their_r_at_1():
    sim = torch.eye(5) + 0.1
    sim[3, 4] = 2.0  # query 3 ranks its pair second
    scores = retrieval_metrics(sim, "a2t")
    assert scores["a2t_R@1"] == pytest.approx(0.8)
    hits = torch.tensor([True, True, True, False, True])
    assert (scores["a2t_R@1_low"], scores["a2t_R@1_high"]) == bootstrap_interval(hits)

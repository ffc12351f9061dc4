"""Acquisition scores against hand-computed values and the greedy diverse batch selection."""

import numpy as np
import pytest
from scipy import special

from equiprop.data.errors import ConfigError
from equiprop.uncertainty.acquisition import acquisition_scores, expected_improvement, greedy_diverse_selection, \
    median_pairwise_distance, normalise, window_probability


def test_window_probability_of_a_gaussian():
    # N(0, 1) inside [-1, 1]: erf(1/sqrt 2) = 0.6827; N(0.5, 1) inside [0, 1]: 2 Phi(0.5) - 1 = 0.3829
    p = window_probability([0.0, 0.5], [1.0, 1.0], -1.0, 1.0)
    assert p[0] == pytest.approx(special.erf(1 / np.sqrt(2)), abs=1e-12)
    assert window_probability([0.5], [1.0], 0.0, 1.0)[0] == pytest.approx(0.38292492254802624, abs=1e-12)
    # scale invariance: the window in units of sigma is what counts
    assert window_probability([5.0], [2.0], 3.0, 7.0)[0] == pytest.approx(p[0], abs=1e-12)
    # no uncertainty: the indicator of the mean being inside
    np.testing.assert_array_equal(window_probability([0.5, 2.0], [0.0, 0.0], 0.0, 1.0), [1.0, 0.0])


def test_window_needs_lo_below_hi():
    with pytest.raises(ConfigError, match="LO < HI"):
        window_probability([0.0], [1.0], 1.0, 1.0)


def test_expected_improvement_formula_and_monte_carlo():
    # mu = best: sigma phi(0) = sigma / sqrt(2 pi); mu - best = 1, sigma = 1: Phi(1) + phi(1) = 1.0833
    assert expected_improvement([2.0], [3.0], 2.0)[0] == pytest.approx(3.0 / np.sqrt(2 * np.pi), abs=1e-12)
    assert expected_improvement([1.0], [1.0], 0.0)[0] == pytest.approx(0.8413447460685429 + 0.24197072451914337)
    # direction min mirrors max
    assert expected_improvement([-1.0], [1.0], 0.0, "min")[0] == pytest.approx(expected_improvement([1.0], [1.0], 0.0)[0])
    samples = np.random.default_rng(0).normal(0.3, 0.7, 400_000)
    assert expected_improvement([0.3], [0.7], 0.5)[0] == pytest.approx(np.maximum(samples - 0.5, 0).mean(), abs=3e-3)
    # no uncertainty: the plain improvement, never negative
    np.testing.assert_array_equal(expected_improvement([1.0, -1.0], [0.0, 0.0], 0.0), [1.0, 0.0])
    with pytest.raises(ConfigError, match="direction"):
        expected_improvement([0.0], [1.0], 0.0, "up")


def test_acquisition_scores_dispatch_and_errors():
    mu, sigma = np.array([0.0, 1.0]), np.array([0.2, 0.1])
    np.testing.assert_array_equal(acquisition_scores("uncertainty", mu, sigma), sigma)
    np.testing.assert_allclose(acquisition_scores("window", mu, sigma, window=(-1, 1)), window_probability(mu, sigma, -1, 1))
    np.testing.assert_allclose(acquisition_scores("ei", mu, sigma, best=0.5), expected_improvement(mu, sigma, 0.5))
    with pytest.raises(ConfigError, match="--window"):
        acquisition_scores("window", mu, sigma)
    with pytest.raises(ConfigError, match="--best"):
        acquisition_scores("ei", mu, sigma)
    with pytest.raises(ConfigError, match="--strategy"):
        acquisition_scores("greedy", mu, sigma)


def test_normalise_and_median_distance():
    np.testing.assert_allclose(normalise([2.0, 4.0, 3.0]), [0.0, 1.0, 0.5])
    np.testing.assert_array_equal(normalise([1.0, 1.0]), [0.0, 0.0])
    assert median_pairwise_distance([[0, 0], [3, 4], [6, 8]]) == pytest.approx(5.0)


# A and its near duplicate A' score highest; B is far away with a middling score; C is far with the lowest score
POINTS = np.array([[0.0, 0.0], [0.01, 0.0], [5.0, 5.0], [10.0, 0.0]])
SCORES = np.array([1.0, 0.99, 0.5, 0.0])


def test_without_diversity_the_plain_ranking():
    picks, terms = greedy_diverse_selection(SCORES, POINTS, 2, diversity=0.0)
    assert picks.tolist() == [0, 1]  # spends the batch on the near duplicate
    assert terms[0] == 0.0  # nothing labelled: no distance for the first pick


def test_diversity_picks_the_far_point_over_a_near_duplicate():
    picks, terms = greedy_diverse_selection(SCORES, POINTS, 2, diversity=1.0)
    assert picks.tolist() == [0, 2]
    scale = median_pairwise_distance(POINTS)
    assert terms[1] == pytest.approx(np.hypot(5, 5) / scale)


def test_labelled_structures_anchor_the_distance():
    # A is already labelled (a point on top of it): its near duplicate is not worth a label, B is
    picks, _ = greedy_diverse_selection(SCORES[1:], POINTS[1:], 1, diversity=1.0, labelled=POINTS[:1])
    assert picks.tolist() == [1]
    picks, _ = greedy_diverse_selection(SCORES[1:], POINTS[1:], 1, diversity=0.0, labelled=POINTS[:1])
    assert picks.tolist() == [0]


def test_budget_larger_than_the_pool_and_bad_diversity():
    picks, _ = greedy_diverse_selection(SCORES, POINTS, 10, diversity=0.5)
    assert sorted(picks.tolist()) == [0, 1, 2, 3]
    with pytest.raises(ConfigError, match="diversity"):
        greedy_diverse_selection(SCORES, POINTS, 1, diversity=-1)

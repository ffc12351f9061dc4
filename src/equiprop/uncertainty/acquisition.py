"""Acquisition functions for choosing the next labels (DFT calculations), and greedy diverse batch selection.

Every score is a function of a candidate's predicted mean ``mu`` and standard deviation ``sigma`` (physical units,
one scalar output), assuming the value is distributed as N(mu, sigma^2):

- ``uncertainty``: sigma itself (label what the model knows least);
- ``window``: P(lo <= value <= hi), the probability that the candidate hits a target window (the expected number of
  hits of a batch is the sum of its scores);
- ``ei``: expected improvement over the best value known, E[max(value - best, 0)] for ``direction`` max
  (E[max(best - value, 0)] for min): ``d Phi(d/sigma) + sigma phi(d/sigma)`` with ``d = mu - best`` (``best - mu``).

``sigma == 0`` gives the deterministic limits (indicator of the window; ``max(d, 0)``).

``greedy_diverse_selection`` picks a batch one candidate at a time, maximising
``normalised_score + diversity * distance / median_distance``, where ``distance`` is the latent-space distance to the
nearest labelled or already picked structure and ``median_distance`` the median pairwise distance of the pool, so a
batch does not spend its budget on near-duplicates. ``diversity = 0`` is the plain ranking by score.

A NaN or infinite window end, ``best`` or ``diversity`` is a ``ConfigError`` (NaN would pass any ``<`` check and rank
nonsense); the command line refuses them earlier (``equiprop.workflows.options``).
"""

from __future__ import annotations

import numpy as np
from scipy import stats
from scipy.spatial.distance import cdist, pdist

from equiprop.data.errors import ConfigError

STRATEGIES = ("uncertainty", "window", "ei")
DIRECTIONS = ("max", "min")


def window_probability(mu, sigma, low: float, high: float) -> np.ndarray:
    """P(low <= X <= high) for X ~ N(mu, sigma^2), elementwise."""
    if not (np.isfinite(low) and np.isfinite(high) and low < high):  # NaN fails every comparison: test it first
        raise ConfigError(f"--window needs finite LO < HI, got {low} {high}")
    mu, sigma = np.asarray(mu, dtype=np.float64), np.asarray(sigma, dtype=np.float64)
    inside = ((mu >= low) & (mu <= high)).astype(np.float64)
    safe = np.where(sigma > 0, sigma, 1.0)
    p = stats.norm.cdf((high - mu) / safe) - stats.norm.cdf((low - mu) / safe)
    return np.where(sigma > 0, p, inside)


def expected_improvement(mu, sigma, best: float, direction: str = "max") -> np.ndarray:
    """E[max(X - best, 0)] (direction max) or E[max(best - X, 0)] (min) for X ~ N(mu, sigma^2), elementwise."""
    if direction not in DIRECTIONS:
        raise ConfigError(f"--direction must be one of {', '.join(DIRECTIONS)}, got {direction!r}")
    if not np.isfinite(best):
        raise ConfigError(f"--best must be a finite number, got {best}")
    mu, sigma = np.asarray(mu, dtype=np.float64), np.asarray(sigma, dtype=np.float64)
    gain = mu - best if direction == "max" else best - mu
    safe = np.where(sigma > 0, sigma, 1.0)
    z = gain / safe
    ei = gain * stats.norm.cdf(z) + safe * stats.norm.pdf(z)
    return np.where(sigma > 0, ei, np.maximum(gain, 0.0))


def acquisition_scores(strategy: str, mu, sigma, window: tuple[float, float] | None = None,
                       best: float | None = None, direction: str = "max") -> np.ndarray:
    """Scores of one strategy (larger is better to label next)."""
    if strategy == "uncertainty":
        return np.asarray(sigma, dtype=np.float64).copy()
    if strategy == "window":
        if window is None:
            raise ConfigError("--strategy window needs --window LO HI")
        return window_probability(mu, sigma, *window)
    if strategy == "ei":
        if best is None:
            raise ConfigError("--strategy ei needs --best VALUE (or labelled pool entries to take the best from)")
        return expected_improvement(mu, sigma, best, direction)
    raise ConfigError(f"--strategy must be one of {', '.join(STRATEGIES)}, got {strategy!r}")


def normalise(scores) -> np.ndarray:
    """Min-max to [0, 1], so that the diversity weight means the same for every strategy (constant scores: 0)."""
    scores = np.asarray(scores, dtype=np.float64)
    span = np.ptp(scores) if len(scores) else 0.0
    return (scores - scores.min()) / span if span > 0 else np.zeros_like(scores)


def median_pairwise_distance(points, max_points: int = 2000, seed: int = 0) -> float:
    """Median Euclidean distance between pairs of ``points`` (a seeded subsample of ``max_points`` for speed)."""
    points = np.asarray(points, dtype=np.float64)
    if len(points) > max_points:
        points = points[np.random.default_rng(seed).choice(len(points), max_points, replace=False)]
    distances = pdist(points) if len(points) > 1 else np.zeros(0)
    positive = distances[distances > 0]
    return float(np.median(positive)) if len(positive) else 1.0  # all identical: any scale will do


def greedy_diverse_selection(scores, candidates, budget: int, diversity: float = 0.0, labelled=None,
                             scale: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Indices of ``budget`` candidates in pick order, and each pick's distance term (distance to the nearest
    labelled or earlier pick over ``scale``; 0 for the first pick when nothing is labelled).

    Args:
        scores: (n,) acquisition scores (normalised here to [0, 1]).
        candidates: (n, d) latent vectors of the candidates.
        labelled: (m, d) latent vectors of structures already labelled (or None).
        scale: distance unit (default: median pairwise distance of candidates and labelled together).
    """
    if not (np.isfinite(diversity) and diversity >= 0):
        raise ConfigError(f"--diversity must be a finite number >= 0, got {diversity}")
    scores = normalise(scores)
    candidates = np.asarray(candidates, dtype=np.float64)
    labelled = np.zeros((0, candidates.shape[1])) if labelled is None else np.asarray(labelled, dtype=np.float64)
    budget = min(int(budget), len(scores))
    if scale is None:
        scale = median_pairwise_distance(np.concatenate([candidates, labelled]))
    nearest = np.full(len(scores), np.inf)
    for start in range(0, len(labelled), 4096):  # chunks bound the memory of the distance matrix
        nearest = np.minimum(nearest, cdist(candidates, labelled[start:start + 4096]).min(axis=1))
    available = np.ones(len(scores), dtype=bool)
    picks, terms = [], []
    for _ in range(budget):
        term = np.where(np.isfinite(nearest), nearest / scale, 0.0)
        objective = np.where(available, scores + diversity * term, -np.inf)
        best = int(np.argmax(objective))  # ties: the lowest index, so a selection is reproducible
        picks.append(best)
        terms.append(float(term[best]))
        available[best] = False
        nearest = np.minimum(nearest, np.linalg.norm(candidates - candidates[best], axis=1))
    return np.array(picks, dtype=int), np.array(terms)

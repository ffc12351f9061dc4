"""Is a predicted standard deviation honest? Calibration metrics, a variance recalibration, calibration curves.

For errors ``e`` and predicted standard deviations ``s`` of one output (all independent components of a tensor
pooled), with ``z = e / s``:

- ``within_1sigma`` / ``within_2sigma``: fractions with ``|z| <= 1`` / ``<= 2`` (a calibrated Gaussian: 0.683 / 0.954);
- ``miscalibration_area``: mean over confidence levels p in (0, 1) of |observed fraction inside the central p-interval
  - p| (0: perfect; 0.5: the worst possible), as in Tran et al. 2020 / uncertainty-toolbox;
- ``spearman``: rank correlation of ``|e|`` with ``s`` (does a larger sigma mean a larger error?);
- ``std_scale``: the factor on ``s`` that minimises the miscalibration area (searched on a log grid). Fitted on the
  validation split and applied to the test split, it is the per-task variance recalibration. (The Gaussian
  maximum-likelihood factor ``sqrt(mean(z^2))``, ``method="likelihood"``, is dominated by a few large errors when
  errors are heavy-tailed, as ours are, and then makes most intervals far too wide.)

Components whose predicted sigma is exactly zero (e.g. a tensor component every member predicts as zero by symmetry)
are left out of the z-based metrics and counted in ``zero_sigma``.
"""

from __future__ import annotations

import numpy as np
from scipy import special, stats

from equiprop.data.tensor_ops import VOIGT_PAIRS

EXPECTED_WITHIN = {1: float(special.erf(1 / np.sqrt(2))), 2: float(special.erf(2 / np.sqrt(2)))}  # 0.683, 0.954
LEVELS = np.linspace(0.01, 0.99, 99)  # confidence levels of the central intervals


def flat_components(task, values: np.ndarray) -> np.ndarray:
    """(n, k) independent components of user-form values: scalars (n, 1); eps 3x3 -> its 6; elastic 6x6 Voigt -> its
    21 (upper triangle); piezo 3x6 -> its 18."""
    values = np.asarray(values, dtype=np.float64)
    if values.ndim == 1:
        return values[:, None]
    if values.shape[1:] == (3, 3):
        return np.stack([values[:, i, j] for i, j in VOIGT_PAIRS], axis=1)
    if values.shape[1:] == (6, 6):
        rows, cols = np.triu_indices(6)
        return values[:, rows, cols]
    return values.reshape(len(values), -1)


def observed_fractions(z: np.ndarray, levels: np.ndarray = LEVELS) -> np.ndarray:
    """Fraction of |z| inside the central interval of each confidence level of a standard normal."""
    bounds = stats.norm.ppf(0.5 + levels / 2)
    return (np.abs(z)[None, :] <= bounds[:, None]).mean(axis=1)


def miscalibration_area(z: np.ndarray) -> float:
    return float(np.abs(observed_fractions(z) - LEVELS).mean())


def fit_std_scale(errors: np.ndarray, sigmas: np.ndarray, method: str = "area") -> float:
    """The factor on sigma over components with s > 0 (1 when none): ``area`` minimises the miscalibration area,
    ``likelihood`` is the Gaussian maximum-likelihood ``sqrt(mean((e/s)^2))``."""
    e, s = np.ravel(errors), np.ravel(sigmas)
    keep = s > 0
    if not keep.any():
        return 1.0
    z = np.sort(np.abs(e[keep] / s[keep]))
    if method == "likelihood":
        return float(np.sqrt(np.mean(z ** 2)))
    if method != "area":
        raise ValueError(f"method must be 'area' or 'likelihood', got {method!r}")
    typical = max(float(np.median(z)) / stats.norm.ppf(0.75), 1e-12)  # the scale that fits the median
    scales = np.geomspace(typical / 30, typical * 30, 600)
    bounds = stats.norm.ppf(0.5 + LEVELS / 2)
    # fraction of |z| / c inside each bound, for every candidate c, by binary search in the sorted |z|
    inside = np.searchsorted(z, bounds[None, :] * scales[:, None], side="right") / len(z)
    return float(scales[np.argmin(np.abs(inside - LEVELS[None, :]).mean(axis=1))])


def calibration_metrics(errors: np.ndarray, sigmas: np.ndarray) -> dict[str, float]:
    """The metrics above for errors and sigmas of equal shape (any layout; flattened)."""
    e, s = np.ravel(errors).astype(np.float64), np.ravel(sigmas).astype(np.float64)
    if e.shape != s.shape:
        raise ValueError(f"errors {e.shape} and sigmas {s.shape} differ in shape")
    keep = s > 0
    z = e[keep] / s[keep]
    out = {"n": int(e.size), "zero_sigma": int((~keep).sum()), "mae": float(np.abs(e).mean()) if e.size else np.nan,
           "mean_sigma": float(s.mean()) if s.size else np.nan}
    if not len(z):
        return {**out, "within_1sigma": np.nan, "within_2sigma": np.nan, "miscalibration_area": np.nan,
                "spearman": np.nan, "std_scale": 1.0}
    rho = stats.spearmanr(np.abs(e[keep]), s[keep]).statistic if len(z) > 2 and np.ptp(s[keep]) > 0 else np.nan
    return {**out, "within_1sigma": float((np.abs(z) <= 1).mean()), "within_2sigma": float((np.abs(z) <= 2).mean()),
            "miscalibration_area": miscalibration_area(z),
            "spearman": float(rho), "std_scale": fit_std_scale(e, s)}


def calibration_plot(curves: dict[str, dict[str, np.ndarray]], path, title: str = "") -> None:
    """One panel per output: observed vs expected fraction inside the central intervals, one line per variant
    (``curves[output][variant] = z`` values), the diagonal for perfect calibration."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(curves)
    cols = min(4, len(names))
    rows = -(-len(names) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 3.2 * rows), squeeze=False)
    for ax, name in zip(axes.ravel(), names):
        ax.plot([0, 1], [0, 1], color="grey", lw=1, ls="--")
        for variant, z in curves[name].items():
            if len(z):
                ax.plot(LEVELS, observed_fractions(z), label=variant)
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("expected fraction in interval")
        ax.set_ylabel("observed fraction")
        ax.legend(fontsize=7)
    for ax in axes.ravel()[len(names):]:
        ax.axis("off")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)

"""Calibration metrics on synthetic errors whose answers are known in closed form."""

import numpy as np
import pytest
from scipy import special

from equiprop.uncertainty.calibration import EXPECTED_WITHIN, calibration_metrics, fit_std_scale, flat_components


def test_a_hand_made_example_gives_its_exact_fractions_and_scale():
    errors, sigmas = np.array([0.5, 1.5, -2.5, 0.1]), np.ones(4)
    metrics = calibration_metrics(errors, sigmas)
    assert metrics["within_1sigma"] == 0.5 and metrics["within_2sigma"] == 0.75
    assert fit_std_scale(errors, sigmas, "likelihood") == pytest.approx(np.sqrt((0.25 + 2.25 + 6.25 + 0.01) / 4))
    assert metrics["mae"] == pytest.approx(4.6 / 4)


def test_gaussian_errors_with_their_true_sigmas_are_calibrated():
    rng = np.random.default_rng(0)
    sigmas = rng.uniform(0.1, 3.0, 200_000)
    errors = rng.normal(0.0, sigmas)
    metrics = calibration_metrics(errors, sigmas)
    assert metrics["within_1sigma"] == pytest.approx(EXPECTED_WITHIN[1], abs=0.005)
    assert metrics["within_2sigma"] == pytest.approx(EXPECTED_WITHIN[2], abs=0.003)
    assert metrics["miscalibration_area"] < 0.005
    assert metrics["std_scale"] == pytest.approx(1.0, abs=0.01)
    assert metrics["spearman"] > 0.3  # heteroscedastic: a larger sigma does mean a larger error


def test_overconfident_sigmas_are_detected_and_the_fitted_scale_repairs_them():
    rng = np.random.default_rng(1)
    sigmas = rng.uniform(0.5, 2.0, 100_000)
    errors = rng.normal(0.0, sigmas)
    overconfident = calibration_metrics(errors, sigmas / 2)
    assert overconfident["within_1sigma"] == pytest.approx(special.erf(0.5 / np.sqrt(2)), abs=0.01)  # 0.383
    assert overconfident["miscalibration_area"] > 0.15
    scale = fit_std_scale(errors, sigmas / 2)
    assert scale == pytest.approx(2.0, rel=0.03)
    assert fit_std_scale(errors, sigmas / 2, "likelihood") == pytest.approx(2.0, rel=0.02)
    assert calibration_metrics(errors, sigmas / 2 * scale)["miscalibration_area"] < 0.01


def test_sigma_unrelated_to_the_error_has_no_rank_correlation():
    rng = np.random.default_rng(2)
    metrics = calibration_metrics(rng.normal(size=50_000), rng.uniform(0.5, 1.5, 50_000))
    assert abs(metrics["spearman"]) < 0.02


def test_zero_sigmas_are_counted_and_left_out_of_the_z_metrics():
    metrics = calibration_metrics(np.array([0.0, 0.0, 0.5, 3.0]), np.array([0.0, 0.0, 1.0, 1.0]))
    assert metrics["zero_sigma"] == 2 and metrics["n"] == 4
    assert metrics["within_1sigma"] == 0.5
    assert fit_std_scale(np.array([0.0, 0.0, 0.5, 3.0]), np.array([0.0, 0.0, 1.0, 1.0]), "likelihood") == \
        pytest.approx(np.sqrt((0.25 + 9) / 2))


def test_independent_components_of_each_tensor_form():
    class Task:
        kind = "tensor"

    eps = np.arange(9.0).reshape(1, 3, 3)
    assert flat_components(Task, eps).tolist() == [[0, 4, 8, 5, 2, 1]]  # xx yy zz yz xz xy
    assert flat_components(Task, np.zeros((2, 6, 6))).shape == (2, 21)
    assert flat_components(Task, np.zeros((2, 3, 6))).shape == (2, 18)
    assert flat_components(Task, np.zeros(5)).shape == (5, 1)


def test_heavy_tailed_errors_get_the_scale_that_fits_most_of_them_not_the_outliers():
    rng = np.random.default_rng(3)
    errors = np.concatenate([rng.normal(0.0, 1.0, 9_500), rng.normal(0.0, 30.0, 500)])  # 5% gross errors
    sigmas = np.full(errors.size, 0.25)  # overconfident by 4x for the bulk
    area, likelihood = fit_std_scale(errors, sigmas), fit_std_scale(errors, sigmas, "likelihood")
    assert likelihood > 20  # pulled up by the 5% outliers
    assert 3.5 < area < 6
    assert calibration_metrics(errors, sigmas * area)["miscalibration_area"] < \
        calibration_metrics(errors, sigmas * likelihood)["miscalibration_area"]

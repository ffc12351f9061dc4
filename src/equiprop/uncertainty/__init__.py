"""Predictive uncertainty: deep ensembles, Monte-Carlo dropout, calibration metrics and recalibration."""

from equiprop.uncertainty.calibration import calibration_metrics, fit_std_scale
from equiprop.uncertainty.ensemble import STD_SUFFIX, UncertainPredictor, load_predictor, read_manifest

__all__ = ["STD_SUFFIX", "UncertainPredictor", "calibration_metrics", "fit_std_scale", "load_predictor",
           "read_manifest"]

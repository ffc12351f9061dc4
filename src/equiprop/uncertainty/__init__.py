"""Predictive uncertainty: calibration metrics and recalibration, acquisition scores. Ensembles and MC dropout are
the one predictor's (``equiprop.inference.Predictor``); ``load_predictor`` is re-exported here for older scripts."""

from equiprop.inference import STD_SUFFIX, load_predictor
from equiprop.train.integrity import read_manifest
from equiprop.uncertainty.calibration import calibration_metrics, fit_std_scale

__all__ = ["STD_SUFFIX", "calibration_metrics", "fit_std_scale", "load_predictor", "read_manifest"]

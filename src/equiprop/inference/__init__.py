"""Inference: the one predictor (``Predictor``: one model or an ensemble; loading by name, manifest or path; the
checks; latents), the checks every inference command applies, and the one split evaluator (``evaluate_split``)."""

from equiprop.inference.evaluate import SplitPredictions, evaluate_split
from equiprop.inference.outputs import STD_SUFFIX
from equiprop.inference.predictor import Predictor, load_predictor

__all__ = ["STD_SUFFIX", "Predictor", "SplitPredictions", "evaluate_split", "load_predictor"]

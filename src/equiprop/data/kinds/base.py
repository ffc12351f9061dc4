"""The contract of a task kind: what a kind of task means, in one place (labels, model space, normalisation, loss,
metrics, readout, written units). Subclasses override what differs; ``equiprop.data.kinds`` registers them."""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from equiprop.data.errors import ConfigError, DataError

REGRESSION_LOSSES = {
    "mae": nn.functional.l1_loss,
    "mse": nn.functional.mse_loss,
    "huber": nn.functional.huber_loss,
}



class TaskKind:
    """The meaning of a kind of task. Methods take the task (``TaskSpec``) where its fields matter."""

    name = ""
    has_error_in_units = True  # False: the output is a probability, with no error in the label's units
    normalised = True  # False: model space is what the head predicts (a logit), no shift or scale
    error_metric: str | None = "mae"  # the error in the label's units a selection or a curve reads; None: none
    readout = "scalar"  # the head: "scalar" (invariant numbers, ``outputs`` of them), "tensor" (irreps of ``basis``)
    # or "pseudoscalar" (one 0o number)
    # +1: the output transforms under an improper rotation Q (det Q = -1) as its Cartesian form says (a scalar stays,
    # a polar tensor rotates as positions do); -1: a pseudo quantity, whose sign also flips then (a handedness)
    parity = 1

    def outputs(self, task) -> int:
        """Invariant numbers a scalar readout predicts per structure (or atom): 1, or one logit per class."""
        return 1
    weighting_factor = 0.5  # Kendall, Gal & Cipolla: 1/2 for a Gaussian likelihood, 1 for a classifier

    def check(self, task) -> None:
        """Raise ConfigError for fields this kind cannot take."""
        if task.parametrization != "linear":
            raise ConfigError(f"task {task.name!r}: parametrization {task.parametrization!r} is for tensors")

    def rank(self, task) -> int:
        return 0

    def model_units(self, task) -> str:
        return task.units

    def output_units(self, task) -> str:
        return task.units

    def basis(self, task) -> np.ndarray | None:
        """(irreps dim, 3^rank) change of basis the normaliser works in; None: the value itself."""
        return None

    # -- labels (numpy, physical units) --------------------------------------------------------------------------
    def parse_value(self, task, value, where: str):
        """One label (one structure's, or one atom's) in physical units; None if missing; DataError if invalid."""
        try:
            x = float(value)
        except (TypeError, ValueError):
            raise DataError(where, f"{task.name}: expected a number, got {str(value)[:40]!r}",
                            "invalid label value") from None
        if not math.isfinite(x):
            return None  # "inf", "-Infinity", ... are missing values, like NaN
        self.check_number(task, x, where)
        task.check_range(np.asarray([x]), where)
        return x

    def check_number(self, task, x: float, where: str) -> None:
        pass

    def to_model(self, task, x: np.ndarray) -> np.ndarray:
        return x

    def from_model(self, task, x: np.ndarray) -> np.ndarray:
        return x

    def statistics(self, task, x: np.ndarray) -> tuple:
        """(shift, scale) of model-space training labels ``x``, (n, *model_shape): what the normaliser applies."""
        n = len(x)
        if n == 0:
            return 0.0, 1.0
        scale = float(x.std()) if n > 1 else 1.0
        return float(x.mean()), scale if scale > 1e-12 else 1.0

    # -- model side (torch) --------------------------------------------------------------------------------------
    def model_to_physical(self, task, model: torch.Tensor) -> torch.Tensor:
        """Model space -> physical units, for labels and de-normalised predictions alike."""
        return model

    def prediction_to_physical(self, task, model: torch.Tensor) -> torch.Tensor:
        """A prediction in model space -> what is written (a binary's logit -> probability)."""
        return self.model_to_physical(task, model)

    def loss_columns(self, task) -> dict[str, torch.Tensor]:
        """{part: (k,) columns of the normalised prediction} of the parts its loss is split into; {}: one loss."""
        return {}

    def loss(self, prediction: torch.Tensor, target: torch.Tensor, loss: str, columns: dict | None = None,
             isotropic_weight: float = 1.0, anisotropic_weight: float = 1.0) -> tuple[torch.Tensor, dict]:
        """(loss, {part: loss}) over the labelled rows in normalised space (prediction/target: (num_labelled,
        *shape)); ``loss``: "mae", "mse" or "huber" (regression kinds); ``columns``: ``loss_columns``."""
        return REGRESSION_LOSSES[loss](prediction, target), {}

    def metrics(self, task) -> dict:
        """Fresh torchmetrics of one task, by name (physical units; reduced across DDP processes)."""
        from torchmetrics import MeanAbsoluteError, MeanSquaredError, R2Score

        return {"mae": MeanAbsoluteError(), "rmse": MeanSquaredError(squared=False), "r2": R2Score()}

    def update_metrics(self, task, metrics, prediction: torch.Tensor, target: torch.Tensor) -> None:
        """Physical-unit predictions and labels of the labelled rows."""
        for name in ("mae", "rmse", "r2"):
            metrics[name].update(prediction, target)



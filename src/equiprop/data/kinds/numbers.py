"""Kinds whose label is one number: ``scalar``, ``log_scalar`` (learned as log10) and ``binary`` (a 0/1 class)."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from equiprop.data.errors import ConfigError, DataError
from equiprop.data.kinds.base import TaskKind

BINARY_UNITS = "probability"  # what a binary task's output is: the predicted probability of class 1


class ScalarKind(TaskKind):
    name = "scalar"


class LogScalarKind(TaskKind):
    name = "log_scalar"

    def check(self, task) -> None:
        super().check(task)
        if task.pooling == "sum":
            raise ConfigError(f"task {task.name!r}: a sum-pooled (extensive) task must be additive over atoms; "
                              f"kind {self.name!r} lives in log space")

    def model_units(self, task) -> str:
        return f"log10({task.units})"

    def check_number(self, task, x: float, where: str) -> None:
        if x <= 0:
            raise DataError(where, f"{task.name}: log-scalar label must be > 0 {task.units}, got {x}",
                            "invalid label value")

    def to_model(self, task, x: np.ndarray) -> np.ndarray:
        return np.log10(x)

    def from_model(self, task, x: np.ndarray) -> np.ndarray:
        return np.power(10.0, x)

    def model_to_physical(self, task, model: torch.Tensor) -> torch.Tensor:
        return torch.pow(10.0, model)


class BinaryKind(TaskKind):
    name = "binary"
    has_error_in_units = False
    normalised = False
    error_metric = None  # a probability: selected on its loss (cross-entropy)
    weighting_factor = 1.0

    def output_units(self, task) -> str:
        return BINARY_UNITS

    def check_number(self, task, x: float, where: str) -> None:
        if x not in (0.0, 1.0):
            raise DataError(where, f"{task.name}: binary label must be 0 or 1, got {x}", "invalid label value")

    def statistics(self, task, x: np.ndarray) -> tuple:
        return 0.0, 1.0

    def prediction_to_physical(self, task, model: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(model)

    def loss(self, prediction: torch.Tensor, target: torch.Tensor, loss: str, columns: dict | None = None,
             isotropic_weight: float = 1.0, anisotropic_weight: float = 1.0) -> tuple[torch.Tensor, dict]:
        return nn.functional.binary_cross_entropy_with_logits(prediction, target), {}

    def metrics(self, task) -> dict:
        from torchmetrics.classification import BinaryAccuracy

        return {"accuracy": BinaryAccuracy()}

    def update_metrics(self, task, metrics, prediction: torch.Tensor, target: torch.Tensor) -> None:
        metrics["accuracy"].update(prediction, target.long())  # prediction: the probability



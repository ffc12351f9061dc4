"""Per-task metrics in physical units (torchmetrics: reduced correctly across DDP processes).

Scalars: MAE, RMSE, R². Tensors: component MAE, Frobenius-norm error, the error of the isotropic part (mean
eigenvalue for rank 2; Voigt bulk modulus for the elastic tensor) and the component MAE of the anisotropic part (the
tensor minus its 0e projection: the traceless part of a dielectric tensor; all of a piezo tensor). Binary: accuracy.
"""

from __future__ import annotations

import warnings

import torch
from torch import nn
from torchmetrics import MeanAbsoluteError, MeanMetric, MeanSquaredError, R2Score
from torchmetrics.classification import BinaryAccuracy

from equiprop.data.precision import full_precision
from equiprop.data.tasks import TaskSpec
from equiprop.data.tensor_ops import anisotropic_part, cartesian_isotropic_scalar


class TaskMetrics(nn.Module):
    """Metrics of one task; ``update`` takes physical-unit predictions and labels of the labelled structures."""

    def __init__(self, task: TaskSpec):
        super().__init__()
        self.task = task
        if task.kind == "binary":
            self.metrics = nn.ModuleDict({"accuracy": BinaryAccuracy()})
        elif task.kind == "tensor":
            # MeanMetric's default nan_strategy ("warn": a NaN row dropped with a warning) reads isnan on the host:
            # two syncs per update, in validation and test only (training updates no metric); kept for that meaning
            self.metrics = nn.ModuleDict({"component_mae": MeanMetric(), "frobenius_error": MeanMetric(),
                                          "anisotropic_mae": MeanMetric()})
            if task.rank in (2, 4):
                self.metrics["isotropic_mae"] = MeanAbsoluteError()
        else:
            self.metrics = nn.ModuleDict({"mae": MeanAbsoluteError(), "rmse": MeanSquaredError(squared=False),
                                          "r2": R2Score()})

    @full_precision  # float32 under autocast: anisotropic parts and traces are matmuls/einsums (data.precision)
    def update(self, prediction: torch.Tensor, target: torch.Tensor) -> None:
        m = self.metrics
        if self.task.kind == "binary":
            m["accuracy"].update(torch.sigmoid(prediction), target.long())
        elif self.task.kind == "tensor":
            diff = (prediction - target).reshape(len(target), -1)
            m["component_mae"].update(diff.abs().mean(dim=1))
            m["frobenius_error"].update(diff.norm(dim=1))
            anisotropic = anisotropic_part(prediction - target, self.task.formula)  # linear: part of the difference
            m["anisotropic_mae"].update(anisotropic.reshape(len(target), -1).abs().mean(dim=1))
            if "isotropic_mae" in m:
                m["isotropic_mae"].update(cartesian_isotropic_scalar(prediction, self.task.rank),
                                          cartesian_isotropic_scalar(target, self.task.rank))
        else:
            m["mae"].update(prediction, target)
            m["rmse"].update(prediction, target)
            m["r2"].update(prediction, target)

    def compute(self) -> dict[str, torch.Tensor]:
        """Synchronised values (every process must call this: no branch on local state before the all-gather)."""
        out = {}
        for name, metric in self.metrics.items():
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # "compute before update" on a process that saw no label
                try:
                    value = metric.compute()
                except ValueError:  # e.g. R² of fewer than two samples
                    continue
            if torch.isfinite(value):
                out[name] = value
        return out

    def reset(self) -> None:
        for metric in self.metrics.values():
            metric.reset()

"""Per-task metrics in physical units (torchmetrics: reduced correctly across DDP processes).

Scalars: MAE, RMSE, R². Tensors: component MAE, Frobenius-norm error, the error of the isotropic part (mean
eigenvalue for rank 2; Voigt bulk modulus for the elastic tensor) and the component MAE of the anisotropic part (the
tensor minus its 0e projection: the traceless part of a dielectric tensor; all of a piezo tensor). Binary: accuracy.
"""

from __future__ import annotations

import warnings

import torch
from torch import nn

from equiprop.data.precision import full_precision
from equiprop.data.tasks import TaskSpec


class TaskMetrics(nn.Module):
    """Metrics of one task (its kind's: ``TaskKind.metrics``); ``update`` takes physical-unit predictions and labels
    of the labelled structures (a binary task's: probabilities and 0/1)."""

    def __init__(self, task: TaskSpec):
        super().__init__()
        self.task = task
        self.metrics = nn.ModuleDict(task.kind_def.metrics(task))

    @full_precision  # float32 under autocast: anisotropic parts and traces are matmuls/einsums (data.precision)
    def update(self, prediction: torch.Tensor, target: torch.Tensor) -> None:
        self.task.kind_def.update_metrics(self.task, self.metrics, prediction, target)

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

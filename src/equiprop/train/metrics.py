"""Per-task metrics in physical units (torchmetrics: reduced correctly across DDP processes).

Scalars: MAE, RMSE, R². Tensors: component MAE, Frobenius-norm error, the error of the isotropic part (mean
eigenvalue for rank 2; Voigt bulk modulus for the elastic tensor) and the component MAE of the anisotropic part (the
tensor minus its 0e projection: the traceless part of a dielectric tensor; all of a piezo tensor). Binary: accuracy.
"""

from __future__ import annotations

import warnings

import torch
from torch import nn

from equiprop.data import keys
from equiprop.data.graph import atoms_per_graph
from equiprop.data.precision import autocast_off, full_precision
from equiprop.data.tasks import TaskSpec
from equiprop.data.tensor_ops import voigt_bulk_modulus, voigt_shear_modulus

# derived metric -> (tensor task it is computed from, scalar task it is compared with, function)
DERIVED = {"K_Voigt": ("elastic_tensor", "K_VRH", voigt_bulk_modulus),
           "G_Voigt": ("elastic_tensor", "G_VRH", voigt_shear_modulus)}


def labelled_rows(mask: torch.Tensor, count: int) -> torch.Tensor:
    """(count,) indices of the True rows of ``mask``, its count known on the host: the rows ``tensor[mask]`` selects,
    in the same order (same values and gradients), without the device->host sync a bool mask costs."""
    return torch.nonzero_static(mask, size=count).squeeze(1)


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


class DerivedMetrics(nn.Module):
    """MAE of the moduli derived from a predicted tensor (the Voigt K and G of the elastic tensor) against the labels
    of a scalar task (K_VRH, G_VRH, log_scalar), where the model has both (``DERIVED``)."""

    def __init__(self, tasks: dict[str, TaskSpec]):
        super().__init__()
        from torchmetrics import MeanAbsoluteError

        self.metrics = nn.ModuleDict({name: MeanAbsoluteError() for name, (source, reference, _) in DERIVED.items()
                                      if source in tasks and reference in tasks})

    def update(self, prediction_of, normalizer, batch, counts: dict[str, int]) -> None:
        """``prediction_of(task)``: the normalised prediction of a task on ``batch`` (num_graphs, ...); ``counts``:
        labels per task in it."""
        for name, metric in self.metrics.items():
            source, reference, modulus = DERIVED[name]
            if counts[reference] == 0:
                continue
            labelled = labelled_rows(batch[keys.mask_key(reference)], counts[reference])
            tensor = prediction_of(source)[labelled]
            with autocast_off():  # Voigt moduli are einsums: float32 (data.precision)
                value = modulus(normalizer.to_physical(source, tensor, atoms_per_graph(batch)[labelled]))
            metric.update(value, torch.pow(10.0, batch[keys.label_key(reference)][labelled]))

    def compute(self) -> dict[str, torch.Tensor]:
        """{"K_VRH/K_Voigt_from_elastic_tensor_mae": value, ...} of the metrics updated (all of them under DDP,
        where every process must join the reduction), then reset."""
        out = {}
        for name, metric in self.metrics.items():
            source, reference, _ = DERIVED[name]
            if metric.update_called or torch.distributed.is_initialized():
                out[f"{reference}/{name}_from_{source}_mae"] = metric.compute()
            metric.reset()
        return out

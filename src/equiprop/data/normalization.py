"""Per-task normalisation statistics, computed on the training split only and stored with the model.

Scalars: mean and standard deviation of the model-space label. Tensors: the shift is the rotation-invariant (0e)
part of the mean tensor, and the scale one RMS over components, so normalisation commutes with rotations. Binary
tasks are not normalised.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from equiprop.data import keys
from equiprop.data.tasks import TaskSpec, change_of_basis


@dataclass
class TaskStats:
    shift: list  # model-space shift: a float for scalars, a nested (3,)*rank list for tensors
    scale: float  # model-space scale (> 0)
    count: int  # training labels the statistics come from

    def to_dict(self) -> dict:
        return {"shift": self.shift, "scale": self.scale, "count": self.count}


def invariant_part(t: np.ndarray, task: TaskSpec) -> np.ndarray:
    """Projection of a Cartesian tensor onto its 0e (rotation-invariant) irreps."""
    q = change_of_basis(task.formula)  # (irreps dim, 3^rank)
    invariant = np.concatenate([np.full(mul * ir.dim, ir.l == 0) for mul, ir in task.cartesian_tensor])
    irreps = q @ np.asarray(t, dtype=np.float64).reshape(-1)
    return (q.T @ (irreps * invariant)).reshape(np.shape(t))


def compute_stats(labels: torch.Tensor, task: TaskSpec) -> TaskStats:
    """Statistics of one task from its labelled training values, shape (num_labels, *task.model_shape)."""
    x = labels.double().numpy()
    n = len(x)
    if task.kind == "binary" or n == 0:
        return TaskStats(shift=np.zeros(task.model_shape).tolist(), scale=1.0, count=n)
    if task.kind != "tensor":
        scale = float(x.std()) if n > 1 else 1.0
        return TaskStats(shift=float(x.mean()), scale=scale if scale > 1e-12 else 1.0, count=n)
    shift = invariant_part(x.mean(axis=0), task)
    scale = float(np.sqrt(((x - shift) ** 2).mean()))
    return TaskStats(shift=shift.tolist(), scale=scale if scale > 1e-12 else 1.0, count=n)


def stats_from_dataset(dataset, tasks: dict[str, TaskSpec]) -> dict[str, TaskStats]:
    """Statistics of every task over the structures of ``dataset`` (a GraphDataset, or an index_select of one)."""
    rows = torch.as_tensor(list(dataset.indices()), dtype=torch.long)  # graph-level keys hold one row per graph
    out = {}
    for name, task in tasks.items():
        y = dataset._data[keys.label_key(name)][rows]
        mask = dataset._data[keys.mask_key(name)][rows]
        out[name] = compute_stats(y[mask], task)
    return out

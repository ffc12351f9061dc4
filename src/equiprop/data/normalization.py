"""Per-task normalisation statistics, computed on the training split only and stored with the model.

Scalars: mean and standard deviation of the model-space label. Tensors are normalised in their irreps (e3nn
``CartesianTensor`` basis), one robust statistic per irrep copy: each 0e component is shifted by its median and scaled
by its median absolute deviation (x1.4826, the standard deviation of a normal distribution), each l>0 block is scaled
by its mean norm per component, sqrt(dim) (no shift: a nonzero mean would single out a direction; a mean, not a
median, because most crystals have none of a given anisotropy by symmetry, which would make a median scale ~0 and blow
up the rest).
One RMS over all components, as before, let the heavy tail (eps_inf up to 257) set the scale of every part: the
traceless part of a typical crystal became invisible to the loss. Per-copy scalars commute with rotations. Binary
tasks are not normalised.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from equiprop.data.tasks import TaskSpec
from equiprop.data.tensor_ops import change_of_basis


@dataclass
class TaskStats:
    shift: float | list  # model-space shift: a float for scalars, one value per irreps component for tensors
    scale: float | list  # model-space scale (> 0): a float for scalars, one value per irreps component for tensors
    count: int  # training labels the statistics come from

    def to_dict(self) -> dict:
        return {"shift": self.shift, "scale": self.scale, "count": self.count}


def compute_stats(labels: torch.Tensor, task: TaskSpec, num_atoms: torch.Tensor | None = None) -> TaskStats:
    """Statistics of one task from its labelled training values, shape (num_labels, *task.model_shape); those of
    label / atoms for a sum-pooled (extensive) task, whose normaliser shifts each structure by atoms x shift."""
    x = labels.double().numpy()
    if task.pooling == "sum" and task.kind != "binary":
        if num_atoms is None:
            raise ValueError(f"task {task.name!r} is sum-pooled: its statistics are per atom and need num_atoms")
        x = x / num_atoms.double().numpy().reshape(-1, *([1] * (x.ndim - 1)))
    n = len(x)
    if task.kind == "tensor":
        return _tensor_stats(x, task)
    if task.kind == "binary" or n == 0:
        return TaskStats(shift=0.0, scale=1.0, count=n)
    scale = float(x.std()) if n > 1 else 1.0
    return TaskStats(shift=float(x.mean()), scale=scale if scale > 1e-12 else 1.0, count=n)


def _tensor_stats(x: np.ndarray, task: TaskSpec) -> TaskStats:
    q = change_of_basis(task.formula)  # (irreps dim, 3^rank)
    dim = q.shape[0]
    shift, scale = np.zeros(dim), np.ones(dim)
    if len(x) == 0:
        return TaskStats(shift=shift.tolist(), scale=scale.tolist(), count=0)
    irreps = x.reshape(len(x), -1) @ q.T  # (n, irreps dim)
    start = 0
    for mul, ir in task.cartesian_tensor:
        for _ in range(mul):
            block = irreps[:, start:start + ir.dim]
            if ir.l == 0:
                shift[start] = np.median(block)
                spread = 1.4826 * np.median(np.abs(block - shift[start]))
                fallback = block.std()
            else:  # mean, not median: most crystals have no anisotropy at all (cubic), a median would be ~0
                spread = np.linalg.norm(block, axis=1).mean() / np.sqrt(ir.dim)
                fallback = np.sqrt((block**2).mean())
            scale[start:start + ir.dim] = next((s for s in (spread, fallback) if s > 1e-12), 1.0)
            start += ir.dim
    return TaskStats(shift=shift.tolist(), scale=scale.tolist(), count=len(x))



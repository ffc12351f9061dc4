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

import torch

from equiprop.data.tasks import TaskSpec


@dataclass
class TaskStats:
    shift: float | list  # model-space shift: a float for scalars, one value per irreps component for tensors
    scale: float | list  # model-space scale (> 0): a float for scalars, one value per irreps component for tensors
    count: int  # training labels the statistics come from

    def to_dict(self) -> dict:
        return {"shift": self.shift, "scale": self.scale, "count": self.count}


def compute_stats(labels: torch.Tensor, task: TaskSpec, num_atoms: torch.Tensor | None = None) -> TaskStats:
    """Statistics of one task from its labelled training values, shape (num_labels, *task.model_shape); those of
    label / atoms for a sum-pooled (extensive) task, whose normaliser shifts each structure by atoms x shift. What
    they are is the task's kind's (``TaskKind.statistics``)."""
    x = labels.double().numpy()
    if task.pooling == "sum" and task.kind_def.normalised:
        if num_atoms is None:
            raise ValueError(f"task {task.name!r} is sum-pooled: its statistics are per atom and need num_atoms")
        x = x / num_atoms.double().numpy().reshape(-1, *([1] * (x.ndim - 1)))
    shift, scale = task.kind_def.statistics(task, x)
    return TaskStats(shift=shift, scale=scale, count=len(x))

"""Per-task shift and scale as module buffers, so they travel inside every checkpoint with the weights.

Sum-pooled (extensive) tasks are normalised per atom, as in nequip: the statistics are those of label / atoms, and a
structure of n atoms gets ``scale * sum_i out_i + n * shift``, so a 2x supercell's prediction is exactly twice its
cell's. The methods take ``num_atoms`` ((n,) atoms per structure) for them.

Scalars are normalised as numbers. Tensors are normalised in their irreps: the readouts predict normalised irreps
coefficients (num_graphs, irreps dim), and the normaliser maps them to Cartesian model space and to physical units
(through the task's parametrization: ``I + expm(L)`` / ``expm(L)`` for "spd_log").
"""

from __future__ import annotations

import torch
from torch import nn

from equiprop.data.precision import full_precision
from equiprop.data.tasks import TaskSpec


class TaskNormalizer(nn.Module):
    """model space <-> normalised space: y_norm = (y - shift) / scale (tensors: per irreps component)."""

    def __init__(self, tasks: dict[str, TaskSpec]):
        super().__init__()
        self.tasks = tasks
        self.bases = set()  # tasks normalised in a basis of their own (tensors: their irreps)
        for name, task in tasks.items():
            basis = task.kind_def.basis(task)
            if basis is not None:
                self.bases.add(name)
                # float64 whatever the model's dtype (cast where used): a float32 copy would cap float64 checks at 1e-7
                basis = torch.as_tensor(basis, dtype=torch.float64)
                self.register_buffer(f"basis_{name}", basis, persistent=False)  # (irreps dim, 3^rank), orthonormal
                self.register_buffer(f"shift_{name}", torch.zeros(len(basis)))
                self.register_buffer(f"scale_{name}", torch.ones(len(basis)))
            else:
                self.register_buffer(f"shift_{name}", torch.zeros(()))
                self.register_buffer(f"scale_{name}", torch.ones(()))

    def set_stats(self, stats: dict) -> None:
        """From ``MultiTaskDataModule.normalization`` (TaskStats per task)."""
        for name in self.tasks:
            if name in stats:
                getattr(self, f"shift_{name}").copy_(torch.as_tensor(stats[name].shift))
                getattr(self, f"scale_{name}").copy_(torch.as_tensor(stats[name].scale))

    def _shift(self, name: str, num_atoms: torch.Tensor | None) -> torch.Tensor:
        """The shift of each structure: per atom times its atoms for a sum-pooled task, else the shift itself."""
        shift = getattr(self, f"shift_{name}")
        if self.tasks[name].pooling != "sum":
            return shift
        if num_atoms is None:
            raise ValueError(f"task {name!r} is sum-pooled (extensive): its normalisation needs num_atoms")
        n = num_atoms.to(shift.dtype)
        return n[:, None] * shift if shift.ndim else n * shift

    @full_precision  # float32 under autocast: basis changes (matmuls) and matrix exponentials (data.precision)
    def normalise(self, name: str, y: torch.Tensor, num_atoms: torch.Tensor | None = None) -> torch.Tensor:
        """Model-space labels -> normalised: (n,) for scalars, (n, irreps dim) for (n, *cartesian shape) tensors."""
        if not self.tasks[name].kind_def.normalised:
            return y
        if name in self.bases:
            y = y.flatten(1) @ getattr(self, f"basis_{name}").T.to(y.dtype)
        return (y - self._shift(name, num_atoms)) / getattr(self, f"scale_{name}")

    @full_precision
    def to_model(self, name: str, y_norm: torch.Tensor, num_atoms: torch.Tensor | None = None) -> torch.Tensor:
        """Normalised -> model space (tensors: Cartesian, (n, *task.model_shape))."""
        task = self.tasks[name]
        if not task.kind_def.normalised:
            return y_norm
        model = y_norm * getattr(self, f"scale_{name}") + self._shift(name, num_atoms)
        if name in self.bases:
            model = (model @ getattr(self, f"basis_{name}").to(model.dtype)).reshape(len(model), *task.model_shape)
        return model

    @full_precision
    def model_to_physical(self, name: str, model: torch.Tensor) -> torch.Tensor:
        """Model space -> physical units: 10**x for log-scalars, the exponential map for "spd_log" tensors (the
        task's kind, ``TaskKind.model_to_physical``)."""
        task = self.tasks[name]
        return task.kind_def.model_to_physical(task, model)

    @full_precision  # the kind's map to physical units (matrix exponentials) in float32 under autocast
    def to_physical(self, name: str, y_norm: torch.Tensor, num_atoms: torch.Tensor | None = None) -> torch.Tensor:
        """Physical units: 10**x for log-scalars; probability for binary tasks; Cartesian tensors."""
        task = self.tasks[name]
        return task.kind_def.prediction_to_physical(task, self.to_model(name, y_norm, num_atoms))

"""Per-task shift and scale as module buffers, so they travel inside every checkpoint with the weights.

Scalars are normalised as numbers. Tensors are normalised in their irreps: the readouts predict normalised irreps
coefficients (num_graphs, irreps dim), and the normaliser maps them to Cartesian model space and to physical units
(through the task's parametrization: ``I + expm(L)`` / ``expm(L)`` for "spd_log").
"""

from __future__ import annotations

import torch
from torch import nn

from equiprop.data.tasks import TaskSpec, change_of_basis
from equiprop.data.tensor_ops import spd_exp_torch


class TaskNormalizer(nn.Module):
    """model space <-> normalised space: y_norm = (y - shift) / scale (tensors: per irreps component)."""

    def __init__(self, tasks: dict[str, TaskSpec]):
        super().__init__()
        self.tasks = tasks
        for name, task in tasks.items():
            if task.kind == "tensor":
                # float64 whatever the model's dtype (cast where used): a float32 copy would cap float64 checks at 1e-7
                basis = torch.as_tensor(change_of_basis(task.formula), dtype=torch.float64)
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

    def normalise(self, name: str, y: torch.Tensor) -> torch.Tensor:
        """Model-space labels -> normalised: (n,) for scalars, (n, irreps dim) for (n, *cartesian shape) tensors."""
        task = self.tasks[name]
        if task.kind == "binary":
            return y
        if task.kind == "tensor":
            y = y.flatten(1) @ getattr(self, f"basis_{name}").T.to(y.dtype)
        return (y - getattr(self, f"shift_{name}")) / getattr(self, f"scale_{name}")

    def to_model(self, name: str, y_norm: torch.Tensor) -> torch.Tensor:
        """Normalised -> model space (tensors: Cartesian, (n, *task.model_shape))."""
        task = self.tasks[name]
        if task.kind == "binary":
            return y_norm
        model = y_norm * getattr(self, f"scale_{name}") + getattr(self, f"shift_{name}")
        if task.kind == "tensor":
            model = (model @ getattr(self, f"basis_{name}").to(model.dtype)).reshape(len(model), *task.model_shape)
        return model

    def model_to_physical(self, name: str, model: torch.Tensor) -> torch.Tensor:
        """Model space -> physical units: 10**x for log-scalars, the exponential map for "spd_log" tensors."""
        task = self.tasks[name]
        if task.kind == "log_scalar":
            return torch.pow(10.0, model)
        if task.parametrization == "spd_log":
            return spd_exp_torch(model, task.rank)
        return model

    def to_physical(self, name: str, y_norm: torch.Tensor) -> torch.Tensor:
        """Physical units: 10**x for log-scalars; probability for binary tasks; Cartesian tensors."""
        if self.tasks[name].kind == "binary":
            return torch.sigmoid(y_norm)
        return self.model_to_physical(name, self.to_model(name, y_norm))

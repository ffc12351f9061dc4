"""Per-task shift and scale as module buffers, so they travel inside every checkpoint with the weights."""

from __future__ import annotations

import torch
from torch import nn

from equiprop.data.tasks import TaskSpec


class TaskNormalizer(nn.Module):
    """model space <-> normalised space: y_norm = (y - shift) / scale; physical = task.from_model(model)."""

    def __init__(self, tasks: dict[str, TaskSpec]):
        super().__init__()
        self.tasks = tasks
        for name, task in tasks.items():
            self.register_buffer(f"shift_{name}", torch.zeros(task.model_shape))
            self.register_buffer(f"scale_{name}", torch.ones(()))

    def set_stats(self, stats: dict) -> None:
        """From ``MultiTaskDataModule.normalization`` (TaskStats per task)."""
        for name in self.tasks:
            if name in stats:
                getattr(self, f"shift_{name}").copy_(torch.as_tensor(stats[name].shift))
                getattr(self, f"scale_{name}").fill_(float(stats[name].scale))

    def normalise(self, name: str, y: torch.Tensor) -> torch.Tensor:
        if self.tasks[name].kind == "binary":
            return y
        return (y - getattr(self, f"shift_{name}")) / getattr(self, f"scale_{name}")

    def to_model(self, name: str, y_norm: torch.Tensor) -> torch.Tensor:
        if self.tasks[name].kind == "binary":
            return y_norm
        return y_norm * getattr(self, f"scale_{name}") + getattr(self, f"shift_{name}")

    def to_physical(self, name: str, y_norm: torch.Tensor) -> torch.Tensor:
        """Physical units: 10**x for log-scalars; probability for binary tasks."""
        task = self.tasks[name]
        if task.kind == "binary":
            return torch.sigmoid(y_norm)
        model = self.to_model(name, y_norm)
        return torch.pow(10.0, model) if task.kind == "log_scalar" else model

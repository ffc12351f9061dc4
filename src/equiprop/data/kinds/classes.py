"""The ``class`` kind: a label that is one of a task's named ``classes`` (a crystal system, a magnetic ordering, a
structure type). Learned as one logit per class (a scalar readout with as many outputs), cross-entropy, accuracy;
written as the probability of each class, in the order of ``classes``.

    data:
      tasks:
        - {name: crystal_system, key: crystal_system, units: class, kind: class,
           classes: [triclinic, monoclinic, orthorhombic, tetragonal, trigonal, hexagonal, cubic]}

A label is a class name (as listed) or its index (0, 1, ...); anything else is refused, naming the entry.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from equiprop.data.errors import ConfigError, DataError
from equiprop.data.kinds.base import TaskKind


class ClassKind(TaskKind):
    name = "class"
    has_error_in_units = False  # an error in units has no meaning for a class
    normalised = False  # model space: the class index for labels, logits for predictions
    error_metric = None  # selected on its loss (cross-entropy)
    weighting_factor = 1.0  # a classifier's likelihood (Kendall, Gal & Cipolla)

    def check(self, task) -> None:
        super().check(task)
        classes = task.classes or ()
        if len(classes) < 2 or len(set(classes)) != len(classes):
            raise ConfigError(f"task {task.name!r}: kind 'class' needs a list of at least two distinct classes, "
                              f"got {list(classes)}")
        if task.pooling != "mean":
            raise ConfigError(f"task {task.name!r}: class logits are mean-pooled, got pooling {task.pooling!r}")

    def outputs(self, task) -> int:
        return len(task.classes)

    def output_units(self, task) -> str:
        return "probability of each class: " + ", ".join(task.classes)

    def parse_value(self, task, value, where: str):
        """The class index (a float, as labels are stored) of a class name or an index."""
        if isinstance(value, str):
            name = value.strip()
            if name in task.classes:
                return float(task.classes.index(name))
            if not name.lstrip("-").isdigit():
                raise DataError(where, f"{task.name}: unknown class {name[:40]!r} (classes: "
                                       f"{', '.join(task.classes)})", "unknown class")
            value = int(name)
        try:
            index = float(value)
        except (TypeError, ValueError):
            raise DataError(where, f"{task.name}: expected a class name or index, got {str(value)[:40]!r}",
                            "invalid label value") from None
        if not index.is_integer() or not 0 <= index < len(task.classes):
            raise DataError(where, f"{task.name}: class index {value} outside 0..{len(task.classes) - 1}",
                            "unknown class")
        return index

    def statistics(self, task, x: np.ndarray) -> tuple:
        return 0.0, 1.0

    def prediction_to_physical(self, task, model: torch.Tensor) -> torch.Tensor:
        return torch.softmax(model, dim=-1)  # (n, classes) logits -> probabilities

    def loss(self, prediction: torch.Tensor, target: torch.Tensor, loss: str, columns: dict | None = None,
             isotropic_weight: float = 1.0, anisotropic_weight: float = 1.0) -> tuple[torch.Tensor, dict]:
        return nn.functional.cross_entropy(prediction, target.long()), {}

    def metrics(self, task) -> dict:
        from torchmetrics.classification import MulticlassAccuracy

        return {"accuracy": MulticlassAccuracy(num_classes=len(task.classes), average="micro")}

    def update_metrics(self, task, metrics, prediction: torch.Tensor, target: torch.Tensor) -> None:
        metrics["accuracy"].update(prediction, target.long())  # prediction: (n, classes) probabilities

"""What each kind of task means, one file per kind: its labels, irreps, model space, normalisation, loss, metrics and
written units. ``TaskSpec.kind`` names one of ``KINDS``; everything downstream asks the kind object
(``TaskSpec.kind_def``), never compares the name.

- ``scalar``: a number, model space = the label, normalised by mean and standard deviation, regression loss, MAE.
- ``log_scalar``: a positive number learned as log10 of it (moduli spanning decades), MAE in the label's units.
- ``binary``: a 0/1 class, learned as a logit (not normalised), cross-entropy, accuracy; written as a probability.
- ``tensor``: a Cartesian tensor (``tensor.py``), learned as its irreps.
- ``class``: one of a task's named ``classes`` (``classes.py``), learned as logits; written as the probability of
  each class.

A new kind is one file here with a ``TaskKind`` subclass (``base.py``), one line below, and its test (see
``docs/architecture.md``, "Adding things"); a kind of your own, outside the package: ``register_kind(MyKind())``
before the tasks are built.
"""

from __future__ import annotations

from equiprop.data.errors import ConfigError
from equiprop.data.kinds.base import REGRESSION_LOSSES, TaskKind
from equiprop.data.kinds.classes import ClassKind
from equiprop.data.kinds.numbers import BinaryKind, LogScalarKind, ScalarKind
from equiprop.data.kinds.tensor import TensorKind, tensor_part_columns, tensor_task_loss

KINDS: dict[str, TaskKind] = {}

__all__ = ["KINDS", "TaskKind", "register_kind", "kind_of", "REGRESSION_LOSSES", "tensor_part_columns",
           "tensor_task_loss"]


def register_kind(kind: TaskKind) -> TaskKind:
    """Make ``kind`` available to task definitions by its name (``kind: NAME`` in a recipe's ``data.tasks``)."""
    if not kind.name:
        raise ValueError("a task kind needs a name")
    KINDS[kind.name] = kind
    return kind


for _kind in (ScalarKind(), LogScalarKind(), BinaryKind(), TensorKind(), ClassKind()):
    register_kind(_kind)


def kind_of(name: str, task_name: str = "?") -> TaskKind:
    try:
        return KINDS[name]
    except KeyError:
        raise ConfigError(f"task {task_name!r}: kind must be one of {tuple(KINDS)}, got {name!r}") from None

"""What each kind of task means, one file per kind: its labels, irreps, model space, normalisation, loss, metrics and
written units. ``TaskSpec.kind`` names one of ``KINDS``; everything downstream asks the kind object
(``TaskSpec.kind_def``), never compares the name.

- ``scalar``: a number, model space = the label, normalised by mean and standard deviation, regression loss, MAE.
- ``log_scalar``: a positive number learned as log10 of it (moduli spanning decades), MAE in the label's units.
- ``binary``: a 0/1 class, learned as a logit (not normalised), cross-entropy, accuracy; written as a probability.
- ``tensor``: a Cartesian tensor (``tensor.py``), learned as its irreps.
- ``class``: one of a task's named ``classes`` (``classes.py``), learned as logits; written as the probability of
  each class.
- ``pseudoscalar``: a number that flips sign under inversion, 1x0o (``pseudoscalar.py``): a handedness, an optical
  rotatory power; normalised by its RMS with no shift (a shift would break parity); predicted from the 0o features
  of an O(3) encoder (an invariant one cannot tell a crystal from its mirror image).
- ``forces`` / ``stress``: the derivatives of an energy task by autograd (``gradients.py``), conservative by
  construction; labels and losses as tensors.

A new kind is one file here with a ``TaskKind`` subclass (``base.py``), one line below, and its test (see
``docs/architecture.md``, "Adding things"); a kind of your own, outside the package: ``register_kind(MyKind())``
before the tasks are built.
"""

from __future__ import annotations

from equiprop.data.errors import ConfigError
from equiprop.data.kinds.base import REGRESSION_LOSSES, TaskKind
from equiprop.data.kinds.classes import ClassKind
from equiprop.data.kinds.numbers import BinaryKind, LogScalarKind, ScalarKind
from equiprop.data.kinds.pseudoscalar import PseudoscalarKind
from equiprop.data.kinds.gradients import ForcesKind, StressKind
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


for _kind in (ScalarKind(), LogScalarKind(), BinaryKind(), TensorKind(), ClassKind(), PseudoscalarKind()):
    register_kind(_kind)
register_kind(ForcesKind())  # derivatives of an energy task by autograd
register_kind(StressKind())


def kind_of(name: str, task_name: str = "?") -> TaskKind:
    try:
        return KINDS[name]
    except KeyError:
        raise ConfigError(f"task {task_name!r}: kind must be one of {tuple(KINDS)}, got {name!r}") from None

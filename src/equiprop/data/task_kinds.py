"""What each kind of task means, in one place: its labels, irreps, model space, normalisation, loss, metrics and
written units. ``TaskSpec.kind`` names one of ``KINDS``; everything downstream asks the kind object
(``TaskSpec.kind_def``), never compares the name.

A new kind is one subclass here (or in your own module) registered with ``register_kind``, and its test: see
``docs/architecture.md`` ("Adding things"). The four built in:

- ``scalar``: a number, model space = the label, normalised by mean and standard deviation, regression loss, MAE.
- ``log_scalar``: a positive number learned as log10 of it (moduli spanning decades), MAE in the label's units.
- ``binary``: a 0/1 class, learned as a logit (not normalised), cross-entropy, accuracy; written as a probability.
- ``tensor``: a Cartesian tensor of an e3nn ``CartesianTensor`` formula ("ij=ji", "ijkl=jikl=klij", "ijk=ikj",
  "i" for a polar vector), learned as its irreps, normalised per irrep copy, loss split into its isotropic and
  anisotropic parts; "spd_log" tensors learned as a matrix logarithm (positive definite by construction).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from equiprop.data.errors import ConfigError, DataError
from equiprop.data.tensor_ops import PARAMETRIZATIONS, anisotropic_part, cartesian_isotropic_scalar, \
    cartesian_tensor, change_of_basis, invariant_mask, smallest_eigenvalue, spd_exp, spd_exp_torch, spd_log

REGRESSION_LOSSES = {
    "mae": nn.functional.l1_loss,
    "mse": nn.functional.mse_loss,
    "huber": nn.functional.huber_loss,
}
BINARY_UNITS = "probability"  # what a binary task's output is: the predicted probability of class 1


class TaskKind:
    """The meaning of a kind of task. Methods take the task (``TaskSpec``) where its fields matter."""

    name = ""
    has_error_in_units = True  # False: the output is a probability, with no error in the label's units
    normalised = True  # False: model space is what the head predicts (a logit), no shift or scale
    error_metric: str | None = "mae"  # the error in the label's units a selection or a curve reads; None: none
    readout = "scalar"  # the head: "scalar" (one invariant number) or "tensor" (the irreps of ``basis``)
    weighting_factor = 0.5  # Kendall, Gal & Cipolla: 1/2 for a Gaussian likelihood, 1 for a classifier

    def check(self, task) -> None:
        """Raise ConfigError for fields this kind cannot take."""
        if task.parametrization != "linear":
            raise ConfigError(f"task {task.name!r}: parametrization {task.parametrization!r} is for tensors")

    def rank(self, task) -> int:
        return 0

    def model_units(self, task) -> str:
        return task.units

    def output_units(self, task) -> str:
        return task.units

    def basis(self, task) -> np.ndarray | None:
        """(irreps dim, 3^rank) change of basis the normaliser works in; None: the value itself."""
        return None

    # -- labels (numpy, physical units) --------------------------------------------------------------------------
    def parse_value(self, task, value, where: str):
        """One label (one structure's, or one atom's) in physical units; None if missing; DataError if invalid."""
        try:
            x = float(value)
        except (TypeError, ValueError):
            raise DataError(where, f"{task.name}: expected a number, got {str(value)[:40]!r}",
                            "invalid label value") from None
        if not math.isfinite(x):
            return None  # "inf", "-Infinity", ... are missing values, like NaN
        self.check_number(task, x, where)
        task.check_range(np.asarray([x]), where)
        return x

    def check_number(self, task, x: float, where: str) -> None:
        pass

    def to_model(self, task, x: np.ndarray) -> np.ndarray:
        return x

    def from_model(self, task, x: np.ndarray) -> np.ndarray:
        return x

    def statistics(self, task, x: np.ndarray) -> tuple:
        """(shift, scale) of model-space training labels ``x``, (n, *model_shape): what the normaliser applies."""
        n = len(x)
        if n == 0:
            return 0.0, 1.0
        scale = float(x.std()) if n > 1 else 1.0
        return float(x.mean()), scale if scale > 1e-12 else 1.0

    # -- model side (torch) --------------------------------------------------------------------------------------
    def model_to_physical(self, task, model: torch.Tensor) -> torch.Tensor:
        """Model space -> physical units, for labels and de-normalised predictions alike."""
        return model

    def prediction_to_physical(self, task, model: torch.Tensor) -> torch.Tensor:
        """A prediction in model space -> what is written (a binary's logit -> probability)."""
        return self.model_to_physical(task, model)

    def loss_columns(self, task) -> dict[str, torch.Tensor]:
        """{part: (k,) columns of the normalised prediction} of the parts its loss is split into; {}: one loss."""
        return {}

    def loss(self, prediction: torch.Tensor, target: torch.Tensor, loss: str, columns: dict | None = None,
             isotropic_weight: float = 1.0, anisotropic_weight: float = 1.0) -> tuple[torch.Tensor, dict]:
        """(loss, {part: loss}) over the labelled rows in normalised space (prediction/target: (num_labelled,
        *shape)); ``loss``: "mae", "mse" or "huber" (regression kinds); ``columns``: ``loss_columns``."""
        return REGRESSION_LOSSES[loss](prediction, target), {}

    def metrics(self, task) -> dict:
        """Fresh torchmetrics of one task, by name (physical units; reduced across DDP processes)."""
        from torchmetrics import MeanAbsoluteError, MeanSquaredError, R2Score

        return {"mae": MeanAbsoluteError(), "rmse": MeanSquaredError(squared=False), "r2": R2Score()}

    def update_metrics(self, task, metrics, prediction: torch.Tensor, target: torch.Tensor) -> None:
        """Physical-unit predictions and labels of the labelled rows."""
        for name in ("mae", "rmse", "r2"):
            metrics[name].update(prediction, target)


class ScalarKind(TaskKind):
    name = "scalar"


class LogScalarKind(TaskKind):
    name = "log_scalar"

    def check(self, task) -> None:
        super().check(task)
        if task.pooling == "sum":
            raise ConfigError(f"task {task.name!r}: a sum-pooled (extensive) task must be additive over atoms; "
                              f"kind {self.name!r} lives in log space")

    def model_units(self, task) -> str:
        return f"log10({task.units})"

    def check_number(self, task, x: float, where: str) -> None:
        if x <= 0:
            raise DataError(where, f"{task.name}: log-scalar label must be > 0 {task.units}, got {x}",
                            "invalid label value")

    def to_model(self, task, x: np.ndarray) -> np.ndarray:
        return np.log10(x)

    def from_model(self, task, x: np.ndarray) -> np.ndarray:
        return np.power(10.0, x)

    def model_to_physical(self, task, model: torch.Tensor) -> torch.Tensor:
        return torch.pow(10.0, model)


class BinaryKind(TaskKind):
    name = "binary"
    has_error_in_units = False
    normalised = False
    error_metric = None  # a probability: selected on its loss (cross-entropy)
    weighting_factor = 1.0

    def output_units(self, task) -> str:
        return BINARY_UNITS

    def check_number(self, task, x: float, where: str) -> None:
        if x not in (0.0, 1.0):
            raise DataError(where, f"{task.name}: binary label must be 0 or 1, got {x}", "invalid label value")

    def statistics(self, task, x: np.ndarray) -> tuple:
        return 0.0, 1.0

    def prediction_to_physical(self, task, model: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(model)

    def loss(self, prediction: torch.Tensor, target: torch.Tensor, loss: str, columns: dict | None = None,
             isotropic_weight: float = 1.0, anisotropic_weight: float = 1.0) -> tuple[torch.Tensor, dict]:
        return nn.functional.binary_cross_entropy_with_logits(prediction, target), {}

    def metrics(self, task) -> dict:
        from torchmetrics.classification import BinaryAccuracy

        return {"accuracy": BinaryAccuracy()}

    def update_metrics(self, task, metrics, prediction: torch.Tensor, target: torch.Tensor) -> None:
        metrics["accuracy"].update(prediction, target.long())  # prediction: the probability


class TensorKind(TaskKind):
    name = "tensor"
    error_metric = "component_mae"  # per Cartesian component
    readout = "tensor"

    def check(self, task) -> None:
        if not task.formula:
            raise ConfigError(f"task {task.name!r}: a tensor task needs a CartesianTensor formula such as 'ij=ji'")
        if task.parametrization not in PARAMETRIZATIONS:
            raise ConfigError(f"task {task.name!r}: parametrization must be 'linear' or 'spd_log', "
                              f"got {task.parametrization!r}")
        if task.parametrization == "spd_log" and task.formula not in ("ij=ji", "ijkl=jikl=klij"):
            raise ConfigError(f"task {task.name!r}: parametrization 'spd_log' needs a symmetric rank-2 ('ij=ji') or "
                              f"elastic ('ijkl=jikl=klij') tensor, got formula {task.formula!r}")
        if task.pooling == "sum" and task.parametrization == "spd_log":
            raise ConfigError(f"task {task.name!r}: a sum-pooled (extensive) task must be additive over atoms; "
                              f"parametrization {task.parametrization!r} lives in log space")
        if task.pooling == "max":
            raise ConfigError(f"task {task.name!r}: a tensor cannot be max-pooled (not equivariant); use mean or sum")

    def rank(self, task) -> int:
        return len(task.formula.split("=")[0])

    def basis(self, task) -> np.ndarray:
        return change_of_basis(task.formula)

    def parse_value(self, task, value, where: str):
        try:
            arr = np.asarray(value, dtype=np.float64)
        except (TypeError, ValueError):
            raise DataError(where, f"{task.name}: tensor label is not a numeric array", "invalid label value") \
                from None
        if not np.isfinite(arr).all():
            return None  # a tensor with NaN entries is a missing label, counted as such by the caller
        arr = task.symmetrize(task.to_cartesian(arr, where), where)
        task.check_range(arr, where)
        if task.parametrization == "spd_log":
            floor = 1.0 if task.rank == 2 else 0.0  # eps - I, or the Mandel stiffness, must be positive definite
            smallest = smallest_eigenvalue(arr, task.formula)
            if smallest <= floor * (1 + 1e-9):
                raise DataError(where, f"{task.name}: smallest eigenvalue {smallest:.4g} <= {floor:g}: no matrix log "
                                       "(parametrization spd_log needs a positive-definite "
                                       f"{'eps - I' if task.rank == 2 else 'stiffness'})",
                                "tensor not positive definite")
        return arr

    def to_model(self, task, x: np.ndarray) -> np.ndarray:
        return spd_log(x, task.formula) if task.parametrization == "spd_log" else x

    def from_model(self, task, x: np.ndarray) -> np.ndarray:
        if task.parametrization != "spd_log":
            return x
        if x.ndim == task.rank:
            return spd_exp(x, task.formula)
        return np.stack([spd_exp(t, task.formula) for t in x.reshape(-1, *task.model_shape)]).reshape(x.shape)

    def statistics(self, task, x: np.ndarray) -> tuple:
        """Per irrep copy (``data.normalization``): 0e by median and MAD, l>0 blocks by their mean norm."""
        q = change_of_basis(task.formula)  # (irreps dim, 3^rank)
        dim = q.shape[0]
        shift, scale = np.zeros(dim), np.ones(dim)
        if len(x) == 0:
            return shift.tolist(), scale.tolist()
        irreps = x.reshape(len(x), -1) @ q.T  # (n, irreps dim)
        start = 0
        for mul, ir in cartesian_tensor(task.formula):
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
        return shift.tolist(), scale.tolist()

    def model_to_physical(self, task, model: torch.Tensor) -> torch.Tensor:
        return spd_exp_torch(model, task.rank) if task.parametrization == "spd_log" else model

    def loss_columns(self, task) -> dict[str, torch.Tensor]:
        return tensor_part_columns(invariant_mask(task.formula))

    def loss(self, prediction: torch.Tensor, target: torch.Tensor, loss: str, columns: dict | None = None,
             isotropic_weight: float = 1.0, anisotropic_weight: float = 1.0) -> tuple[torch.Tensor, dict]:
        return tensor_task_loss(prediction, target, columns, loss, isotropic_weight, anisotropic_weight)

    def metrics(self, task) -> dict:
        from torchmetrics import MeanAbsoluteError, MeanMetric

        # MeanMetric's default nan_strategy ("warn": a NaN row dropped with a warning) reads isnan on the host:
        # two syncs per update, in validation and test only (training updates no metric); kept for that meaning
        metrics = {"component_mae": MeanMetric(), "frobenius_error": MeanMetric(), "anisotropic_mae": MeanMetric()}
        if task.rank in (2, 4):
            metrics["isotropic_mae"] = MeanAbsoluteError()
        return metrics

    def update_metrics(self, task, metrics, prediction: torch.Tensor, target: torch.Tensor) -> None:
        diff = (prediction - target).reshape(len(target), -1)
        metrics["component_mae"].update(diff.abs().mean(dim=1))
        metrics["frobenius_error"].update(diff.norm(dim=1))
        anisotropic = anisotropic_part(prediction - target, task.formula)  # linear: the part of the difference
        metrics["anisotropic_mae"].update(anisotropic.reshape(len(target), -1).abs().mean(dim=1))
        if "isotropic_mae" in metrics:
            metrics["isotropic_mae"].update(cartesian_isotropic_scalar(prediction, task.rank),
                                            cartesian_isotropic_scalar(target, task.rank))


def tensor_part_columns(isotropic) -> dict[str, torch.Tensor]:
    """{part: (k,) column indices} of the parts a tensor task has, from its (irreps dim,) bool ``isotropic`` mask
    (True on 0e): "isotropic" (0e) and "anisotropic" (l>0), empty parts left out (a piezo tensor has no 0e). Built
    once, on the host: selecting by indices needs no device->host sync, where a bool mask needs one per step."""
    isotropic = torch.as_tensor(isotropic, dtype=torch.bool, device="cpu")
    columns = {"isotropic": isotropic.nonzero().squeeze(1), "anisotropic": (~isotropic).nonzero().squeeze(1)}
    return {part: index for part, index in columns.items() if len(index)}


def tensor_task_loss(prediction: torch.Tensor, target: torch.Tensor, columns: dict[str, torch.Tensor], loss: str,
                     isotropic_weight: float = 1.0, anisotropic_weight: float = 1.0
                     ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Loss of one tensor task and its parts: prediction/target (num_labelled, irreps dim) normalised irreps,
    ``columns`` from ``tensor_part_columns``. Each part is averaged over its own components, then weighted: averaged
    together, the 5 traceless components of a dielectric tensor and its one trace would weigh by count, not by what
    a user needs. Returns ``isotropic_weight * L_iso + anisotropic_weight * L_aniso`` and the parts."""
    elementwise = REGRESSION_LOSSES[loss](prediction, target, reduction="none")  # (num_labelled, irreps dim)
    weights = {"isotropic": isotropic_weight, "anisotropic": anisotropic_weight}
    parts = {part: elementwise[:, index].mean() for part, index in columns.items()}
    return sum(weights[p] * value for p, value in parts.items()), parts


KINDS: dict[str, TaskKind] = {}


def register_kind(kind: TaskKind) -> TaskKind:
    """Make ``kind`` available to task definitions by its name (``kind: NAME`` in a recipe's ``data.tasks``)."""
    if not kind.name:
        raise ValueError("a task kind needs a name")
    KINDS[kind.name] = kind
    return kind


for _kind in (ScalarKind(), LogScalarKind(), BinaryKind(), TensorKind()):
    register_kind(_kind)


def kind_of(name: str, task_name: str = "?") -> TaskKind:
    try:
        return KINDS[name]
    except KeyError:
        raise ConfigError(f"task {task_name!r}: kind must be one of {tuple(KINDS)}, got {name!r}") from None

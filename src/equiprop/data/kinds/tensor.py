"""The ``tensor`` kind: a Cartesian tensor of an e3nn ``CartesianTensor`` formula ("ij=ji", "ijkl=jikl=klij",
"ijk=ikj", "i" for a polar vector), learned as its irreps, normalised per irrep copy, its loss split into the
isotropic and anisotropic parts; "spd_log" tensors learned as a matrix logarithm (positive definite by construction).
"""

from __future__ import annotations

import numpy as np
import torch

from equiprop.data.errors import ConfigError, DataError
from equiprop.data.kinds.base import REGRESSION_LOSSES, TaskKind
from equiprop.data.tensor_ops import PARAMETRIZATIONS, anisotropic_part, cartesian_isotropic_scalar, \
    cartesian_tensor, change_of_basis, invariant_mask, smallest_eigenvalue, spd_exp, spd_exp_torch, spd_log


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
        """Per irrep copy (``data.normalization``): 0e by median and MAD, l>0 and 0o blocks by their mean norm."""
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
                if ir.l == 0 and ir.p == 1:  # 0e; a 0o part (of "ijk") is odd: a shift would break its parity
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



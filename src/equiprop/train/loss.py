"""Masked per-task losses in normalised model space, and task weighting (fixed or learned uncertainty).

Regression losses compare normalised values ((y - shift) / scale). Tensor losses compare normalised irreps
coefficients and are split into the isotropic part (0e components) and the anisotropic part (l>0 components), each
averaged over its own components and weighted separately: averaged together, the 5 traceless components of a dielectric
tensor and its one trace component would weigh by count, not by what a user needs. Only labelled structures enter a task's loss; a task with no label in the batch
is left out of the total, so neither its head nor its weight receives any gradient.
"""

from __future__ import annotations

import torch
from torch import nn

REGRESSION_LOSSES = {
    "mae": nn.functional.l1_loss,
    "mse": nn.functional.mse_loss,
    "huber": nn.functional.huber_loss,
}


def task_loss(prediction: torch.Tensor, target: torch.Tensor, kind: str, loss: str) -> torch.Tensor:
    """Loss of one task over its labelled structures (prediction/target: (num_labelled, *shape), normalised)."""
    if kind == "binary":
        return nn.functional.binary_cross_entropy_with_logits(prediction, target)
    return REGRESSION_LOSSES[loss](prediction, target)


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
    """Loss of one tensor task and its parts.

    prediction/target: (num_labelled, irreps dim) normalised irreps; columns: ``tensor_part_columns`` of the task.
    Returns ``isotropic_weight * L_iso + anisotropic_weight * L_aniso`` over the parts the tensor has and the parts
    themselves.
    """
    elementwise = REGRESSION_LOSSES[loss](prediction, target, reduction="none")  # (num_labelled, irreps dim)
    weights = {"isotropic": isotropic_weight, "anisotropic": anisotropic_weight}
    parts = {part: elementwise[:, index].mean() for part, index in columns.items()}
    return sum(weights[p] * value for p, value in parts.items()), parts


class FixedWeighting(nn.Module):
    """total = sum_t w_t L_t over the tasks present in the batch (default weight 1)."""

    def __init__(self, tasks: list[str], weights: dict[str, float] | None = None):
        super().__init__()
        self.weights = {t: float((weights or {}).get(t, 1.0)) for t in tasks}

    def forward(self, losses: dict[str, torch.Tensor], kinds: dict[str, str]) -> torch.Tensor:
        return sum(self.weights[t] * loss for t, loss in losses.items())

    def task_weights(self) -> dict[str, float]:
        return dict(self.weights)


class UncertaintyWeighting(nn.Module):
    """Kendall, Gal & Cipolla (2018): a learned log-variance s_t per task.

    regression: 1/2 exp(-s_t) L_t + 1/2 s_t;  classification: exp(-s_t) L_t + 1/2 s_t.
    A task noisier than the others settles at a larger s_t (smaller weight exp(-s_t)).
    """

    def __init__(self, tasks: list[str], init_log_variance: float = 0.0):
        super().__init__()
        self.log_variance = nn.ParameterDict({t: nn.Parameter(torch.tensor(float(init_log_variance))) for t in tasks})

    def forward(self, losses: dict[str, torch.Tensor], kinds: dict[str, str]) -> torch.Tensor:
        total = 0.0
        for t, loss in losses.items():
            s = self.log_variance[t]
            factor = 1.0 if kinds[t] == "binary" else 0.5
            total = total + factor * torch.exp(-s) * loss + 0.5 * s
        return total

    def task_weights(self) -> dict[str, float]:
        return {t: float(torch.exp(-s.detach())) for t, s in self.log_variance.items()}

"""Task weighting: how the per-task losses make one total (fixed weights, or learned uncertainty).

Each task's own loss, in normalised model space over its labelled rows, is its kind's (``data.kinds``:
``TaskKind.loss``; tensors split into isotropic and anisotropic parts). A task with no label in the batch is left
out of the total, so neither its head nor its weight receives any gradient.
"""

from __future__ import annotations

import torch
from torch import nn


class FixedWeighting(nn.Module):
    """total = sum_t w_t L_t over the tasks present in the batch (default weight 1)."""

    def __init__(self, tasks: list[str], weights: dict[str, float] | None = None):
        super().__init__()
        self.weights = {t: float((weights or {}).get(t, 1.0)) for t in tasks}

    def forward(self, losses: dict[str, torch.Tensor], factors: dict[str, float]) -> torch.Tensor:
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

    def forward(self, losses: dict[str, torch.Tensor], factors: dict[str, float]) -> torch.Tensor:
        """``factors``: each task's likelihood factor (its kind's ``weighting_factor``: 1/2 regression, 1 class)."""
        total = 0.0
        for t, loss in losses.items():
            s = self.log_variance[t]
            total = total + factors[t] * torch.exp(-s) * loss + 0.5 * s
        return total

    def task_weights(self) -> dict[str, float]:
        return {t: float(torch.exp(-s.detach())) for t, s in self.log_variance.items()}

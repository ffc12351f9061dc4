"""The ``pseudoscalar`` kind: one number that changes sign under inversion (irreps ``1x0o``): a handedness (+1/-1),
an optical rotatory power (deg/mm), a helicity; per structure, or per atom (``level: atom``). A crystal and its
mirror image have opposite labels, and an achiral crystal (one with a mirror, a glide or an inversion centre) has 0.

    data:
      tasks:
        - {name: handedness, key: handedness, units: dimensionless, kind: pseudoscalar}

Only an O(3)-equivariant encoder whose features carry odd scalars (``hidden_irreps`` with ``0o``, e.g.
"32x0e+8x0o+16x1o+8x1e+8x2e") can predict one (``nn.heads.PseudoscalarReadoutBlock``); an invariant encoder sees a
crystal and its mirror image as the same graph.

Normalised by scale only, no shift: a shift would add an invariant to an odd quantity, and the mirror image of a
crystal labelled +p would be predicted p' != -p. The scale is the root mean square of the training labels. Loss: the
regression loss; metrics: MAE, RMSE, R2 in the label's units, and ``sign_accuracy``, the fraction of chiral (nonzero)
labels whose sign the prediction gets right (the handedness).
"""

from __future__ import annotations

import numpy as np
import torch

from equiprop.data.errors import ConfigError
from equiprop.data.kinds.base import TaskKind


class PseudoscalarKind(TaskKind):
    name = "pseudoscalar"
    readout = "pseudoscalar"
    parity = -1  # flips sign under improper rotations (det Q = -1), not under proper ones

    def check(self, task) -> None:
        super().check(task)
        if task.pooling == "max":  # max(-x) = -min(x): the mirror image's max is not minus the crystal's
            raise ConfigError(f"task {task.name!r}: a pseudoscalar cannot be max-pooled (not odd under inversion); "
                              "use mean or sum")
        low, high = task.valid_range or (None, None)
        if (low is None) != (high is None) or (low is not None and low != -high):
            raise ConfigError(f"task {task.name!r}: a pseudoscalar's valid_range must be symmetric, [-a, a] (the "
                              f"mirror image of a crystal has the opposite label), got {list(task.valid_range)}")

    def statistics(self, task, x: np.ndarray) -> tuple:
        """(0, root mean square of the model-space training labels ``x``); scale 1 when there is none."""
        if len(x) == 0:
            return 0.0, 1.0
        rms = float(np.sqrt(np.mean(np.square(x))))
        return 0.0, rms if rms > 1e-12 else 1.0

    def metrics(self, task) -> dict:
        from torchmetrics import MeanMetric

        return {**super().metrics(task), "sign_accuracy": MeanMetric()}

    def update_metrics(self, task, metrics, prediction: torch.Tensor, target: torch.Tensor) -> None:
        super().update_metrics(task, metrics, prediction, target)
        chiral = (target != 0).to(prediction.dtype)  # an achiral label (0) has no sign to get right
        right = (torch.sign(prediction) == torch.sign(target)).to(prediction.dtype)
        metrics["sign_accuracy"].update(right, weight=chiral)

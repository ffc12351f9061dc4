"""Callbacks: the per-task metrics table (physical units) printed at the end of fit and test."""

from __future__ import annotations

import lightning as L
from lightning.pytorch.utilities import rank_zero_only


def metrics_table(metrics: dict, stage: str, tasks: dict) -> str:
    """task | units | metric | value, from logged ``<stage>/<task>/<metric>`` values."""
    rows = []
    for task in tasks:
        prefix = f"{stage}/{task}/"
        for key in sorted(k for k in metrics if k.startswith(prefix) and not k.endswith("/loss")):
            metric = key[len(prefix):]
            # losses are in normalised units (training space), not the task's physical units
            units = "" if metric in ("r2", "accuracy") else "normalised" if metric.startswith("loss") \
                else tasks[task].units
            rows.append(f"{task:<16} {metric:<34} {float(metrics[key]):>12.4g}  {units}")
    header = f"{'task':<16} {'metric':<34} {'value':>12}  units"
    return "\n".join([f"{stage} metrics (physical units)", header, "-" * (len(header) + 10), *rows])


class MetricsTable(L.Callback):
    """Print the validation metrics after ``fit`` and the test metrics after ``test``."""

    @rank_zero_only
    def on_fit_end(self, trainer, pl_module):
        print("\n" + metrics_table(trainer.callback_metrics, "val", pl_module.tasks))

    @rank_zero_only
    def on_test_end(self, trainer, pl_module):
        print("\n" + metrics_table(trainer.callback_metrics, "test", pl_module.tasks))

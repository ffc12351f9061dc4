"""The metrics table states units: physical for errors, 'normalised' for losses, none for R²."""

from equiprop.data.tasks import resolve_tasks
from equiprop.train.callbacks import metrics_table


def test_metrics_table_units():
    tasks = resolve_tasks(["Ef", "elastic_tensor"])
    table = metrics_table({"val/Ef/mae": 0.1, "val/Ef/r2": 0.9, "val/elastic_tensor/loss_isotropic": 0.5,
                           "val/elastic_tensor/component_mae": 4.2, "val/Ef/loss": 0.3}, "val", tasks)
    rows = {tuple(line.split()[:2]): line.split()[3:] for line in table.splitlines()[3:]}
    assert rows[("Ef", "mae")] == ["eV/atom"]
    assert rows[("Ef", "r2")] == []
    assert rows[("elastic_tensor", "component_mae")] == ["GPa"]
    assert rows[("elastic_tensor", "loss_isotropic")] == ["normalised"]
    assert ("Ef", "loss") not in rows  # the per-task loss is logged, not tabulated

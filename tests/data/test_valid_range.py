"""Absurd labels (1e30, a negative band gap) are counted skips, so they cannot set the normalisation."""

import json

import numpy as np
import pytest

from equiprop.data.datamodule import MultiTaskDataModule
from equiprop.data.errors import ConfigError, DataError
from equiprop.data.sources import BundledDataset, RecordsJSON
from equiprop.data.splits import RandomSplit
from equiprop.data.tasks import BUILTIN_TASKS, resolve_task, resolve_tasks


def _records_with_absurd_labels(tmp_path):
    tiny = BundledDataset("tiny").load(resolve_tasks(["Ef", "Eg"])).records
    records = [r.to_dict() for r in tiny[:20]]
    records[0]["labels"]["Ef"] = 1e30
    records[1]["labels"]["Eg"] = -0.5
    records[2]["labels"]["Ef"] = -1e30
    path = tmp_path / "absurd.json"
    path.write_text(json.dumps({"meta": {"provenance": "test"}, "records": records}))
    return path, records


def test_absurd_labels_are_counted_skips_and_leave_the_normalisation_sane(tmp_path):
    path, records = _records_with_absurd_labels(tmp_path)
    dm = MultiTaskDataModule(sources=[RecordsJSON(str(path))], tasks=["Ef", "Eg"], cutoff=4.5,
                             split=RandomSplit(0.2, 0.0, seed=0), cache_dir=str(tmp_path / "cache"))
    summary = dm.summary()
    skips = dm.report["sources"][0]["labels_skipped"]
    assert skips["Ef: label outside the physical range"]["count"] == 2
    assert skips["Eg: label outside the physical range"]["count"] == 1
    assert any(records[1]["id"] in e for e in skips["Eg: label outside the physical range"]["examples"])
    assert "label outside the physical range" in summary  # reported to the user
    assert dm.report["label_counts"]["all"]["Ef"] == sum("Ef" in r["labels"] for r in records) - 2
    assert dm.normalization["Ef"].scale < 10  # eV/atom; 1e30 would have made it ~5e29


def test_the_range_is_overridable_per_task(tmp_path):
    path, _ = _records_with_absurd_labels(tmp_path)
    dm = MultiTaskDataModule(sources=[RecordsJSON(str(path))], tasks=[{"name": "Ef", "valid_range": None}, "Eg"],
                             cutoff=4.5, split=RandomSplit(0.2, 0.0, seed=0), cache_dir=str(tmp_path / "cache"))
    dm.setup()
    assert "Ef: label outside the physical range" not in dm.report["sources"][0]["labels_skipped"]
    widened = resolve_task({"name": "Eg", "valid_range": [-1, 50]})
    assert widened.parse(-0.5, "x") == -0.5 and widened.units == "eV"


def test_every_builtin_range_holds_its_real_data_and_refuses_the_absurd():
    tasks = resolve_tasks(["Ef", "Eg", "K_VRH", "G_VRH", "eps_electronic", "eps_total", "elastic_tensor",
                           "piezo_tensor"])
    result = BundledDataset("default").load(tasks)
    skipped = {reason for reason in result.label_skips.counts if "physical range" in reason}
    assert skipped == set()  # the 5,909 bundled Materials Project crystals are all in range
    for name, task in BUILTIN_TASKS.items():
        if task.kind == "binary":
            continue
        assert task.valid_range is not None, name  # documented for every built-in
        huge = np.full(task.voigt_shape or task.model_shape, 1e30) if task.kind == "tensor" else 1e30
        with pytest.raises(DataError, match="outside the physical range"):
            task.parse(huge, "entry-1")


def test_bad_ranges_are_config_errors():
    with pytest.raises(ConfigError, match="valid_range needs low < high"):
        resolve_task({"name": "Eg", "valid_range": [5, 1]})
    with pytest.raises(ConfigError, match="valid_range must be"):
        resolve_task({"name": "Eg", "valid_range": ["a", 1]})

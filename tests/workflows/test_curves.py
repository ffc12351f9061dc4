import csv

import pytest

from equiprop.workflows.curves import run_study

pytestmark = pytest.mark.integration  # a learning-curve study: several trainings

RECIPE = {
    "trainer": {"max_epochs": 1, "accelerator": "cpu", "log_every_n_steps": 1},
    "model": {"encoder": {"class_path": "equiprop.nn.InvariantEncoder", "init_args": {"num_features": 8,
                                                                                      "num_layers": 1}}},
    "data": {"sources": [{"class_path": "equiprop.data.sources.BundledDataset", "init_args": {"dataset": "tiny"}}],
             "cutoff": 4.5, "batch_size": 8},
}


def test_study_rows_resume_and_plot(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    run_study({"baseline": RECIPE}, "Ef", ["10", "all"], [0], tmp_path / "curve")
    with (tmp_path / "curve.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [(r["requested"], r["n_train"]) for r in rows] == [("10", "10"), ("all", rows[1]["n_train"])]
    assert int(rows[1]["n_train"]) > 10 and rows[0]["units"] == "eV/atom" and float(rows[0]["mae"]) > 0
    assert (tmp_path / "curve.png").stat().st_size > 1000
    run_study({"baseline": RECIPE}, "Ef", ["10", "all"], [0], tmp_path / "curve")  # nothing left to run
    with (tmp_path / "curve.csv").open() as f:
        assert len(list(csv.DictReader(f))) == 2

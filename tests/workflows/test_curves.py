import csv

import pytest

from equiprop.workflows.curves import MEDIAN, run_study

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
        everything = list(csv.DictReader(f))
    rows = [r for r in everything if r["model"] == "baseline"]
    assert [(r["requested"], r["n_train"]) for r in rows] == [("10", "10"), ("all", rows[1]["n_train"])]
    assert int(rows[1]["n_train"]) > 10 and rows[0]["units"] == "eV/atom" and float(rows[0]["mae"]) > 0
    # the training-median row of each (N, seed): the same N labels, no training, a positive error in the same units
    medians = {r["requested"]: r for r in everything if r["model"] == MEDIAN}
    assert {k: r["n_train"] for k, r in medians.items()} == {r["requested"]: r["n_train"] for r in rows}
    assert all(float(r["mae"]) > 0 and r["units"] == "eV/atom" and r["epochs"] == "0" for r in medians.values())
    assert (tmp_path / "curve.png").stat().st_size > 1000
    run_study({"baseline": RECIPE}, "Ef", ["10", "all"], [0], tmp_path / "curve")  # nothing left to run
    with (tmp_path / "curve.csv").open() as f:
        assert len(list(csv.DictReader(f))) == 4

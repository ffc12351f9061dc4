"""The MatBench runner on the real, complete matbench_phonons task (a few batches per fold).

The shared data folder reaches the runner only through ``--shared`` or $EQUIPROP_SHARED_DATA, as for a user.
"""

import json

import pytest
from matbench.bench import MatbenchBenchmark

from equiprop.cli import main

FAST = ["--trainer.max_epochs=1", "--trainer.limit_train_batches=2", "--trainer.enable_progress_bar=false",
        "--trainer.log_every_n_steps=1"]


@pytest.fixture
def recipe(tmp_path):
    path = tmp_path / "mb.yaml"
    path.write_text("""
run_name: mb
seed_everything: 0
trainer: {accelerator: cpu, enable_model_summary: false}
model:
  encoder:
    class_path: equiprop.nn.EquivariantEncoder
    init_args: {max_ell: 1, multiplicities: [8, 4], num_layers: 1}
  weighting: fixed
  loss: mae
data: {cutoff: 4.5, batch_size: 64}
""")
    return path


def test_one_fold_then_a_rerun_that_skips_it_and_writes_the_official_record(recipe, tmp_path, monkeypatch,
                                                                             shared_data, capsys):
    monkeypatch.chdir(tmp_path)
    data = str(shared_data / "matbench" / "matbench_phonons.json.gz")
    args = ["matbench", "--task", "matbench_phonons", "-c", str(recipe), "--data-path", data, *FAST]
    assert main(args + ["--folds", "0"]) == 0
    run = tmp_path / "runs" / "mb" / "matbench_phonons"
    fold0 = run / "fold_0" / "predictions.json"
    first = json.loads(fold0.read_text())
    assert first["n_test"] == 253 and first["n_train"] + first["n_val"] == 1012 and first["units"] == "cm^-1"
    assert all(k.startswith("mb-phonons-") for k in first["predictions"])
    assert not (run / "results.json.gz").exists()  # matbench validates complete tasks only
    mtime = fold0.stat().st_mtime_ns

    # all five folds, the task's file now found through $EQUIPROP_SHARED_DATA: fold 0 is kept, the others train
    monkeypatch.setenv("EQUIPROP_SHARED_DATA", str(shared_data))
    assert main([a for a in args if a not in ("--data-path", data)]) == 0
    out = capsys.readouterr().out
    assert "fold 0: finished earlier, kept" in out
    assert fold0.stat().st_mtime_ns == mtime
    scored = MatbenchBenchmark.from_file(str(run / "results.json.gz"))
    task = scored.tasks_map["matbench_phonons"]
    assert task.all_folds_recorded
    assert task.results["fold_0"]["scores"]["mae"] == pytest.approx(first["mae"], rel=1e-6)


def test_subset_protocol_reports_references(recipe, tmp_path, monkeypatch, shared_data, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("EQUIPROP_SHARED_DATA", str(shared_data))
    assert main(["matbench", "--task", "matbench_log_gvrh", "-c", str(recipe), "--subset", "--folds", "1",
                 *FAST]) == 0
    out = capsys.readouterr().out
    assert "NOT a leaderboard result" in out and "on the same subset" in out
    result = json.loads((tmp_path / "runs" / "mb" / "matbench_log_gvrh_subset" /
                         "subset_results.json").read_text())
    fold = result["folds"]["1"]
    assert fold["units"] == "log10(GPa)" and fold["n_test"] > 100
    assert all(k.startswith("mb-log-gvrh-") for k in fold["predictions"])


@pytest.mark.parametrize("shared, message", [
    (None, "--subset needs the shared data folder (with matbench/, matminer-0.4.0/, perov5/): "
           "pass --shared DIR or set $EQUIPROP_SHARED_DATA"),
    ("empty", "--shared (or $EQUIPROP_SHARED_DATA): {tmp}/empty has no matbench/ folder"),
])
def test_subset_without_the_shared_folder_is_a_one_line_error(recipe, tmp_path, monkeypatch, capsys, shared, message):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("EQUIPROP_SHARED_DATA", raising=False)
    extra = []
    if shared:
        (tmp_path / shared).mkdir()
        extra = ["--shared", str(tmp_path / shared)]
    assert main(["matbench", "--task", "matbench_log_gvrh", "-c", str(recipe), "--subset", *extra, *FAST]) == 2
    err = capsys.readouterr().err.strip()
    assert message.format(tmp=tmp_path) in err and "\n" not in err
    assert not (tmp_path / "runs").exists()  # nothing trained


def test_seeds_train_one_member_each_and_the_fold_predicts_their_mean(recipe, tmp_path, monkeypatch, shared_data,
                                                                       capsys):
    monkeypatch.chdir(tmp_path)
    data = str(shared_data / "matbench" / "matbench_phonons.json.gz")
    args = ["matbench", "--task", "matbench_phonons", "-c", str(recipe), "--data-path", data, "--folds", "1", *FAST]
    assert main(args + ["--seeds", "0", "1"]) == 0
    fold = tmp_path / "runs" / "mb" / "matbench_phonons" / "fold_1"
    members = [json.loads((fold / f"seed_{s}" / "predictions.json").read_text()) for s in (0, 1)]
    ensemble = json.loads((fold / "predictions.json").read_text())
    assert members[0]["predictions"] != members[1]["predictions"]  # different initialisations
    assert members[0]["targets"] == members[1]["targets"] == ensemble["targets"]  # the same test ids and labels
    some = next(iter(ensemble["predictions"]))
    assert ensemble["predictions"][some] == pytest.approx(
        (members[0]["predictions"][some] + members[1]["predictions"][some]) / 2)
    mae = sum(abs(v - ensemble["targets"][k]) for k, v in ensemble["predictions"].items()) / ensemble["n_test"]
    assert ensemble["mae"] == pytest.approx(mae) and ensemble["member_mae"] == [m["mae"] for m in members]
    assert "members' MAE (seeds 0 1)" in capsys.readouterr().out

    # a third seed later: the two members are kept, the ensemble is recomputed from all three
    assert main(args + ["--seeds", "0", "1", "2"]) == 0
    assert "fold 1 seed 0: finished earlier, kept" in capsys.readouterr().out
    assert json.loads((fold / "predictions.json").read_text())["seeds"] == [0, 1, 2]


def test_a_study_named_by_a_path_is_refused_before_anything_is_written(recipe, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    args = ["matbench", "--task", "matbench_phonons", "-c", str(recipe), "--folds", "0", *FAST]
    assert main(args + ["--run_name=../escape"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "'../escape' is not one folder name" in err[0], err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mb.yaml"]

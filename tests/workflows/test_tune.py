"""Optuna search end to end: real Lightning fits per trial, SQLite storage, resume, outputs."""

import re
import time

import optuna
import pandas as pd
import pytest
import yaml

from equiprop.cli import main
from equiprop.train.run import load_recipe
from equiprop.workflows.tune import make_storage, make_study, tune_command

RECIPE = {
    "run_name": "tiny_tune",
    "seed_everything": 0,
    "trainer": {"max_epochs": 1, "accelerator": "cpu", "enable_progress_bar": False, "log_every_n_steps": 1},
    "model": {"encoder": {"class_path": "equiprop.nn.EquivariantEncoder",
                          "init_args": {"max_ell": 1, "multiplicities": [8, 4, 4], "num_layers": 1}}},
    "data": {"sources": [{"class_path": "equiprop.data.sources.BundledDataset", "init_args": {"dataset": "tiny"}}],
             "tasks": ["Ef", "eps_electronic"], "cutoff": 4.5, "batch_size": 8,
             "split": {"class_path": "equiprop.data.splits.RandomSplit",
                       "init_args": {"val_fraction": 0.25, "test_fraction": 0.0}}},
    "tune": {"metric": "val/loss", "pruner": {"class": "NopPruner"}, "seed": 1,
             "search_space": {"model.encoder.init_args.max_ell": {"type": "categorical", "choices": [0, 1, 2]},
                              "model.encoder.init_args.multiplicities": {"type": "int_list", "length": 3,
                                                                          "low": 4, "high": 8},
                              "model.lr": {"type": "float", "low": 1e-3, "high": 1e-2, "log": True}}},
}


def test_two_trials_then_a_resumed_third(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    recipe = tmp_path / "tune.yaml"
    recipe.write_text(yaml.safe_dump(RECIPE))
    assert main(["tune", "-c", str(recipe), "--n-trials", "2", "--trainer.max_epochs=1"]) == 0
    run = tmp_path / "runs" / "tiny_tune"
    storage = f"sqlite:///{run / 'optuna.db'}"
    study = optuna.load_study(study_name="tiny_tune", storage=storage)
    assert [t.state.name for t in study.trials] == ["COMPLETE", "COMPLETE"]
    first_values = [t.value for t in study.trials]

    assert main(["tune", "-c", str(recipe), "--n-trials", "3", "--trainer.max_epochs=1"]) == 0
    out = capsys.readouterr().out
    assert "2 finished trials, running 1 more" in out
    study = optuna.load_study(study_name="tiny_tune", storage=storage)
    assert len(study.trials) == 3 and [t.value for t in study.trials[:2]] == first_values
    # each trial was a real fit with its own checkpoint, and its sampled max_ell was used
    for t in study.trials:
        assert (run / f"trial_{t.number:03d}" / "recipe.yaml").exists()
        used = load_recipe(run / f"trial_{t.number:03d}" / "recipe.yaml")
        assert used["model"]["encoder"]["init_args"]["max_ell"] == t.params["model.encoder.init_args.max_ell"]
        assert t.user_attrs["seconds_per_epoch"] > 0
    trials = pd.read_csv(run / "trials.csv")
    assert len(trials) == 3 and "params_model.encoder.init_args.max_ell" in trials.columns
    best = load_recipe(run / "best_recipe.yaml")
    assert "tune" not in best
    assert best["model"]["encoder"]["init_args"]["max_ell"] == study.best_trial.params[
        "model.encoder.init_args.max_ell"]
    assert (run / "history.png").stat().st_size > 1000 and (run / "importances.png").exists()


def test_the_best_recipe_gives_list_choices_as_lists_and_fits(tmp_path, monkeypatch):
    """A categorical over lists (backbone sets, task lists) is stored by Optuna as JSON text; the best recipe holds
    the list itself, so ``equiprop fit -c best_recipe.yaml`` runs it."""
    import json

    monkeypatch.chdir(tmp_path)
    space = {"data.tasks": {"type": "categorical", "choices": [["Ef", "eps_electronic"], ["Eg", "Ef"]]}}
    recipe = tmp_path / "tune.yaml"
    recipe.write_text(yaml.safe_dump(dict(RECIPE, run_name="lists", tune={**RECIPE["tune"], "search_space": space})))
    assert main(["tune", "-c", str(recipe), "--n-trials", "2"]) == 0
    study = optuna.load_study(study_name="lists", storage=f"sqlite:///{tmp_path / 'runs/lists/optuna.db'}")
    best = load_recipe(tmp_path / "runs" / "lists" / "best_recipe.yaml")
    assert best["data"]["tasks"] == json.loads(study.best_trial.params["data.tasks"])
    assert main(["fit", "-c", str(tmp_path / "runs" / "lists" / "best_recipe.yaml")]) == 0
    assert (tmp_path / "runs" / "lists_best" / "best.ckpt").exists()


def test_multi_objective_returns_a_pareto_front(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    recipe = dict(RECIPE, run_name="tiny_pareto", tune={**RECIPE["tune"], "multi_objective": True})
    path = tmp_path / "tune.yaml"
    path.write_text(yaml.safe_dump(recipe))
    assert main(["tune", "-c", str(path), "--n-trials", "2"]) == 0
    study = optuna.load_study(study_name="tiny_pareto",
                              storage=f"sqlite:///{tmp_path / 'runs' / 'tiny_pareto' / 'optuna.db'}")
    assert len(study.directions) == 2 and all(len(t.values) == 2 for t in study.trials)
    assert "Pareto front" in capsys.readouterr().out
    assert (tmp_path / "runs" / "tiny_pareto" / "pareto_front.png").exists()


def test_search_over_pretrained_potentials(tmp_path, monkeypatch):
    import pytest

    pytest.importorskip("sevenn", reason="the foundation extra is not installed: pip install 'equiprop[foundation]'")
    monkeypatch.chdir(tmp_path)
    recipe = dict(RECIPE, run_name="tiny_foundation",
                  model={"encoder": {"class_path": "equiprop.nn.FoundationEncoder", "init_args": {}}},
                  data={**RECIPE["data"], "cutoff": 5.0},
                  tune={**RECIPE["tune"], "search_space": {
                      "model.encoder.init_args.model": {"type": "categorical", "choices": ["7net-0", "7net-l3i5"]},
                      "model.lr": {"type": "float", "low": 1e-3, "high": 1e-2, "log": True}}})
    path = tmp_path / "tune.yaml"
    path.write_text(yaml.safe_dump(recipe))
    assert main(["tune", "-c", str(path), "--n-trials", "2"]) == 0
    study = optuna.load_study(study_name="tiny_foundation",
                              storage=f"sqlite:///{tmp_path / 'runs' / 'tiny_foundation' / 'optuna.db'}")
    assert [t.state.name for t in study.trials] == ["COMPLETE", "COMPLETE"]
    for t in study.trials:
        used = load_recipe(tmp_path / "runs" / "tiny_foundation" / f"trial_{t.number:03d}" / "recipe.yaml")
        assert used["model"]["encoder"]["init_args"]["model"] == t.params["model.encoder.init_args.model"]


FEW_BATCHES = ["--trainer.max_epochs=1", "--trainer.limit_train_batches=2", "--trainer.limit_val_batches=1"]


def test_each_resumed_run_draws_new_parameters(tmp_path, monkeypatch, capsys):
    """Three runs of one study (1, 2, then 3 trials): a resumed run must not replay the first run's draws."""
    monkeypatch.chdir(tmp_path)
    recipe = dict(RECIPE, run_name="tiny_resume", tune={**RECIPE["tune"], "search_space": {
        "model.lr": {"type": "float", "low": 1e-4, "high": 1e-2, "log": True},
        "data.batch_size": {"type": "int", "low": 4, "high": 16}}})
    path = tmp_path / "tune.yaml"
    path.write_text(yaml.safe_dump(recipe))
    for n_trials in (1, 2, 3):
        assert tune_command(["-c", str(path), "--n-trials", str(n_trials), *FEW_BATCHES]) == 0
    out = capsys.readouterr().out
    study = optuna.load_study(study_name="tiny_resume",
                              storage=f"sqlite:///{tmp_path / 'runs' / 'tiny_resume' / 'optuna.db'}")
    assert [t.state.name for t in study.trials] == ["COMPLETE"] * 3
    params = [tuple(sorted(t.params.items())) for t in study.trials]
    assert len(set(params)) == 3, params
    seeds = re.findall(r"sampler seed (\d+) \(tune.seed 1, (\d) trials already in the study", out)
    assert [n for _, n in seeds] == ["0", "1", "2"] and len({s for s, _ in seeds}) == 3


def test_heartbeat_options_reach_the_storage_and_fail_a_silent_trial(tmp_path, capsys):
    tune = {**RECIPE["tune"], "heartbeat_interval": 1, "grace_period": 2}
    storage = make_storage(tune, f"sqlite:///{tmp_path / 'optuna.db'}")
    assert (storage.heartbeat_interval, storage.grace_period) == (1, 2)
    assert (make_storage(RECIPE["tune"], f"sqlite:///{tmp_path / 'defaults.db'}").grace_period) == 180
    study = make_study(tune, storage, "heartbeat")
    # a worker that beat once and was killed: after the grace period its trial is failed and queued for a retry
    trial = study.ask()
    trial_id = storage.get_trial_id_from_study_id_trial_number(storage.get_study_id_from_name("heartbeat"),
                                                               trial.number)
    storage.record_heartbeat(trial_id)
    time.sleep(3.5)  # past the 2 s grace period even though SQLite's clock for 'now' has whole seconds
    optuna.storages.fail_stale_trials(study)
    assert [t.state.name for t in study.trials] == ["FAIL", "WAITING"]


@pytest.mark.parametrize("change, message", [
    ({"grace_period": 60}, "tune.grace_period: must exceed tune.heartbeat_interval (60 s), got 60 s"),
    ({"heartbeat_interval": 0}, "tune.heartbeat_interval: a positive whole number of seconds, got 0"),
    ({"grace_period": "3m"}, "tune.grace_period: a positive whole number of seconds, got '3m'"),
    ({"pruner": {"class": "MeanPruner"}}, "tune.pruner.class: one of HyperbandPruner, MedianPruner, NopPruner"),
    ({"pruner": {"class": "MedianPruner", "n_startup": 2}}, "tune.pruner: MedianPruner({'n_startup': 2}) rejected"),
    ({"search_space": {"model.lr": {"type": "loguniform", "low": 1e-3, "high": 1e-2}}},
     "tune.search_space.model.lr.type: one of categorical, int, float, int_list, got 'loguniform'"),
    ({"search_space": {"model.lr": {"type": "float", "low": 1e-3}}},
     "tune.search_space.model.lr: type float needs low, high; missing high"),
    ({"metric": "loss"}, "tune.metric: a validation metric: val/loss, val/weighted_loss or val/<task>/<metric>"),
    ({"directions": ["minimise"]}, "tune.directions: a list of one direction, minimize or maximize"),
    ({"seed": -1}, "tune.seed: a non-negative integer, got -1"),
])
def test_bad_tune_options_are_one_line_errors_before_any_trial(tmp_path, monkeypatch, capsys, change, message):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "tune.yaml"
    path.write_text(yaml.safe_dump(dict(RECIPE, tune={**RECIPE["tune"], **change})))
    assert main(["tune", "-c", str(path), "--n-trials", "1"]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err
    assert not (tmp_path / "runs" / "tiny_tune" / "optuna.db").exists()  # nothing ran


def test_a_metric_that_is_never_logged_stops_the_search_naming_the_logged_ones(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "tune.yaml"
    path.write_text(yaml.safe_dump(dict(RECIPE, tune={**RECIPE["tune"], "metric": "val/Eg/mae"})))
    assert main(["tune", "-c", str(path), "--n-trials", "3", *FEW_BATCHES]) == 2
    err = capsys.readouterr().err.strip()
    assert "tune.metric: 'val/Eg/mae' was never logged; logged: " in err and "val/Ef/mae" in err


def test_head_shape_and_structured_choices_reach_the_trials(tmp_path, monkeypatch):
    """Head width/depth and list/mapping choices (descriptor sets, priors): stored as JSON strings in the study,
    decoded into each trial's recipe, and the fit builds that head."""
    monkeypatch.chdir(tmp_path)
    recipe = dict(RECIPE, run_name="heads_tune")
    recipe["tune"] = dict(RECIPE["tune"], search_space={
        "model.head_hidden": {"type": "categorical", "choices": [8, 16]},
        "model.head_layers": {"type": "int", "low": 0, "high": 2},
        "model.task_weights": {"type": "categorical", "choices": [{"Ef": 1.0}, {"Ef": 2.0, "eps_electronic": 0.5}]}})
    recipe["model"] = dict(RECIPE["model"], weighting="fixed")
    (tmp_path / "tune.yaml").write_text(yaml.safe_dump(recipe))
    assert main(["tune", "-c", "tune.yaml", "--n-trials", "2", "--trainer.max_epochs=1"]) == 0
    study = optuna.load_study(study_name="heads_tune",
                              storage=f"sqlite:///{tmp_path / 'runs' / 'heads_tune' / 'optuna.db'}")
    for t in study.trials:
        used = load_recipe(tmp_path / "runs" / "heads_tune" / f"trial_{t.number:03d}" / "recipe.yaml")
        assert used["model"]["task_weights"] in ({"Ef": 1.0}, {"Ef": 2.0, "eps_electronic": 0.5})
        assert isinstance(t.params["model.task_weights"], str)
        assert used["model"]["head_hidden"] == t.params["model.head_hidden"]
        assert used["model"]["head_layers"] == t.params["model.head_layers"]

"""Optuna search end to end: real Lightning fits per trial, SQLite storage, resume, outputs."""

import optuna
import pandas as pd
import yaml

from equiprop.cli import main
from equiprop.workflows.recipe import load_recipe

RECIPE = {
    "run_name": "tiny_tune",
    "seed_everything": 0,
    "trainer": {"max_epochs": 1, "accelerator": "cpu", "enable_progress_bar": False},
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
    run = tmp_path / "checkpoints" / "tiny_tune"
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


def test_multi_objective_returns_a_pareto_front(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    recipe = dict(RECIPE, run_name="tiny_pareto", tune={**RECIPE["tune"], "multi_objective": True})
    path = tmp_path / "tune.yaml"
    path.write_text(yaml.safe_dump(recipe))
    assert main(["tune", "-c", str(path), "--n-trials", "2"]) == 0
    study = optuna.load_study(study_name="tiny_pareto",
                              storage=f"sqlite:///{tmp_path / 'checkpoints' / 'tiny_pareto' / 'optuna.db'}")
    assert len(study.directions) == 2 and all(len(t.values) == 2 for t in study.trials)
    assert "Pareto front" in capsys.readouterr().out
    assert (tmp_path / "checkpoints" / "tiny_pareto" / "pareto_front.png").exists()


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
                              storage=f"sqlite:///{tmp_path / 'checkpoints' / 'tiny_foundation' / 'optuna.db'}")
    assert [t.state.name for t in study.trials] == ["COMPLETE", "COMPLETE"]
    for t in study.trials:
        used = load_recipe(tmp_path / "checkpoints" / "tiny_foundation" / f"trial_{t.number:03d}" / "recipe.yaml")
        assert used["model"]["encoder"]["init_args"]["model"] == t.params["model.encoder.init_args.model"]

"""Every workflow that reads a dataset runs with ``data.storage: disk`` and gives the numbers it gives in memory:
fit, test and calibrate, tune, distill and a MatBench fold, each run once per storage from its own folder."""

import gzip
import json

import pytest
import torch
import yaml

from equiprop.cli import main

STORAGES = ("memory", "disk")


def write_recipe(folder, recipe: dict, name: str = "recipe.yaml"):
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(yaml.safe_dump(recipe))
    return path


def per_storage(tmp_path, monkeypatch, cli_recipe, run):
    """``run(folder, recipe_path, storage)`` in a fresh folder per storage, each with its own graph cache."""
    results = {}
    for storage in STORAGES:
        folder = tmp_path / storage
        recipe = dict(cli_recipe, data={**cli_recipe["data"], "storage": storage, "cache_dir": str(folder / "g")})
        path = write_recipe(folder, recipe)
        monkeypatch.chdir(folder)
        results[storage] = run(folder, path, storage)
    return results


def test_fit_test_and_calibrate(tmp_path, monkeypatch, cli_recipe, capsys):
    def run(folder, recipe, storage):
        assert main(["ensemble", "-c", str(recipe), "--seeds", "0", "1"]) == 0  # two fits, then calibrate
        best = folder / "runs" / "tiny_s0" / "best.ckpt"
        assert main(["test", "-c", str(recipe), f"--ckpt_path={best}"]) == 0
        tested = capsys.readouterr().out.split("test metrics (physical units)")[-1]
        manifest = json.loads((folder / "runs" / "tiny_ensemble.json").read_text())
        return torch.load(best, weights_only=True)["state_dict"], tested, manifest["std_scale"]

    memory, disk = per_storage(tmp_path, monkeypatch, cli_recipe, run).values()
    assert memory[0].keys() == disk[0].keys() and all(torch.equal(memory[0][k], disk[0][k]) for k in memory[0])
    assert memory[1] == disk[1] and "Ef" in memory[1]
    assert memory[2] == disk[2]


def test_tune(tmp_path, monkeypatch, cli_recipe):
    import optuna

    cli_recipe["tune"] = {"metric": "val/loss", "pruner": {"class": "NopPruner"}, "seed": 1,
                          "search_space": {"model.lr": {"type": "float", "low": 1e-3, "high": 1e-2, "log": True}}}

    def run(folder, recipe, storage):
        assert main(["tune", "-c", str(recipe), "--n-trials", "1"]) == 0
        study = optuna.load_study(study_name="tiny", storage=f"sqlite:///{folder / 'runs/tiny/optuna.db'}")
        return [(t.params, t.value) for t in study.trials]

    memory, disk = per_storage(tmp_path, monkeypatch, cli_recipe, run).values()
    assert memory == disk and memory[0][1] is not None


def test_distill(tmp_path, monkeypatch, cli_recipe):
    cli_recipe["data"]["tasks"] = ["Ef", "Eg", "K_VRH"]

    def run(folder, recipe, storage):
        teacher_recipe = write_recipe(folder, dict(yaml.safe_load(recipe.read_text()), run_name="teacher"),
                                      "teacher.yaml")
        assert main(["fit", "-c", str(teacher_recipe)]) == 0
        assert main(["distill", "--checkpoint", str(folder / "runs/teacher/best.ckpt"), "-c", str(recipe),
                     "--input", "bundled:tiny", "--trainer.limit_train_batches=2"]) == 0
        with gzip.open(folder / "runs" / "tiny_distilled_pseudo" / "pseudo_labels.json.gz", "rt") as f:
            return json.load(f)["records"], (folder / "runs/tiny_distilled_pseudo/test_ids.txt").read_text()

    memory, disk = per_storage(tmp_path, monkeypatch, cli_recipe, run).values()
    assert memory == disk and memory[0]


def test_a_matbench_fold(tmp_path, monkeypatch, cli_recipe, shared_data):
    data = str(shared_data / "matbench" / "matbench_phonons.json.gz")
    cli_recipe.pop("data")
    cli_recipe["data"] = {"cutoff": 4.5, "batch_size": 64}
    cli_recipe["model"].update(weighting="fixed", loss="mae")

    def run(folder, recipe, storage):
        assert main(["matbench", "--task", "matbench_phonons", "-c", str(recipe), "--data-path", data, "--folds", "0",
                     f"--data.storage={storage}", f"--data.cache_dir={folder / 'g'}", "--trainer.max_epochs=1",
                     "--trainer.limit_train_batches=2"]) == 0
        return json.loads((folder / "runs/tiny/matbench_phonons/fold_0/predictions.json").read_text())

    def without_paths(record: dict) -> dict:
        return {k: v for k, v in record.items() if k not in ("seconds", "command", "checkpoint", "best_checkpoint")}

    memory, disk = per_storage(tmp_path, monkeypatch, cli_recipe, run).values()
    assert without_paths(memory) == without_paths(disk) and memory["n_test"] == 253

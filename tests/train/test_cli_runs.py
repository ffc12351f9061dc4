"""The command line (``equiprop.train.cli``, LightningCLI) end to end: fit (single process and DDP over 2 CPU
processes), test, predict."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from pymatgen.core import Structure

pytestmark = pytest.mark.integration  # equiprop CLI in subprocesses: fit, DDP on two processes, predict

EQUIPROP = str(Path(sys.executable).parent / "equiprop")

RECIPE = {
    "run_name": "tiny",
    "seed_everything": 0,
    "trainer": {"max_epochs": 1, "accelerator": "cpu", "log_every_n_steps": 1},
    "model": {"encoder": {"class_path": "equiprop.nn.EquivariantEncoder",
                          "init_args": {"max_ell": 1, "multiplicities": [8, 4], "num_layers": 1}}},
    "data": {"sources": [{"class_path": "equiprop.data.sources.BundledDataset", "init_args": {"dataset": "tiny"}}],
             "tasks": ["Ef", "Eg", "eps_electronic"], "cutoff": 4.5, "batch_size": 8,
             "split": {"class_path": "equiprop.data.splits.RandomSplit",
                       "init_args": {"val_fraction": 0.25, "test_fraction": 0.25}}},
}


@pytest.fixture
def recipe(tmp_path):
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(RECIPE))
    return path


def _run(args, cwd):
    out = subprocess.run([EQUIPROP, *args], cwd=cwd, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout


def test_fit_test_and_predict_from_the_command_line(recipe, tmp_path, tiny_entries, monkeypatch, capsys):
    """One fitted run, then what a user does with it: its test metrics, and predict reporting bad files with units
    (one fit for the three: each ``equiprop`` subprocess costs seconds, so the predicts after the first run in this
    process, through the same ``main``)."""
    from equiprop.cli import main

    stdout = _run(["fit", "-c", str(recipe)], tmp_path)
    run = tmp_path / "runs" / "tiny"
    assert (run / "best.ckpt").exists() and (run / "last.ckpt").exists()
    assert list((run / "tensorboard").rglob("events.out.tfevents.*"))
    assert "val metrics (physical units)" in stdout
    assert any(line.startswith("Ef ") and "eV/atom" in line for line in stdout.splitlines())
    stdout = _run(["test", "-c", str(recipe), "--ckpt_path", str(run / "best.ckpt")], tmp_path)
    assert "test metrics (physical units)" in stdout

    inputs = tmp_path / "inputs"
    inputs.mkdir()
    for e in tiny_entries[:3]:
        Structure.from_dict(e["structure"]).to(filename=str(inputs / f"{e['material_id']}.cif"))
    (inputs / "broken.cif").write_text("data_broken\n_cell_length_a 3.0\n")
    out = tmp_path / "pred.json"
    command = [EQUIPROP, "predict", "--checkpoint", "runs/tiny/best.ckpt", "--input", str(inputs),
               "--allow-unseen-elements"]  # a 1-epoch model on 14 structures has not seen every element
    proc = subprocess.run(command + ["--output", str(out)], cwd=tmp_path, capture_output=True, text=True)
    assert proc.returncode == 1, proc.stderr[-2000:]  # an input failed: not a silent success
    assert "broken.cif" in proc.stderr
    monkeypatch.chdir(tmp_path)
    assert main(command[1:] + ["--output", str(out), "--allow-failures"]) == 0, capsys.readouterr().err[-2000:]
    result = json.loads(out.read_text())
    assert result["units"]["Ef"] == "eV/atom" and result["units"]["eps_electronic"] == "dimensionless"
    assert len(result["predictions"]) == 3 and len(result["errors"]) == 1
    assert len(result["predictions"][0]["eps_electronic"]) == 3
    csv_out = tmp_path / "pred.csv"
    assert main(command[1:] + ["--output", str(csv_out), "--allow-failures"]) == 0
    assert csv_out.read_text().splitlines()[0].startswith("id,file,formula,Ef [eV/atom]")


def test_ddp_on_two_cpu_processes(recipe, tmp_path):
    stdout = _run(["fit", "-c", str(recipe), "--trainer.strategy=ddp", "--trainer.devices=2",
                   "--run_name=ddp"], tmp_path)
    assert stdout.count("val metrics (physical units)") == 1  # printed by rank zero only
    checkpoint = torch.load(tmp_path / "runs" / "ddp" / "last.ckpt", weights_only=True)
    assert checkpoint["global_step"] > 0

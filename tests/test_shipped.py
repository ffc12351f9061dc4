"""The shipped models equiprop-mp-v1, -v2 and -v3: found by name, listed, loaded offline with their backbone checked, and
guarded by reference predictions (tests/references/equiprop_mp_v*.json, as MACE keeps tests/references).

Regenerate the references after a deliberate change of the model:
    EQUIPROP_UPDATE_REFERENCES=1 pytest tests/test_shipped.py -k reference
"""

import csv
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from equiprop.data.errors import ConfigError, DataError
from equiprop.shipped import MODEL_FILE, describe_models, first_member, resolve, shipped_models

REPO = Path(__file__).resolve().parents[1]
NAME = "equiprop-mp-v1"
# v2: v1 + physics priors (Ef from the potential's energy; Penn eps_inf); v3: each head from its own best epoch, the Ef
# prior only, piezo on request
NAMES = ["equiprop-mp-v1", "equiprop-mp-v2", "equiprop-mp-v3"]
EXAMPLES = sorted((REPO / "examples" / "cifs").glob("*.cif"))


FOLDER = REPO / "checkpoints" / NAME


def references(name: str) -> Path:
    return REPO / "tests" / "references" / f"{name.replace('-', '_')}.json"


def test_the_name_resolves_to_the_shipped_manifest_and_paths_stay_paths(tmp_path):
    assert NAME in shipped_models()
    assert Path(resolve(NAME)).resolve() == (REPO / "checkpoints" / NAME / MODEL_FILE).resolve()
    checkpoint = tmp_path / "best.ckpt"
    checkpoint.write_bytes(b"")
    assert resolve(str(checkpoint)) == str(checkpoint)  # an existing file is always a path
    assert resolve("runs/missing.ckpt") == "runs/missing.ckpt"  # a path: its loader names it as missing
    with pytest.raises(ConfigError, match=f"neither a file nor a shipped model.*{NAME}"):
        resolve("equiprop-mp-v0")
    assert Path(first_member(NAME)).name == "member_s0.ckpt"


@pytest.mark.parametrize("name", NAMES)
def test_the_folder_is_small_weights_only_and_references_its_backbone(name):
    assert name in shipped_models()
    folder = REPO / "checkpoints" / name
    info = json.loads((folder / MODEL_FILE).read_text())
    assert len(info["members"]) >= 5 and set(info["std_scale"]) >= {"Ef", "Eg", "K_VRH", "piezo_tensor"}
    size = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
    assert size <= 20e6, f"{folder} holds {size / 1e6:.1f} MB"
    member = torch.load(folder / info["members"][0], map_location="cpu", weights_only=True)
    assert set(member) == {"equiprop", "hyper_parameters", "state_dict"}  # no optimiser or loop state
    assert not [k for k in member["state_dict"] if k.startswith("encoder.potential.")]
    backbone = member["equiprop"]["backbone"]
    assert backbone["model"] == "7net-0" and len(backbone["sha256"]) == 64 and backbone["dropped_tensors"] > 0


def test_models_lists_tasks_with_units_data_metrics_and_size():
    text = describe_models()
    for needle in (NAME, "Ef", "eV/atom", "K_VRH", "GPa", "piezo_tensor", "C/m^2", "train", "MB", "7net-0"):
        assert needle in text


@pytest.mark.integration
@pytest.mark.parametrize("name", NAMES)
def test_predictions_match_the_stored_references(name):
    pytest.importorskip("sevenn", reason="the foundation extra is not installed: pip install 'equiprop[foundation]'")
    from equiprop import load_predictor

    predictor, stored = load_predictor(name), references(name)
    from equiprop.data.record import read_structure_file

    records = [r for path in EXAMPLES for r in read_structure_file(path)]
    rows = predictor.predict(records)
    assert all(f"{task}_std" in row for row in rows for task in predictor.output_tasks)  # every output has a std
    values = [{k: np.asarray(v).tolist() for k, v in row.items()} for row in rows]
    if os.environ.get("EQUIPROP_UPDATE_REFERENCES"):
        stored.parent.mkdir(exist_ok=True)
        stored.write_text(json.dumps({"model": name, "structures": [p.name for p in EXAMPLES],
                                          "predictions": values}, indent=1))
    reference = json.loads(stored.read_text())
    assert reference["structures"] == [p.name for p in EXAMPLES]
    for name, ours, theirs in zip(reference["structures"], values, reference["predictions"]):
        assert set(ours) == set(theirs), name
        for key in theirs:
            expected = np.asarray(theirs[key])
            scale = max(float(np.abs(expected).max()), 1e-6)
            np.testing.assert_allclose(ours[key], expected, rtol=1e-3, atol=1e-4 * scale, err_msg=f"{name}: {key}")


@pytest.mark.integration
def test_v3_predicts_piezo_only_on_request_with_the_measured_reason(tmp_path, capsys, monkeypatch):
    """... and ``--compile`` (SevenNet's layers through torch.compile; traced by dynamo with the eager backend here:
    inductor's minutes of compilation are measured in benchmarks/pretrained.py) predicts the same numbers."""
    pytest.importorskip("sevenn", reason="the foundation extra is not installed")
    import equiprop.nn.backbones.base as base
    from equiprop.cli import main

    monkeypatch.setattr(base, "COMPILE_BACKEND", "eager")
    info = json.loads((REPO / "checkpoints" / "equiprop-mp-v3" / MODEL_FILE).read_text())
    assert "zero tensor" in info["opt_in_tasks"]["piezo_tensor"]
    out = tmp_path / "pred.csv"
    assert main(["predict", "--model", "equiprop-mp-v3", "--input", str(EXAMPLES[0]), "--output", str(out)]) == 0
    assert "piezo_tensor" not in out.read_text().splitlines()[0] and "K_VRH [GPa]" in out.read_text()
    assert "piezo_tensor is predicted only on request" in capsys.readouterr().err
    eager = dict(zip(*csv.reader(out.read_text().splitlines())))
    calls = base._compiled.cache_info().misses + base._compiled.cache_info().hits
    monkeypatch.setenv("EQUIPROP_CACHE", str(tmp_path / "empty_cache"))  # features computed again, compiled
    assert main(["predict", "--model", "equiprop-mp-v3", "--input", str(EXAMPLES[0]), "--output", str(out),
                 "--tasks", "Ef", "piezo_tensor", "--compile"]) == 0
    assert base._compiled.cache_info().misses + base._compiled.cache_info().hits > calls  # the compiled layers ran
    header = out.read_text().splitlines()[0]
    assert "piezo_tensor [C/m^2]" in header and "Ef [eV/atom]" in header and "K_VRH" not in header
    compiled = dict(zip(*csv.reader(out.read_text().splitlines())))
    assert compiled["Ef [eV/atom]"] == eager["Ef [eV/atom]"] and compiled["Ef_std [eV/atom]"] == eager["Ef_std [eV/atom]"]


@pytest.mark.integration
def test_another_backbone_file_is_a_one_line_error(tmp_path):
    pytest.importorskip("sevenn", reason="the foundation extra is not installed")
    from equiprop.inference import Predictor

    member = torch.load(first_member(NAME), map_location="cpu", weights_only=True)
    member["equiprop"]["backbone"]["sha256"] = "0" * 64
    path = tmp_path / "member.ckpt"
    torch.save(member, path)
    with pytest.raises(DataError, match="installed file .* has sha256 .*install sevenn==") as err:
        Predictor.from_checkpoint(path)
    assert str(path) in str(err.value) and "\n" not in str(err.value)


@pytest.mark.integration
def test_predict_command_by_name_writes_values_and_stds_with_units(tmp_path):
    pytest.importorskip("sevenn", reason="the foundation extra is not installed")
    from equiprop.cli import main

    out = tmp_path / "pred.csv"
    assert main(["predict", "--model", NAME, "--input", str(EXAMPLES[0].parent), "--output", str(out)]) == 0
    header = out.read_text().splitlines()[0]
    for column in ("Ef [eV/atom]", "Ef_std [eV/atom]", "K_VRH [GPa]", "K_VRH_std [GPa]", "piezo_tensor_std [C/m^2]"):
        assert column in header
    assert len(out.read_text().splitlines()) == len(EXAMPLES) + 1
    assert main(["predict", "--model", "nope", "--input", str(EXAMPLES[0]), "--output", str(out)]) == 2


@pytest.mark.integration
def test_a_wheel_carries_the_shipped_model(tmp_path):
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q",
                            "-w", str(tmp_path), str(REPO)], capture_output=True, text=True)
    assert built.returncode == 0, built.stderr[-2000:]
    wheel = next(tmp_path.glob("equiprop-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    for name in NAMES:
        info = json.loads((REPO / "checkpoints" / name / MODEL_FILE).read_text())
        for file in [MODEL_FILE, "README.md", *info["members"]]:
            assert f"equiprop/shipped_models/{name}/{file}" in names
    assert not [n for n in names if "shipped_models/" in n and "_s0/" in n]  # no training output
    unpacked = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(unpacked)
    probe = ("import equiprop, equiprop.shipped as s; from equiprop.shipped import resolve, first_member; "
             f"print(equiprop.__file__); print(resolve('{NAME}')); print(first_member('{NAME}'))")
    found = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, capture_output=True, text=True,
                           env=dict(os.environ, PYTHONPATH=str(unpacked)))
    assert found.returncode == 0, found.stderr[-2000:]
    for line in found.stdout.split():  # the installed copy, not the source tree, finds the model by name
        assert line.startswith(str(unpacked)), found.stdout


@pytest.mark.integration
def test_screen_takes_the_shipped_model_by_name(tmp_path):
    pytest.importorskip("sevenn", reason="the foundation extra is not installed")
    from equiprop.cli import main

    out = tmp_path / "screen.csv"
    assert main(["screen", "--input", str(EXAMPLES[0].parent), "--phase1", NAME, "--phase2", NAME,
                 "--output", str(out), "--workers", "0"]) == 0
    header = out.read_text().splitlines()[0]
    assert "Eg_std [eV]" in header and "p2_Eg [eV]" in header
    summary = json.loads(out.with_name(out.name.replace(".csv", ".summary.json")).read_text())
    assert summary["phase1"]["ok"] == len(EXAMPLES)


@pytest.mark.integration
def test_a_recipe_fine_tunes_from_the_shipped_model_by_name(tmp_path, quiet_trainer):
    pytest.importorskip("sevenn", reason="the foundation extra is not installed")

    from equiprop.data.datamodule import MultiTaskDataModule
    from equiprop.data.sources import BundledDataset
    from equiprop.data.splits import RandomSplit
    from equiprop.nn import FoundationEncoder
    from equiprop.train.module import MultiTaskModel

    shipped = torch.load(first_member(NAME), map_location="cpu", weights_only=True)["state_dict"]
    tasks = ["K_VRH", {"name": "G_VRH", "kind": "scalar"}]  # G in GPa, not log10: another task than the shipped one
    model = MultiTaskModel(FoundationEncoder(cache_dir=str(tmp_path / "features")), tasks, init_from=NAME,
                           init_heads={"G_VRH": "G_VRH"}, finetune="frozen_encoder")
    assert model.reused_tasks == ["K_VRH"]
    for key, value in model.heads["G_VRH"].state_dict().items():
        assert torch.equal(value, shipped[f"heads.G_VRH.{key}"])
    data = MultiTaskDataModule(sources=[BundledDataset("tiny")], tasks=tasks, cutoff=5.0, batch_size=8,
                               split=RandomSplit(0.2, 0.0, seed=0), cache_dir=str(tmp_path / "graphs"))
    trainer = quiet_trainer(limit_train_batches=2)
    trainer.fit(model, datamodule=data)
    assert torch.equal(model.normalizer.shift_K_VRH, shipped["normalizer.shift_K_VRH"])  # reused with its head
    assert float(model.normalizer.shift_G_VRH) > 5  # the new task's own statistics: GPa, not log10 GPa

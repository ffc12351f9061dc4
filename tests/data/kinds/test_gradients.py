"""The forces and stress kinds: definitions filled in and checked, labels read from ase's extxyz (EMT frames), and
the recipe's fit then predict on them."""

import json
import sys
from pathlib import Path

import ase.io
import numpy as np
import pytest
import yaml

from equiprop.cli import main
from equiprop.data.errors import ConfigError
from equiprop.data.sources import ExtXYZ
from equiprop.data.tasks import resolve_tasks

ROOT = Path(__file__).resolve().parents[3]
RECIPE = ROOT / "recipes" / "forces_emt.yaml"
sys.path.insert(0, str(ROOT / "scripts"))
from emt_frames import main as write_frames  # noqa: E402


@pytest.fixture(scope="module")
def frames(tmp_path_factory):
    path = tmp_path_factory.mktemp("emt") / "frames.extxyz"
    write_frames(["--output", str(path), "--frames", "40", "--seed", "1"])
    return path


def _tasks():
    return resolve_tasks(yaml.safe_load(RECIPE.read_text())["data"]["tasks"])


def test_definitions_take_formula_and_voigt_form_from_the_kind():
    tasks = _tasks()
    assert tasks["forces"].formula == "i" and tasks["forces"].voigt_shape is None and tasks["forces"].rank == 1
    assert tasks["stress"].formula == "ij=ji" and tasks["stress"].voigt_shape == (6,)
    assert tasks["stress"].kind_def.factor(tasks["stress"]) == 1.0
    with pytest.raises(ConfigError, match="has formula 'i'"):
        resolve_tasks([{"name": "f", "key": "f", "kind": "forces", "formula": "ij=ji", "level": "atom",
                        "units": "eV/Å", "energy": "e"}])
    with pytest.raises(ConfigError, match="names the energy task"):
        resolve_tasks([{"name": "s", "key": "s", "kind": "stress", "units": "GPa"}])


def test_labels_are_read_as_ase_writes_them(frames):
    tasks = _tasks()
    result = ExtXYZ(str(frames)).load(tasks)
    atoms = ase.io.read(frames, index=":")
    assert len(result.records) == len(atoms) == 40
    for record, frame in zip(result.records[:5], atoms[:5]):
        np.testing.assert_allclose(record.labels["forces"], frame.get_forces(), rtol=1e-12)
        assert record.labels["energy"] == pytest.approx(frame.get_potential_energy(), rel=1e-12)
        stress = frame.get_stress(voigt=False)  # (3, 3) eV/Å^3 from the file's 6 Voigt components
        np.testing.assert_allclose(record.labels["stress"], stress, rtol=1e-9, atol=1e-15)


@pytest.mark.integration
def test_fit_then_predict_writes_energy_forces_and_stress(frames, tmp_path, monkeypatch):
    """... and beside them an antisymmetric tensor ("ij=-ji", an axial vector: 1e), the antisymmetric part of
    sum_i r_i F_i, read as 9 numbers from the frames' info and predicted exactly antisymmetric."""
    monkeypatch.chdir(tmp_path)
    atoms = ase.io.read(frames, index=":")
    for frame in atoms:
        moment = (frame.positions - frame.positions.mean(0)).T @ frame.get_forces()  # eV
        frame.info["torque"] = (moment - moment.T).reshape(-1)
    ase.io.write(tmp_path / "frames.extxyz", atoms, format="extxyz")
    recipe = yaml.safe_load(RECIPE.read_text())
    recipe["data"]["sources"][0]["init_args"]["path"] = str(tmp_path / "frames.extxyz")
    recipe["data"]["tasks"].append({"name": "torque", "key": "torque", "kind": "tensor", "formula": "ij=-ji",
                                    "units": "eV"})
    recipe["data"].update(batch_size=8, cache_dir=str(tmp_path / "cache"))
    recipe["model"]["encoder"]["init_args"].update(multiplicities=[8, 4, 4])
    recipe["trainer"].update(max_epochs=2)
    (tmp_path / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    assert main(["fit", "-c", "recipe.yaml"]) in (0, None)
    checkpoint = tmp_path / "runs" / recipe["run_name"] / "best.ckpt"
    frame = ase.io.read(frames, index="0")
    ase.io.write(tmp_path / "one.extxyz", frame, format="extxyz")
    assert main(["predict", "--checkpoint", str(checkpoint), "--input", "one.extxyz", "--output", "out.json"]) == 0
    written = json.loads((tmp_path / "out.json").read_text())
    assert written["units"] == {"energy": "eV", "forces": "eV/Å", "stress": "eV/Å^3", "torque": "eV"}
    assert written["per_atom"] == ["forces"]
    row = written["predictions"][0]
    forces = np.array(row["forces"])
    assert forces.shape == (len(frame), 3) and np.abs(forces.sum(0)).max() < 1e-4  # conservative: no net force
    assert len(row["stress"]) == 6 and isinstance(row["energy"], float)
    torque = np.array(row["torque"])
    assert torque.shape == (3, 3) and np.abs(torque).max() > 0
    np.testing.assert_allclose(torque, -torque.T, atol=1e-6 * np.abs(torque).max())

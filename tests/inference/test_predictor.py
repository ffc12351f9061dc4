"""Deep ensembles and MC dropout on real (tiny, few-batch) checkpoints: sigma in physical units per component."""

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from pymatgen.core import Structure

from equiprop import Predictor
from equiprop.cli import main
from equiprop.data.datamodule import MultiTaskDataModule
from equiprop.data.sources import BundledDataset
from equiprop.data.splits import RandomSplit
from equiprop.uncertainty import load_predictor
from equiprop.workflows.calibrate import calibrate, write_manifest

TASKS = ["Ef", "Eg", "eps_electronic", "elastic_tensor"]
OUTPUTS = TASKS + ["K_Voigt", "G_Voigt"]


def tiny_data(root: Path) -> MultiTaskDataModule:
    return MultiTaskDataModule(sources=[BundledDataset("tiny")], tasks=TASKS, cutoff=4.5,
                               split=RandomSplit(0.25, 0.25, seed=0), batch_size=8, cache_dir=str(root / "cache"))


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_checkpoint) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("ensemble")
    def train(seed: int, dropout: float = 0.0) -> Path:
        return tiny_checkpoint(root / f"s{seed}_d{dropout}.ckpt", TASKS, seed=seed, dropout=dropout, train_batches=3,
                               split=(0.25, 0.25))

    return {"a": train(0), "b": train(1), "dropout": train(2, dropout=0.3), "root": root}


@pytest.fixture(scope="module")
def structures(trained, tiny_entries) -> list[Structure]:
    """Six structures of elements every member was trained on (the others are refused, as they should be)."""
    from equiprop.data.record import from_pymatgen

    every = load_predictor([trained["a"], trained["b"], trained["dropout"]], warn=False)
    kept = [Structure.from_dict(e["structure"]) for e in tiny_entries]
    return [s for s in kept if not every.unseen_elements(from_pymatgen(s, "x"))][:6]


def test_identical_members_give_exactly_zero_sigma_and_the_single_model_mean(trained, structures):
    ensemble = load_predictor([trained["a"], trained["a"]], warn=False)
    single = Predictor.from_checkpoint(trained["a"], warn=False).predict(structures)
    assert ensemble.has_uncertainty
    for row, reference in zip(ensemble.predict(structures), single):
        for name in OUTPUTS:
            np.testing.assert_allclose(row[name], reference[name], rtol=1e-12, atol=1e-12)
            assert np.all(np.asarray(row[name + "_std"]) == 0.0)


def test_different_members_give_the_spread_of_their_predictions_per_component(trained, structures):
    ensemble = load_predictor([trained["a"], trained["b"]], warn=False).predict(structures)
    members = [Predictor.from_checkpoint(trained[k], warn=False).predict(structures) for k in ("a", "b")]
    for i, row in enumerate(ensemble):
        for name in OUTPUTS:
            values = np.stack([np.asarray(m[i][name]) for m in members])
            np.testing.assert_allclose(row[name], values.mean(0), rtol=1e-10, atol=1e-12)
            np.testing.assert_allclose(row[name + "_std"], values.std(0), rtol=1e-10, atol=1e-12)
        assert row["Ef_std"] > 0 and row["Eg_std"] > 0
        assert np.shape(row["elastic_tensor_std"]) == (6, 6) and np.shape(row["eps_electronic_std"]) == (3, 3)
        assert np.all(np.diag(row["elastic_tensor_std"])[:3] > 0)  # C11, C22, C33 (GPa)


def test_mc_dropout_gives_a_reproducible_positive_sigma_and_none_without_samples(trained, structures):
    sampled = load_predictor([trained["dropout"]], mc_samples=8, warn=False)
    first, again = sampled.predict(structures), sampled.predict(structures)
    assert all(row["Ef_std"] > 0 and np.all(np.diag(row["eps_electronic_std"]) > 0) for row in first)
    assert [r["Ef"] for r in first] == [r["Ef"] for r in again]  # seeded masks
    plain = load_predictor([trained["dropout"]], warn=False)
    assert not plain.has_uncertainty and "Ef_std" not in plain.predict(structures)[0]
    deterministic = Predictor.from_checkpoint(trained["dropout"], warn=False)  # dropout is off in eval
    assert deterministic.predict(structures)[0]["Ef"] == deterministic.predict(structures)[0]["Ef"]


def test_mc_samples_on_a_model_without_dropout_is_said_not_faked(trained):
    predictor = load_predictor([trained["a"]], mc_samples=5, warn=False)
    assert not predictor.has_uncertainty
    assert any("no member was trained with model.dropout" in n for n in predictor.notices)


def test_calibration_manifest_scales_sigma_and_lists_its_members(trained, structures, tmp_path):
    predictor = load_predictor([trained["a"], trained["b"]], warn=False)
    data = tiny_data(trained["root"])
    data.setup("test")
    results = calibrate(predictor, data)
    assert {"Ef", "Eg", "eps_electronic", "elastic_tensor"} <= set(results)
    for r in results.values():
        assert r["std_scale"] > 0 and 0 <= r["test"]["within_1sigma"] <= 1
    manifest = tmp_path / "ensemble.json"
    write_manifest(manifest, [str(trained["a"]), str(trained["b"])], 0, results, {})
    scaled = load_predictor([manifest], warn=False).predict(structures)
    raw = predictor.predict(structures)
    for s, r in zip(scaled, raw):
        assert s["Ef_std"] == pytest.approx(r["Ef_std"] * results["Ef"]["std_scale"])
        assert s["Ef"] == r["Ef"]
    assert json.loads(manifest.read_text())["units"]["Ef"] == "eV/atom"


def test_predict_command_writes_std_columns_with_units(trained, structures, tmp_path):
    folder = tmp_path / "cifs"
    folder.mkdir()
    for i, s in enumerate(structures[:3]):
        s.to(filename=str(folder / f"s{i}.cif"))
    out = tmp_path / "out.csv"
    assert main(["predict", "--checkpoint", str(trained["a"]), str(trained["b"]), "--input", str(folder),
                 "--output", str(out)]) == 0
    with out.open() as f:
        rows = list(csv.DictReader(f))
    assert "Ef_std [eV/atom]" in rows[0] and "elastic_tensor_std [GPa]" in rows[0]
    assert all(float(r["Ef_std [eV/atom]"]) > 0 for r in rows)

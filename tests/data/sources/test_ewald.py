"""A per-atom task end to end: Ewald site potentials as labels (checked against the Madelung constant), per-atom
graphs, statistics and masks, the symmetry battery on per-atom scalars and tensors, a real fit, and ``equiprop
predict`` writing one value per atom in the input's atom order."""

import json
import tempfile
from pathlib import Path

import ase.io
import numpy as np
import pytest
import torch
import yaml
from pymatgen.core import Structure
from torch_geometric.data import Batch

from equiprop.cli import main
from equiprop.data import keys
from equiprop.data.datamodule import MultiTaskDataModule
from equiprop.data.graph import record_to_graph
from equiprop.data.record import CrystalRecord, from_pymatgen
from equiprop.data.sources import BundledDataset
from equiprop.data.sources.ewald import EwaldSitePotentials, ewald_site_potentials
from equiprop.data.splits import RandomSplit
from equiprop.nn import EquivariantEncoder
from equiprop.testing import assert_model_symmetries, permuted
from equiprop.train.module import MultiTaskModel

RECIPE = Path(__file__).parents[3] / "recipes" / "ewald_site_potential.yaml"
EWALD = yaml.safe_load(RECIPE.read_text())["data"]["tasks"][0]  # the task as the recipe defines it
COULOMB = 14.399645  # e^2 / (4 pi eps0), eV Å
MADELUNG_ROCKSALT = 1.747565


def rocksalt(a: float = 5.64) -> CrystalRecord:
    """Conventional NaCl cell: Na at even, Cl at odd corners of the half-cell grid."""
    grid = np.array([[i, j, k] for i in (0, 1) for j in (0, 1) for k in (0, 1)])
    return CrystalRecord("NaCl", np.eye(3) * a, grid * a / 2, np.where(grid.sum(1) % 2, 17, 11))


def test_rocksalt_potentials_are_the_madelung_potential():
    record = rocksalt()
    potentials = ewald_site_potentials(record)
    expected = MADELUNG_ROCKSALT * COULOMB / (5.64 / 2)  # 8.92 V; negative at the cation (surrounded by anions)
    np.testing.assert_allclose(potentials, np.where(record.numbers == 11, -expected, expected), rtol=1e-5)


@pytest.fixture(scope="module")
def datamodule():
    dm = MultiTaskDataModule(sources=[EwaldSitePotentials("tiny"), BundledDataset("tiny")], tasks=[EWALD, "Ef"],
                             cutoff=4.5, split=RandomSplit(0.2, 0.2, seed=0), batch_size=8,
                             cache_dir=tempfile.mkdtemp())
    dm.setup("fit")
    return dm


def test_labels_masks_and_statistics_are_per_atom(datamodule):
    source = datamodule.report["sources"][0]
    assert source["skipped"]["no oxidation states"]["count"] > 0  # metals: skipped and counted, not dropped
    batch = next(iter(datamodule.train_dataloader()))
    label, mask = batch[keys.label_key(EWALD["name"])], batch[keys.mask_key(EWALD["name"])]
    assert label.shape == mask.shape == (batch.num_nodes,) and batch[keys.label_key("Ef")].shape == (batch.num_graphs,)
    assert (label[~mask] == 0).all()
    train = datamodule.subsets["train"]
    atoms = [v for g in train for v in g[keys.label_key(EWALD["name"])][g[keys.mask_key(EWALD["name"])]].tolist()]
    stats = datamodule.normalization[EWALD["name"]]
    assert stats.count == len(atoms) > len(train)  # over labelled atoms, not structures
    assert stats.shift == pytest.approx(np.mean(atoms)) and stats.scale == pytest.approx(np.std(atoms))
    structures = sum(bool(g[keys.mask_key(EWALD["name"])].any()) for g in train)
    assert datamodule.report["label_counts"]["train"][EWALD["name"]] == structures


@pytest.mark.usefixtures("float64")
def test_per_atom_outputs_pass_the_symmetry_battery(tiny_entries):
    torch.manual_seed(0)
    born = {"name": "born_like", "key": "born", "units": "e", "kind": "tensor", "formula": "ij", "level": "atom"}
    encoder = EquivariantEncoder(cutoff=4.5, max_ell=2, multiplicities=[8, 4, 4], num_layers=2)
    model = MultiTaskModel(encoder, [EWALD, born, "Ef", "eps_electronic"])
    for p in model.parameters():  # nonzero everywhere, so a broken symmetry cannot hide behind a zero output
        p.data += 0.1 * torch.randn_like(p)
    records = [from_pymatgen(Structure.from_dict(e["structure"]), str(i)) for i, e in enumerate(tiny_entries[:3])]
    assert_model_symmetries(model, records)
    batch = Batch.from_data_list([record_to_graph(r, {}, 4.5) for r in records])
    out = model.eval().predict_physical(batch)
    assert out["born_like"].shape == (batch.num_nodes, 3, 3) and out[EWALD["name"]].shape == (batch.num_nodes,)
    assert out["Ef"].shape == (3,) and out["born_like"].abs().min() > 0


@pytest.mark.integration
def test_fit_then_predict_writes_one_potential_per_atom(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    recipe = yaml.safe_load(RECIPE.read_text())
    recipe["data"]["sources"] = [{"class_path": s["class_path"], "init_args": {"dataset": "tiny"}}
                                 for s in recipe["data"]["sources"]]
    recipe["data"].update(split={"class_path": "equiprop.data.splits.RandomSplit",
                                 "init_args": {"val_fraction": 0.2, "test_fraction": 0.2}},
                          batch_size=8, cache_dir=str(tmp_path / "cache"))
    recipe["model"]["encoder"]["init_args"].update(multiplicities=[8, 4, 4])
    recipe["trainer"].update(max_epochs=3)
    (tmp_path / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    assert main(["fit", "-c", "recipe.yaml"]) in (0, None)
    checkpoint = tmp_path / "runs" / recipe["run_name"] / "best.ckpt"
    stored = torch.load(checkpoint, weights_only=True)
    assert stored["equiprop"]["tasks"][EWALD["name"]]["level"] == "atom"

    record = rocksalt()
    order = np.array([3, 0, 7, 1, 2, 6, 4, 5])
    for name, crystal in (("NaCl", record), ("NaCl_permuted", permuted(record, order))):  # extxyz keeps atom order
        atoms = crystal.to_ase()
        atoms.info["id"] = name
        ase.io.write(tmp_path / f"{name}.extxyz", atoms, format="extxyz")
    assert main(["predict", "--checkpoint", str(checkpoint), "--input", "NaCl.extxyz", "NaCl_permuted.extxyz",
                 "--output", "out.json"]) == 0
    written = json.loads((tmp_path / "out.json").read_text())
    assert written["units"][EWALD["name"]] == "V" and written["units"]["Ef"] == "eV/atom"
    assert written["per_atom"] == [EWALD["name"]]
    rows = {r["id"]: r for r in written["predictions"]}
    potentials = np.array(rows["NaCl"][EWALD["name"]])
    assert potentials.shape == (8,) and isinstance(rows["NaCl"]["Ef"], float)
    np.testing.assert_allclose(np.array(rows["NaCl_permuted"][EWALD["name"]]), potentials[order], rtol=1e-5)
    np.testing.assert_allclose(potentials[record.numbers == 11], potentials[record.numbers == 11][0], rtol=1e-5)

"""The ``class`` task kind (``equiprop.data.kinds.classes``), the worked example of a new kind: crystal systems of the
bundled tiny structures (spglib through pymatgen) learned beside the formation energy, in a real fit, a real
checkpoint and ``equiprop predict``."""

import json
import warnings

import lightning as L
import numpy as np
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from pymatgen.core import Structure
from pymatgen.symmetry.analyzer import SpacegroupAnalyzer

from equiprop.cli import main
from equiprop.data.keys import label_key, mask_key
from equiprop.data.datamodule import MultiTaskDataModule
from equiprop.data.errors import ConfigError, DataError
from equiprop.data.record import from_pymatgen_dict
from equiprop.data.sources import RecordsJSON
from equiprop.data.splits import RandomSplit
from equiprop.data.tasks import resolve_task
from equiprop.nn import EquivariantEncoder
from equiprop.testing import assert_model_symmetries
from equiprop.train.module import MultiTaskModel

SYSTEMS = ["triclinic", "monoclinic", "orthorhombic", "tetragonal", "trigonal", "hexagonal", "cubic"]
CRYSTAL_SYSTEM = {"name": "crystal_system", "key": "crystal_system", "units": "class", "kind": "class",
                  "classes": SYSTEMS}


def crystal_system(structure: Structure) -> str:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return SpacegroupAnalyzer(structure, symprec=0.1).get_crystal_system()


def test_a_class_label_is_a_listed_name_or_its_index_and_anything_else_is_refused_by_entry():
    task = resolve_task(CRYSTAL_SYSTEM)
    assert task.parse("cubic", "mp-1") == 6.0 and task.parse(1, "mp-1") == 1.0 and task.parse("2", "mp-1") == 2.0
    assert task.parse("na", "mp-1") is None  # a missing label, masked
    for bad, message in (("cubik", "unknown class 'cubik'"), (7, "outside 0..6"), (1.5, "outside 0..6")):
        with pytest.raises(DataError, match=message) as err:
            task.parse(bad, "mp-42")
        assert "mp-42" in str(err.value)
    assert task.output_units == "probability of each class: " + ", ".join(SYSTEMS)
    with pytest.raises(ConfigError, match="at least two distinct classes"):
        resolve_task(dict(CRYSTAL_SYSTEM, classes=["cubic", "cubic"]))
    with pytest.raises(ConfigError, match="classes are for kind 'class'"):
        resolve_task({"name": "x", "key": "x", "units": "eV", "classes": ["a", "b"]})


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_entries, quiet_trainer):
    root = tmp_path_factory.mktemp("classes")
    entries = [dict(e, crystal_system=crystal_system(Structure.from_dict(e["structure"]))) for e in tiny_entries]
    entries[0]["crystal_system"] = "icosahedral"  # not a crystal system: refused and counted, the entry kept
    (root / "systems.json").write_text(json.dumps({"meta": {}, "entries": entries}))
    tasks = ["Ef", CRYSTAL_SYSTEM]
    L.seed_everything(0)
    data = MultiTaskDataModule(sources=[RecordsJSON(str(root / "systems.json"))], tasks=tasks, cutoff=4.5,
                               split=RandomSplit(0.25, 0.0, seed=0), batch_size=8, cache_dir=str(root / "cache"))
    model = MultiTaskModel(EquivariantEncoder(cutoff=4.5, max_ell=1, multiplicities=[8, 4], num_layers=1), tasks)
    trainer = quiet_trainer(max_epochs=3, enable_checkpointing=True,
                            callbacks=[ModelCheckpoint(dirpath=root / "run", save_last=True)])
    trainer.fit(model, datamodule=data)
    return root, model, data, trainer, entries


def test_a_fit_learns_class_logits_with_cross_entropy_and_reports_accuracy(trained):
    root, model, data, trainer, entries = trained
    label_skips = data.report["sources"][0]["labels_skipped"]
    assert label_skips["crystal_system: unknown class"]["count"] == 1, label_skips
    assert model.heads["crystal_system"].irreps_out.dim == len(SYSTEMS)
    accuracy = float(trainer.callback_metrics["val/crystal_system/accuracy"])
    assert 0.0 <= accuracy <= 1.0
    assert np.isfinite(float(trainer.callback_metrics["val/crystal_system/loss"]))
    majority = np.bincount([SYSTEMS.index(e["crystal_system"]) for e in entries[1:]]).max() / (len(entries) - 1)
    assert majority < 1.0  # more than one system in the data: a class task, not a constant
    # the training labels' cross-entropy fell below that of uniform logits, log(7): the logits learned the labels
    model.eval()
    with torch.no_grad():
        losses = [model.tasks["crystal_system"].kind_def.loss(
            model(batch, ["crystal_system"])["crystal_system"][batch[mask_key("crystal_system")]],
            batch[label_key("crystal_system")][batch[mask_key("crystal_system")]], "mae")[0]
            for batch in data.train_dataloader()]
    assert float(torch.stack(losses).mean()) < np.log(len(SYSTEMS))


def test_class_probabilities_are_invariant_and_written_with_their_class_order(trained, tiny_entries, tmp_path):
    root, model, *_ = trained
    records = [from_pymatgen_dict(e["structure"], e["material_id"]) for e in tiny_entries[:3]]
    assert_model_symmetries(model, records, checks=("rotation", "inversion", "translation", "permutation"))

    inputs = tmp_path / "in"
    inputs.mkdir()
    for e in tiny_entries[:3]:
        Structure.from_dict(e["structure"]).to(filename=str(inputs / f"{e['material_id']}.cif"))
    out = tmp_path / "p.json"
    assert main(["predict", "--checkpoint", str(root / "run" / "last.ckpt"), "--input", str(inputs), "--output",
                 str(out), "--allow-unseen-elements"]) == 0
    written = json.loads(out.read_text())
    assert written["units"]["crystal_system"] == "probability of each class: " + ", ".join(SYSTEMS)
    for row in written["predictions"]:
        assert len(row["crystal_system"]) == len(SYSTEMS) and abs(sum(row["crystal_system"]) - 1.0) < 1e-6

"""Tiny real checkpoints (one-epoch trainings on the fixture structures) and input files for the screen tests."""

import json
from pathlib import Path

import lightning as L
import pytest
from pymatgen.core import Structure
from pymatgen.io.cif import CifWriter

from equiprop.data.datamodule import MultiTaskDataModule
from equiprop.data.sources import RecordsJSON
from equiprop.data.splits import RandomSplit
from equiprop.nn import InvariantEncoder
from equiprop.train.module import MultiTaskModel

TASKS = ["Ef", "Eg", "eps_electronic", "elastic_tensor"]


def train(root: Path, fixture: Path, seed: int) -> Path:
    L.seed_everything(seed)
    data = MultiTaskDataModule(sources=[RecordsJSON(str(fixture))], tasks=TASKS, cutoff=4.5,
                               split=RandomSplit(0.2, 0.2, seed=0), batch_size=8, cache_dir=str(root / "cache"))
    model = MultiTaskModel(InvariantEncoder(cutoff=4.5, num_features=16, num_layers=1, num_basis=8), TASKS)
    trainer = L.Trainer(max_epochs=1, limit_train_batches=2, limit_val_batches=1, accelerator="cpu",
                        enable_progress_bar=False, logger=False, enable_checkpointing=False,
                        enable_model_summary=False, default_root_dir=str(root))
    trainer.fit(model, datamodule=data)
    path = root / f"model_s{seed}.ckpt"
    trainer.save_checkpoint(path)
    return path


@pytest.fixture(scope="session")
def checkpoints(tmp_path_factory, tiny_multitask_path) -> list[Path]:
    """Two members of an ensemble (seeds 0 and 1)."""
    root = tmp_path_factory.mktemp("screen_models")
    return [train(root, tiny_multitask_path, seed) for seed in (0, 1)]


@pytest.fixture(scope="session")
def cif_folder(tmp_path_factory, tiny_entries) -> Path:
    """The 58 fixture structures as CIF files."""
    folder = tmp_path_factory.mktemp("cifs")
    for e in tiny_entries:
        (folder / f"{e['material_id']}.cif").write_text(str(CifWriter(Structure.from_dict(e["structure"]))))
    return folder


@pytest.fixture
def selection_recipe(tmp_path):
    def write(section: dict) -> Path:
        path = tmp_path / f"selection_{len(list(tmp_path.glob('selection_*')))}.yaml"
        path.write_text(json.dumps({"selection": section}))  # JSON is YAML
        return path

    return write

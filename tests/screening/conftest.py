"""Tiny real checkpoints (one-epoch trainings on the fixture structures) and input files for the screen tests."""

import json
from pathlib import Path

import pytest
from pymatgen.core import Structure
from pymatgen.io.cif import CifWriter

from equiprop.data.sources import RecordsJSON
from equiprop.nn import InvariantEncoder

TASKS = ["Ef", "Eg", "eps_electronic", "elastic_tensor"]


@pytest.fixture(scope="session")
def checkpoints(tmp_path_factory, tiny_multitask_path, tiny_checkpoint) -> list[Path]:
    """Two members of an ensemble (seeds 0 and 1)."""
    root = tmp_path_factory.mktemp("screen_models")
    return [tiny_checkpoint(root / f"model_s{seed}.ckpt", TASKS, seed=seed, source=RecordsJSON(str(tiny_multitask_path)),
                            encoder=lambda: InvariantEncoder(cutoff=4.5, num_features=16, num_layers=1, num_basis=8))
            for seed in (0, 1)]


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

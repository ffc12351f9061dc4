import pytest

from equiprop.data.datamodule import MultiTaskDataModule
from equiprop.data.sources import BundledDataset
from equiprop.data.splits import RandomSplit
from equiprop.nn import EquivariantEncoder
from equiprop.train.module import MultiTaskModel

TINY_TASKS = ["Ef", "Eg", "K_VRH", "G_VRH", "eps_electronic", "eps_total", "elastic_tensor"]


@pytest.fixture
def tiny_data(tmp_path):
    return MultiTaskDataModule(sources=[BundledDataset("tiny")], tasks=TINY_TASKS, cutoff=4.5,
                               split=RandomSplit(0.2, 0.2, seed=0), batch_size=8, cache_dir=str(tmp_path / "cache"))


@pytest.fixture
def small_model():
    """Factory of a small equivariant model on the tiny tasks."""

    def make(**kwargs) -> MultiTaskModel:
        encoder = EquivariantEncoder(cutoff=4.5, max_ell=2, multiplicities=[16, 8, 4], num_layers=2)
        return MultiTaskModel(encoder, TINY_TASKS, **kwargs)

    return make

import copy

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


# a tiny fit recipe for the command line (in-process via equiprop.cli.main): a few batches, seconds
CLI_RECIPE = {
    "run_name": "tiny",
    "seed_everything": 0,
    "trainer": {"max_epochs": 1, "accelerator": "cpu", "log_every_n_steps": 1, "limit_train_batches": 2,
                "limit_val_batches": 1, "enable_progress_bar": False, "enable_model_summary": False},
    "model": {"encoder": {"class_path": "equiprop.nn.EquivariantEncoder",
                          "init_args": {"max_ell": 1, "multiplicities": [8, 4], "num_layers": 1}}},
    "data": {"sources": [{"class_path": "equiprop.data.sources.BundledDataset", "init_args": {"dataset": "tiny"}}],
             "tasks": ["Ef", "Eg"], "cutoff": 4.5, "batch_size": 8,
             "split": {"class_path": "equiprop.data.splits.RandomSplit",
                       "init_args": {"val_fraction": 0.25, "test_fraction": 0.25}}},
}


@pytest.fixture
def cli_recipe():
    """A fresh copy of CLI_RECIPE (a dict) to change and write."""
    return copy.deepcopy(CLI_RECIPE)

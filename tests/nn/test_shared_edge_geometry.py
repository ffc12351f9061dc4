"""Tensor readouts share one edge geometry per forward (EdgeGeometryBlock): the model's outputs equal those of each
readout computing its own neighbour-shell harmonics, for every combination of tasks asked for."""

import pytest
import torch
from pymatgen.core import Structure
from torch_geometric.data import Batch

from equiprop.data.graph import record_to_graph
from equiprop.data.record import from_pymatgen
from equiprop.nn import EquivariantEncoder
from equiprop.train.module import MultiTaskModel

TASKS = ["Ef", "eps_electronic", "elastic_tensor", "piezo_tensor"]


@pytest.fixture(scope="module")
def batch(tiny_entries):
    records = [from_pymatgen(Structure.from_dict(e["structure"]), f"tiny-{i}") for i, e in enumerate(tiny_entries[:6])]
    return Batch.from_data_list([record_to_graph(r, {}, 4.5) for r in records])


@pytest.mark.parametrize("tasks", [TASKS, ["elastic_tensor"], ["Ef", "piezo_tensor"]])
def test_shared_geometry_equals_each_readout_on_its_own(batch, tasks):
    torch.manual_seed(0)
    model = MultiTaskModel(EquivariantEncoder(cutoff=4.5, max_ell=2, multiplicities=[8, 4, 4], num_layers=1), TASKS,
                           environment_channels=4).eval()
    assert model.edge_geometry.ells == [1, 2, 3, 4]  # piezo 1o/3o, dielectric 2e, elastic 2e/4e
    with torch.no_grad():
        shared = model(batch, tasks)
        features = model.encoder(batch)
        alone = {name: model.heads[name](features, batch) for name in tasks}
    assert set(shared) == set(tasks)
    for name in tasks:
        assert torch.allclose(shared[name], alone[name], atol=1e-6), name

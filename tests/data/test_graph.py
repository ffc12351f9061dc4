import numpy as np
import pytest
import torch
from ase.neighborlist import neighbor_list
from e3nn import o3
from torch_geometric.data import Batch

from equiprop.data import keys
from equiprop.data.graph import edge_vectors, neighbour_list, record_to_graph
from equiprop.data.record import from_pymatgen_dict
from equiprop.data.tasks import resolve_tasks


@pytest.fixture(scope="module")
def records(tiny_entries):
    return [from_pymatgen_dict(e["structure"], e["material_id"], labels={
        k: np.array(e[k]) for k in ("Ef", "eps_electronic") if e[k] is not None}) for e in tiny_entries[:12]]


def test_neighbour_list_matches_ase(records):
    for record in records:
        edges, shifts = neighbour_list(record, cutoff=4.5)
        i, j, S = neighbor_list("ijS", record.to_ase(), 4.5)
        ours = {(a, b, *s) for a, b, s in zip(*edges, shifts.astype(int))}
        assert ours == {(a, b, *s) for a, b, s in zip(i, j, S)}


def test_max_neighbors_keeps_the_nearest(records):
    record = records[0]
    full, full_shifts = neighbour_list(record, cutoff=6.0)
    capped, capped_shifts = neighbour_list(record, cutoff=6.0, max_neighbors=8)
    d_full = np.linalg.norm(record.positions[full[1]] + full_shifts @ record.cell - record.positions[full[0]], axis=1)
    d_cap = np.linalg.norm(record.positions[capped[1]] + capped_shifts @ record.cell - record.positions[capped[0]],
                           axis=1)
    for center in range(record.num_atoms):
        mine = np.sort(d_cap[capped[0] == center])
        assert len(mine) == 8
        np.testing.assert_allclose(mine, np.sort(d_full[full[0] == center])[:8])


def test_edge_vectors_rotate_and_carry_gradients(records):
    tasks = resolve_tasks(["Ef", "eps_electronic"])
    graphs = [record_to_graph(r, tasks, cutoff=5.0) for r in records[:4]]
    batch = Batch.from_data_list(graphs)
    vectors = edge_vectors(batch)
    assert vectors.norm(dim=1).max() <= 5.0 + 1e-5 and vectors.norm(dim=1).min() > 0.5
    R = o3.rand_matrix()
    rotated = batch.clone()
    rotated[keys.POSITIONS] = batch[keys.POSITIONS] @ R.T
    rotated[keys.CELL] = batch[keys.CELL] @ R.T
    torch.testing.assert_close(edge_vectors(rotated), vectors @ R.T, atol=1e-5, rtol=1e-5)
    batch[keys.POSITIONS].requires_grad_(True)
    edge_vectors(batch).norm(dim=1).sum().backward()
    assert batch[keys.POSITIONS].grad.abs().sum() > 0


def test_labels_and_masks_on_graphs(records):
    tasks = resolve_tasks(["Ef", "eps_electronic"])
    for record in records:
        graph = record_to_graph(record, tasks, cutoff=5.0)
        for name in tasks:
            assert bool(graph[keys.mask_key(name)]) == (name in record.labels)
        if "eps_electronic" in record.labels:
            np.testing.assert_allclose(graph[keys.label_key("eps_electronic")][0].numpy(),
                                       record.labels["eps_electronic"], rtol=1e-6)
        assert graph[keys.label_key("eps_electronic")].shape == (1, 3, 3)


def test_a_task_named_like_an_index_batches_unchanged(records, tmp_path):
    """PyG offsets keys containing "index" by the node count; a label or mask key never is (refractive_index crashed
    the matbench_dielectric run with int masks, and would have shifted its labels)."""
    from equiprop.data.dataset import GraphDataset

    tasks = resolve_tasks(["refractive_index", {"name": "x_index", "kind": "tensor", "formula": "ij=ji",
                                                "key": "x_index", "units": "dimensionless"}])
    labelled = [type(r)(r.id, r.cell, r.positions, r.numbers, labels={"refractive_index": 1.5 + i,
                                                                       "x_index": np.eye(3) * (2.0 + i)})
                for i, r in enumerate(records[:5])]
    graphs = [record_to_graph(r, tasks, cutoff=5.0) for r in labelled]
    GraphDataset(graphs).save_to(tmp_path / "graphs.pt")
    for batch in (Batch.from_data_list(graphs), Batch.from_data_list(list(GraphDataset.load_from(tmp_path / "graphs.pt")))):
        assert batch[keys.mask_key("refractive_index")].dtype == torch.bool
        assert batch[keys.mask_key("refractive_index")].tolist() == [True] * 5
        np.testing.assert_allclose(batch[keys.label_key("refractive_index")].numpy(), [1.5, 2.5, 3.5, 4.5, 5.5])
        assert batch[keys.label_key("x_index")].shape == (5, 3, 3)
        np.testing.assert_allclose(batch[keys.label_key("x_index")][:, 0, 0].numpy(), [2.0, 3.0, 4.0, 5.0, 6.0])

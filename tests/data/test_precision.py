"""Autocast regions (data/precision.py): float32 inside under autocast, untouched outside it."""

import torch
from torch_geometric.data import Batch

from equiprop.data.graph import atoms_per_graph, edge_vectors, record_to_graph
from equiprop.data.precision import full_precision
from equiprop.data.record import from_pymatgen_dict


@full_precision
def seen(x: torch.Tensor, scale: torch.Tensor) -> tuple:
    """What a wrapped function receives: its arguments and whether autocast is on inside it."""
    return x, scale, torch.is_autocast_enabled("cpu")


def test_outside_autocast_arguments_pass_as_they_are():
    x, scale = torch.ones(3, dtype=torch.float64), torch.ones(2, dtype=torch.bfloat16)
    got_x, got_scale, autocast = seen(x, scale=scale)
    assert got_x is x and got_scale is scale and not autocast  # not even a cast: float32/64 runs unchanged


def test_under_autocast_reduced_inputs_are_cast_up_and_autocast_is_off_inside():
    x, scale = torch.ones(3, dtype=torch.float64), torch.ones(2, dtype=torch.bfloat16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got_x, got_scale, autocast = seen(x, scale=scale)
        assert torch.is_autocast_enabled("cpu")  # back on after the call
    assert got_x is x and got_scale.dtype == torch.float32 and not autocast


def test_edge_vectors_stay_float32_under_autocast(tiny_entries):
    """Edge vectors are an einsum with the cell (a bf16 matmul under autocast, 0.03 Å off for a 10 Å shift)."""
    graphs = [record_to_graph(from_pymatgen_dict(e["structure"], e["material_id"]), {}, 4.5) for e in tiny_entries[:4]]
    batch = Batch.from_data_list(graphs)
    reference = edge_vectors(batch)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = edge_vectors(batch)
    assert mixed.dtype == torch.float32 and torch.equal(mixed, reference)
    # a collated batch counts its atoms from ptr (no device->host sync), as bincount did
    assert torch.equal(atoms_per_graph(batch), torch.bincount(batch.batch, minlength=batch.num_graphs))

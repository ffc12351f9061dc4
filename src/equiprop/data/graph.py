"""Periodic radius graphs: vesin neighbour lists with image shifts; edge vectors recomputed in torch.

Only integer image shifts are stored. ``edge_vectors`` recomputes ``pos[j] + shift @ cell - pos[i]`` in torch, so
gradients with respect to positions and cell, and rotations of the input, flow through the edges.
"""

from __future__ import annotations

import numpy as np
import torch
from torch_geometric.data import Data

from equiprop.data import keys
from equiprop.data.errors import DataError
from equiprop.data.record import CrystalRecord
from equiprop.data.tasks import TaskSpec


def neighbour_list(record: CrystalRecord, cutoff: float, max_neighbors: int | None = None
                   ) -> tuple[np.ndarray, np.ndarray]:
    """(2, num_edges) [i, j] and (num_edges, 3) integer shifts for all pairs closer than ``cutoff`` Å.

    With ``max_neighbors``, each center keeps only its nearest ones. Raises DataError if an atom has no neighbour.
    """
    from vesin import NeighborList

    i, j, shifts, d = NeighborList(cutoff=cutoff, full_list=True).compute(
        record.positions, record.cell, record.pbc, quantities="ijSd")
    if max_neighbors is not None:
        order = np.lexsort((d, i))  # by center, then distance
        i, j, shifts, d = i[order], j[order], shifts[order], d[order]
        first = np.searchsorted(i, i)  # index of each center's first edge
        keep = (np.arange(len(i)) - first) < max_neighbors
        i, j, shifts = i[keep], j[keep], shifts[keep]
    isolated = np.setdiff1d(np.arange(record.num_atoms), i)
    if len(isolated):
        raise DataError(record.id, f"atom {int(isolated[0])} has no neighbour within the {cutoff} Å cutoff",
                        "atom with no neighbour within the cutoff")
    return np.stack([i, j]).astype(np.int64), shifts.astype(np.float64)


def record_to_graph(record: CrystalRecord, tasks: dict[str, TaskSpec], cutoff: float,
                    max_neighbors: int | None = None) -> Data:
    """A PyG ``Data`` holding structure, edges, and per-task model-space labels with masks."""
    edge_index, shifts = neighbour_list(record, cutoff, max_neighbors)
    data = {
        keys.POSITIONS: torch.as_tensor(record.positions, dtype=torch.get_default_dtype()),
        keys.ATOMIC_NUMBERS: torch.as_tensor(record.numbers, dtype=torch.long),
        keys.CELL: torch.as_tensor(record.cell, dtype=torch.get_default_dtype()).unsqueeze(0),
        keys.PBC: torch.as_tensor(record.pbc).unsqueeze(0),
        keys.EDGE_INDEX: torch.as_tensor(edge_index),
        keys.EDGE_CELL_SHIFT: torch.as_tensor(shifts, dtype=torch.get_default_dtype()),
        keys.STRUCTURE_ID: record.id,
        keys.CHEMICAL_SYSTEM: record.chemical_system,
    }
    for name, task in tasks.items():
        present = name in record.labels
        value = task.to_model(record.labels[name]) if present else np.zeros(task.model_shape)
        data[keys.label_key(name)] = torch.as_tensor(value, dtype=torch.get_default_dtype()).unsqueeze(0)
        data[keys.mask_key(name)] = torch.tensor([present])
    return Data(num_nodes=record.num_atoms, **data)


def edge_vectors(data) -> torch.Tensor:
    """(num_edges, 3) pos[j] + shift @ cell - pos[i], for one graph or a PyG batch."""
    i, j = data[keys.EDGE_INDEX]
    cell = data[keys.CELL]  # (num_graphs, 3, 3)
    batch = data[keys.BATCH] if keys.BATCH in data and data[keys.BATCH] is not None else None
    edge_cell = cell[batch[i]] if batch is not None else cell[0].expand(len(i), 3, 3)
    shift = torch.einsum("ek,ekl->el", data[keys.EDGE_CELL_SHIFT].to(cell.dtype), edge_cell)
    return data[keys.POSITIONS][j] + shift - data[keys.POSITIONS][i]

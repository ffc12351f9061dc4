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
from equiprop.data.precision import full_precision
from equiprop.data.record import CrystalRecord
from equiprop.data.tasks import TaskSpec


# an extended radius puts the most isolated atom's min_neighbors-th neighbour at 1/1.25 = 80% of it, inside the
# envelope, rather than at its edge where the envelope is zero
EXTENDED_RADIUS_FACTOR = 1.25
MAX_RADIUS_FACTOR = 2.0  # never extend beyond 2x the cutoff: an atom that far from all others is not a crystal


def _pairs(record: CrystalRecord, radius: float):
    from vesin import NeighborList

    return NeighborList(cutoff=radius, full_list=True).compute(record.positions, record.cell, record.pbc,
                                                               quantities="ijSd")


def neighbour_list(record: CrystalRecord, cutoff: float, max_neighbors: int | None = None
                   ) -> tuple[np.ndarray, np.ndarray]:
    """(2, num_edges) [i, j] and (num_edges, 3) integer shifts for all pairs closer than ``cutoff`` Å.

    With ``max_neighbors``, each center keeps only its nearest ones. Raises DataError if an atom has no neighbour.
    """
    return _edges(record, _pairs(record, cutoff), cutoff, max_neighbors)


def _edges(record: CrystalRecord, pairs, cutoff: float, max_neighbors: int | None, note: str = ""):
    i, j, shifts, d = pairs
    if max_neighbors is not None:
        order = np.lexsort((d, i))  # by center, then distance
        i, j, shifts, d = i[order], j[order], shifts[order], d[order]
        first = np.searchsorted(i, i)  # index of each center's first edge
        keep = (np.arange(len(i)) - first) < max_neighbors
        i, j, shifts = i[keep], j[keep], shifts[keep]
    isolated = np.flatnonzero(np.bincount(i, minlength=record.num_atoms) == 0)
    if len(isolated):
        raise DataError(record.id, f"atom {int(isolated[0])} has no neighbour within the {cutoff} Å cutoff{note}",
                        "atom with no neighbour within the cutoff")
    return np.stack([i, j]).astype(np.int64), shifts.astype(np.float64)


def extended_radius(record: CrystalRecord, cutoff: float, min_neighbors: int, pairs=None) -> float:
    """The neighbour radius of this structure, Å: ``cutoff`` when every atom has ``min_neighbors`` neighbours
    within it, else 1.25x the smallest radius that gives every atom that many (at most 2x the cutoff).

    CGCNN and ALIGNN extend the radius the same way, so that crystals of large atoms (elemental Rb: nearest
    neighbour 5.05 Å) still form a graph. The graph records cutoff / radius (``keys.EDGE_LENGTH_SCALE``): encoders
    scale its edge lengths by it, so the extended neighbour shell lies inside the radial envelope as usual.
    """
    i = (pairs if pairs is not None else _pairs(record, cutoff))[0]
    if min_neighbors <= 0 or np.bincount(i, minlength=record.num_atoms).min() >= min_neighbors:
        return cutoff
    i, _, _, d = _pairs(record, MAX_RADIUS_FACTOR * cutoff)
    if np.bincount(i, minlength=record.num_atoms).min() < min_neighbors:
        return MAX_RADIUS_FACTOR * cutoff  # too sparse even there: the caller reports the isolated atom
    order = np.lexsort((d, i))
    i, d = i[order], d[order]
    first = np.searchsorted(i, np.arange(record.num_atoms))  # each center's nearest neighbour
    needed = float(d[first + min_neighbors - 1].max())  # the min_neighbors-th neighbour of the most isolated atom
    return float(min(max(EXTENDED_RADIUS_FACTOR * needed, cutoff), MAX_RADIUS_FACTOR * cutoff))


def graph_edges(record: CrystalRecord, cutoff: float, max_neighbors: int | None = None, min_neighbors: int = 1
                ) -> tuple[np.ndarray, np.ndarray, float]:
    """``neighbour_list`` with the radius extended where an atom has fewer than ``min_neighbors`` neighbours:
    (2, num_edges) [i, j], (num_edges, 3) shifts and the radius used (Å)."""
    pairs = _pairs(record, cutoff)
    radius = extended_radius(record, cutoff, min_neighbors, pairs)
    if radius != cutoff:
        pairs = _pairs(record, radius)
    note = f", nor within {radius:.3g} Å (the most it is extended, {MAX_RADIUS_FACTOR:g}x)" if radius != cutoff else ""
    return (*_edges(record, pairs, cutoff, max_neighbors, note), radius)


class CrystalGraph(Data):
    """A PyG ``Data`` whose labels and masks (per structure or per atom: both concatenate along their first axis)
    batch as they are: PyG offsets every key containing "index" by the node count and concatenates it along its last
    dimension (and treats keys containing "batch" as batch vectors), which would corrupt the labels of a task named
    e.g. ``refractive_index``."""

    def __inc__(self, key: str, value, *args, **kwargs):
        if key.startswith((keys.LABEL_PREFIX, keys.MASK_PREFIX)):
            return 0
        return super().__inc__(key, value, *args, **kwargs)

    def __cat_dim__(self, key: str, value, *args, **kwargs):
        if key.startswith((keys.LABEL_PREFIX, keys.MASK_PREFIX)):
            return 0
        return super().__cat_dim__(key, value, *args, **kwargs)


def record_to_graph(record: CrystalRecord, tasks: dict[str, TaskSpec], cutoff: float,
                    max_neighbors: int | None = None, min_neighbors: int = 1) -> Data:
    """A ``CrystalGraph`` holding structure, edges, and per-task model-space labels with masks.

    Every atom gets at least ``min_neighbors`` neighbours: where the cutoff gives fewer, this structure's radius is
    extended (``extended_radius``) and its edge-length scale records by how much.
    """
    edge_index, shifts, radius = graph_edges(record, cutoff, max_neighbors, min_neighbors)
    data = {
        keys.POSITIONS: torch.as_tensor(record.positions, dtype=torch.get_default_dtype()),
        keys.ATOMIC_NUMBERS: torch.as_tensor(record.numbers, dtype=torch.long),
        keys.CELL: torch.as_tensor(record.cell, dtype=torch.get_default_dtype()).unsqueeze(0),
        keys.PBC: torch.as_tensor(record.pbc).unsqueeze(0),
        keys.EDGE_INDEX: torch.as_tensor(edge_index),
        keys.EDGE_CELL_SHIFT: torch.as_tensor(shifts, dtype=torch.get_default_dtype()),
        keys.EDGE_LENGTH_SCALE: torch.tensor([cutoff / radius], dtype=torch.get_default_dtype()),
        keys.STRUCTURE_ID: record.id,
        keys.CHEMICAL_SYSTEM: record.chemical_system,
    }
    for name, task in tasks.items():
        value, mask = label_rows(task, record.labels.get(name), record.num_atoms)
        data[keys.label_key(name)] = torch.as_tensor(value, dtype=torch.get_default_dtype())
        data[keys.mask_key(name)] = torch.as_tensor(mask)
    return CrystalGraph(num_nodes=record.num_atoms, **data)


def label_rows(task: TaskSpec, label, num_atoms: int) -> tuple[np.ndarray, np.ndarray]:
    """A task's model-space label rows and mask as a graph stores them: one row per structure, or per atom for a
    per-atom task (its NaN rows, atoms without a label, masked and zeroed). ``label``: the parsed label or None."""
    rows = 1 if task.level == "structure" else num_atoms
    if label is None:
        return np.zeros((rows, *task.model_shape)), np.zeros(rows, dtype=bool)
    if task.level == "structure":
        return task.to_model(label)[None], np.array([True])
    value = task.to_model(label)
    mask = np.isfinite(value.reshape(num_atoms, -1)).all(axis=1)
    value[~mask] = 0.0
    return value, mask


@full_precision  # geometry in float32 under autocast (a bf16 einsum rounds a 10 Å cell shift by up to 0.03 Å)
def edge_vectors(data) -> torch.Tensor:
    """(num_edges, 3) pos[j] + shift @ cell - pos[i], for one graph or a PyG batch."""
    i, j = data[keys.EDGE_INDEX]
    cell = data[keys.CELL]  # (num_graphs, 3, 3)
    batch = data[keys.BATCH] if keys.BATCH in data and data[keys.BATCH] is not None else None
    edge_cell = cell[batch[i]] if batch is not None else cell[0].expand(len(i), 3, 3)
    shift = torch.einsum("ek,ekl->el", data[keys.EDGE_CELL_SHIFT].to(cell.dtype), edge_cell)
    return data[keys.POSITIONS][j] + shift - data[keys.POSITIONS][i]


def radial_lengths(data, vectors: torch.Tensor) -> torch.Tensor:
    """(num_edges,) edge lengths in the units of the model's cutoff: |vectors| times the graph's edge-length scale
    (1 unless its radius was extended; graphs built before the scale existed count as 1)."""
    lengths = vectors.norm(dim=-1)
    scale = data[keys.EDGE_LENGTH_SCALE] if keys.EDGE_LENGTH_SCALE in data else None
    if scale is None:
        return lengths
    batch = data[keys.BATCH] if keys.BATCH in data and data[keys.BATCH] is not None else None
    edge_scale = scale[batch[data[keys.EDGE_INDEX][0]]] if batch is not None else scale[0]
    return lengths * edge_scale.to(lengths.dtype)


def graph_index(data) -> torch.Tensor:
    """(num_nodes,) structure index of each atom: the batch vector, or zeros for one graph."""
    batch = data[keys.BATCH] if keys.BATCH in data and data[keys.BATCH] is not None else None
    return batch if batch is not None else torch.zeros(data.num_nodes, dtype=torch.long,
                                                       device=data[keys.POSITIONS].device)


def atoms_per_graph(data) -> torch.Tensor:
    """(num_graphs,) number of atoms of each structure in a PyG batch (or (1,) for one graph)."""
    batch = data[keys.BATCH] if keys.BATCH in data and data[keys.BATCH] is not None else None
    if batch is None:
        return torch.tensor([data.num_nodes])
    if "ptr" in data and data["ptr"] is not None:  # a collated batch: no device->host sync (bincount reads max(batch))
        return data["ptr"].diff()
    return torch.bincount(batch, minlength=data.num_graphs)

"""Typed keys of the graph dictionaries (PyG ``Data`` attributes) that flow from data to model.

Every key carries the shape of what it holds, as in nequip's ``AtomicDataDict``. Labels are stored per task
under ``label_key(task)`` with a boolean mask under ``mask_key(task)``.
"""

from typing import Final

# -- structure ----------------------------------------------------------------------------------------------------
POSITIONS: Final[str] = "pos"  # (num_nodes, 3) Cartesian positions, Å
ATOMIC_NUMBERS: Final[str] = "atomic_numbers"  # (num_nodes,) int64 atomic numbers Z
CELL: Final[str] = "cell"  # (num_graphs, 3, 3) lattice vectors as rows, Å
PBC: Final[str] = "pbc"  # (num_graphs, 3) bool periodicity per lattice vector
NUM_NODES: Final[str] = "num_nodes"  # int, atoms in one graph
BATCH: Final[str] = "batch"  # (num_nodes,) int64 graph index of each atom (set by PyG batching)

# -- graph --------------------------------------------------------------------------------------------------------
EDGE_INDEX: Final[str] = "edge_index"  # (2, num_edges) int64 [center i, neighbour j] (nequip's convention)
EDGE_CELL_SHIFT: Final[str] = "edge_cell_shift"  # (num_edges, 3) float integer-valued image shift of neighbour j
EDGE_VECTORS: Final[str] = "edge_vectors"  # (num_edges, 3) pos[j] + shift @ cell - pos[i], Å
EDGE_LENGTHS: Final[str] = "edge_lengths"  # (num_edges,) |edge_vectors|, Å
# (num_graphs,) cutoff / this graph's neighbour radius: 1, or < 1 where the radius was extended so that every atom
# has a neighbour; encoders multiply edge lengths by it before the radial basis (``graph.radial_lengths``)
EDGE_LENGTH_SCALE: Final[str] = "edge_length_scale"

# -- augmentation: training batches only (``data/augment.py``) ---------------------------------------------------
NOISE: Final[str] = "noise"  # (num_nodes, 3) displacement each atom was given (mean 0 per structure), Å
STRAIN: Final[str] = "strain"  # (num_graphs, 3, 3) symmetric strain of cell and positions (0: none), dimensionless

# -- identity -----------------------------------------------------------------------------------------------------
STRUCTURE_ID: Final[str] = "structure_id"  # str, e.g. "mp-149"; a list of str after batching
CHEMICAL_SYSTEM: Final[str] = "chemical_system"  # str, e.g. "O-Si": the grouping key of leakage-free splits

LABEL_PREFIX: Final[str] = "y_"
MASK_PREFIX: Final[str] = "mask_"


def label_key(task: str) -> str:
    """Key of a task's label, in model space (transformed, not normalised): (num_graphs, *task.model_shape) float for a
    structure-level task, (num_nodes, *task.model_shape) for a per-atom one (``TaskSpec.level``)."""
    return LABEL_PREFIX + task


def mask_key(task: str) -> str:
    """Key of a task's mask: (num_graphs,) bool, True where the structure carries that label; (num_nodes,) for a
    per-atom task, True where the atom does."""
    return MASK_PREFIX + task

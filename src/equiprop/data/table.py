"""The dataset protocol: what every part of equiprop reads of a dataset, or of a subset of one (a split).

Both datasets implement it: the in-memory ``GraphDataset`` (PyG collated tensors; a split is an ``index_select`` of
it) and the on-disk ``StoredGraphs`` (a SQLite graph store; a split is a ``subset`` of its rows). Nothing outside the
two reads their private storage (``tests/data/test_table.py`` guards the package and ``benchmarks/``), so a
workflow that runs in memory runs on disk with the same numbers.

    table.structure_ids()           # (len,) structure ids in position order
    table.chemical_systems()        # (len,) chemical systems ("O-Si"), the grouping key of leakage-free splits
    table.subset(positions)         # the structures at these positions, as a table of the same kind
    table.labels(tasks)             # {task: TaskLabels} of its labelled structures, in one pass
    table.statistics()              # what a model derives from its training structures (neighbours, elements)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np
import torch

from equiprop.data.tasks import TaskSpec


@dataclass
class TaskLabels:
    """One task's labels over a table, in model space (``TaskSpec.from_model`` gives physical units).

    values: (num_labelled, *model_shape) the labelled rows: one per labelled structure, or one per labelled atom of
        a per-atom task, structure by structure.
    atoms: (num_labelled,) atoms of the structure each row belongs to (per-atom normalisation of extensive tasks).
    structures: (num_labelled_structures,) positions in the table of the structures carrying the label (per-atom
        tasks: at least one labelled atom), ascending.
    """

    values: torch.Tensor
    atoms: torch.Tensor
    structures: np.ndarray

    @property
    def count(self) -> int:
        """Structures carrying the label."""
        return len(self.structures)


@runtime_checkable
class StructureTable(Protocol):
    def __len__(self) -> int: ...

    def structure_ids(self) -> list[str]: ...

    def chemical_systems(self) -> list[str]: ...

    def subset(self, positions) -> "StructureTable": ...

    def labels(self, tasks: dict[str, TaskSpec]) -> dict[str, TaskLabels]: ...

    def statistics(self) -> dict: ...  # {"avg_num_neighbors": float, "species": [Z present], "num_atoms": int}


def empty_labels(task: TaskSpec) -> TaskLabels:
    return TaskLabels(torch.zeros((0, *task.model_shape)), torch.zeros(0, dtype=torch.long),
                      np.zeros(0, dtype=np.int64))


def labels_by_pass(graphs, tasks: dict[str, TaskSpec], species: set | None = None) -> dict[str, TaskLabels]:
    """``labels`` from one pass over ``graphs`` (any iterable of graphs, in table order): memory holds the labels,
    folded into one tensor every 4,096 graphs, not the graphs. ``species``: a set the elements seen are added to."""
    from equiprop.data import keys

    values = {name: [] for name in tasks}
    atoms = {name: [] for name in tasks}
    structures = {name: [] for name in tasks}
    for position, graph in enumerate(graphs):
        if species is not None:
            species.update(torch.unique(graph[keys.ATOMIC_NUMBERS]).tolist())
        for name in tasks:
            mask = graph[keys.mask_key(name)]
            if bool(mask.any()):
                structures[name].append(position)
                values[name].append(graph[keys.label_key(name)][mask])
                atoms[name].append(torch.full((int(mask.sum()),), graph.num_nodes))
        if position % 4096 == 4095:  # a million small tensors would cost more than their numbers
            values = {n: [torch.cat(v)] if v else v for n, v in values.items()}
            atoms = {n: [torch.cat(v)] if v else v for n, v in atoms.items()}
    return {name: TaskLabels(torch.cat(values[name]), torch.cat(atoms[name]),
                             np.asarray(structures[name], dtype=np.int64)) if structures[name] else empty_labels(task)
            for name, task in tasks.items()}

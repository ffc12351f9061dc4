"""A graph store's graphs as a map-style dataset, and the dataset protocol (``equiprop.data.table``) over them."""

from __future__ import annotations

import numpy as np
import torch

from equiprop.data.graph import CrystalGraph
from equiprop.data.graph_store import GraphStore, decode
from equiprop.data.table import TaskLabels, labels_by_pass
from equiprop.data.tasks import TaskSpec


class StoredGraphs(torch.utils.data.Dataset):
    """The graphs of a store as a map-style dataset (positions ``0..len-1`` over its row ids): what the in-memory
    ``GraphDataset`` gives, read from disk one graph at a time, and the dataset protocol (``equiprop.data.table``)
    over them: ids, chemical systems, atom and edge counts come from the store's verified index (``GraphStore.index``),
    labels from one streaming pass."""

    def __init__(self, store: GraphStore, tasks: dict[str, TaskSpec], index: tuple):
        row_ids, names, systems, nodes, edges = index
        self.store, self.tasks, self.row_ids = store, tasks, np.asarray(row_ids, dtype=np.int64)
        self._names, self._systems = list(names), list(systems)
        self._nodes, self._edges = np.asarray(nodes, dtype=np.int64), np.asarray(edges, dtype=np.int64)
        self._species: list[int] | None = None  # elements present, found by the first labels pass

    def __len__(self) -> int:
        return len(self.row_ids)

    def __getitem__(self, position: int) -> CrystalGraph:
        (row,) = self.store.rows([self.row_ids[position]])
        return decode(row, self.tasks, str(self.store.path))

    def __getitems__(self, positions: list[int]) -> list[CrystalGraph]:  # a DataLoader batch in one query
        return [decode(row, self.tasks, str(self.store.path)) for row in self.store.rows(self.row_ids[positions])]

    def __iter__(self):
        for start in range(0, len(self), 256):  # streaming passes read in chunks
            chunk = self.row_ids[start:start + 256]
            for row in self.store.rows(chunk):
                yield decode(row, self.tasks, str(self.store.path))

    # -- the dataset protocol (equiprop.data.table) ------------------------------------------------------------------
    def structure_ids(self) -> list[str]:
        return list(self._names)

    def chemical_systems(self) -> list[str]:
        return list(self._systems)

    def subset(self, positions) -> "StoredGraphs":
        at = np.asarray(positions, dtype=np.int64)
        return StoredGraphs(self.store, self.tasks, (self.row_ids[at], [self._names[i] for i in at],
                                                     [self._systems[i] for i in at], self._nodes[at], self._edges[at]))

    def labels(self, tasks: dict[str, TaskSpec]) -> dict[str, TaskLabels]:
        species: set = set()
        out = labels_by_pass(self, tasks, species)
        self._species = sorted(int(z) for z in species)
        return out

    def statistics(self) -> dict:
        if self._species is None:
            self.labels({})
        return {"avg_num_neighbors": float(self._edges.sum()) / max(int(self._nodes.sum()), 1),
                "species": list(self._species), "num_atoms": int(self._nodes.sum())}

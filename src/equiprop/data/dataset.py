"""Graphs of a dataset, built once and cached on disk.

The cache key is a hash of the cache format version, every source (class, arguments, content of the files it
reads), every task definition and every graph parameter: change any of them and a new cache is built, so a cache can
never serve stale graphs or another task's labels.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import torch
from torch_geometric.data import Data, InMemoryDataset

from equiprop.data import keys
from equiprop.data.errors import DataError, SkipLog
from equiprop.data.graph import CrystalGraph, record_to_graph
from equiprop.data.record import CrystalRecord
from equiprop.data.tasks import TaskSpec

CACHE_FORMAT_VERSION = 2  # 2: graphs carry keys.EDGE_LENGTH_SCALE
DEFAULT_CACHE_DIR = "~/.cache/equiprop/graphs"


class GraphDataset(InMemoryDataset):
    """PyG in-memory dataset of periodic graphs (collated storage, one ``Data`` per crystal on indexing)."""

    def __init__(self, graphs: list[Data] | None = None):
        super().__init__(root=None, log=False)
        if graphs is not None:
            self.data, self.slices = self.collate(graphs)

    def save_to(self, path: Path) -> None:
        tmp = path.with_suffix(".tmp")
        torch.save((self._data.to_dict(), self.slices), tmp)
        os.replace(tmp, path)  # atomic: a killed run never leaves half a cache behind

    def statistics(self, indices) -> dict:
        """What a model derives from its training structures: mean neighbours per atom and the elements present."""
        rows = torch.as_tensor(list(indices), dtype=torch.long)
        edge_counts = self.slices[keys.EDGE_INDEX].diff()  # (num_graphs,) edges per graph
        node_counts = self.slices[keys.ATOMIC_NUMBERS].diff()  # (num_graphs,) atoms per graph
        graph_of_atom = torch.repeat_interleave(torch.arange(len(node_counts)), node_counts)
        species = self._data[keys.ATOMIC_NUMBERS][torch.isin(graph_of_atom, rows)]
        return {"avg_num_neighbors": float(edge_counts[rows].sum()) / max(int(node_counts[rows].sum()), 1),
                "species": sorted(int(z) for z in torch.unique(species))}

    @classmethod
    def load_from(cls, path: Path) -> "GraphDataset":
        data, slices = torch.load(path, weights_only=True)  # tensors, lists and str only: nothing is unpickled
        dataset = cls()
        dataset.data, dataset.slices = CrystalGraph.from_dict(data), slices
        return dataset


def key_rows(slices: dict, key: str, graphs: torch.Tensor) -> torch.Tensor:
    """Positions in the collated storage of ``key`` of the rows of ``graphs`` (1-D indices of graphs): the graphs
    themselves for a per-structure key, their atoms' rows (graph by graph) for a per-atom key."""
    start, end = slices[key][graphs], slices[key][graphs + 1]
    count = end - start
    first = torch.repeat_interleave(start - (torch.cumsum(count, 0) - count), count)
    return first + torch.arange(int(count.sum()))


def build_graphs(records: list[CrystalRecord], tasks: dict[str, TaskSpec], cutoff: float,
                 max_neighbors: int | None = None, min_neighbors: int = 1) -> tuple[list[Data], SkipLog]:
    """One graph per record; records that cannot form a graph (isolated atom) are counted, not silently dropped."""
    graphs, skips = [], SkipLog()
    for record in records:
        try:
            graphs.append(record_to_graph(record, tasks, cutoff, max_neighbors, min_neighbors))
        except DataError as err:
            skips.add(err.kind, f"{record.id}: {err.problem}")
    return graphs, skips


def file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def source_fingerprint(source) -> dict:
    """Class, arguments and the content digest of every file or folder an argument names."""
    args = {k: v for k, v in sorted(vars(source).items()) if not k.startswith("_")}
    digests = {}
    for k, v in args.items():
        if isinstance(v, str) and v and Path(v).expanduser().exists():
            p = Path(v).expanduser()
            files = sorted(f for f in p.rglob("*") if f.is_file()) if p.is_dir() else [p]
            digests[k] = hashlib.sha256("".join(f"{f.name}:{file_digest(f)}" for f in files).encode()).hexdigest()
    return {"class": f"{type(source).__module__}.{type(source).__qualname__}", "args": args, "digests": digests}


def cache_key(sources: list, tasks: dict[str, TaskSpec], graph_params: dict) -> str:
    payload = {"version": CACHE_FORMAT_VERSION, "sources": [source_fingerprint(s) for s in sources],
               "tasks": [t.to_config() for t in tasks.values()], "graph": graph_params,
               "dtype": str(torch.get_default_dtype())}
    text = json.dumps(payload, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:24]

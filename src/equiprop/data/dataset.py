"""Graphs of a dataset, built once and cached on disk.

The cache key is a hash of the cache format version, every source (class, arguments, content of the files it
reads), every task definition and every graph parameter: change any of them and a new cache is built, so a cache can
never serve stale graphs or another task's labels.

What is read back is verified: the in-memory cache (``<key>.pt``) is loaded only if its sha256 matches the one its
build report (``<key>.json``) recorded, and a report only if it is JSON matching the digest written into it; a
mismatch is a one-line DataError (kind ``CORRUPTED_CACHE``), on which the data module rebuilds. Every cache file is
written atomically (a temporary file, then ``os.replace``).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import torch
from torch_geometric.data import Data, InMemoryDataset

from equiprop.data import keys
from equiprop.data.errors import ConfigError, DataError, SkipLog
from equiprop.data.graph import CrystalGraph, record_to_graph
from equiprop.data.record import CrystalRecord
from equiprop.data.table import TaskLabels
from equiprop.data.tasks import TaskSpec

CACHE_FORMAT_VERSION = 2  # 2: graphs carry keys.EDGE_LENGTH_SCALE
DEFAULT_CACHE_DIR = "~/.cache/equiprop/graphs"
CORRUPTED_CACHE = "corrupted cache"  # DataError kind of a cache file that fails its check: the data module rebuilds


class GraphDataset(InMemoryDataset):
    """PyG in-memory dataset of periodic graphs (collated storage, one ``Data`` per crystal on indexing)."""

    def __init__(self, graphs: list[Data] | None = None):
        super().__init__(root=None, log=False)
        if graphs is not None:
            self.data, self.slices = self.collate(graphs)

    def save_to(self, path: Path) -> str:
        """Write the graphs to ``path``; returns the file's sha256 (for the report; ``load_from`` checks it)."""
        tmp = path.with_suffix(".tmp")
        torch.save((self._data.to_dict(), self.slices), tmp)
        digest = file_digest(tmp)
        os.replace(tmp, path)  # atomic: a killed run never leaves half a cache behind
        return digest

    # -- the dataset protocol (equiprop.data.table), over this dataset's rows (all, or an index_select's) ---------
    def _rows(self) -> torch.Tensor:
        return torch.as_tensor(list(self.indices()), dtype=torch.long)  # (len,) rows of the collated storage

    def structure_ids(self) -> list[str]:
        ids = self._data[keys.STRUCTURE_ID]
        return [ids[i] for i in self._rows().tolist()]

    def chemical_systems(self) -> list[str]:
        systems = self._data[keys.CHEMICAL_SYSTEM]
        return [systems[i] for i in self._rows().tolist()]

    def subset(self, positions) -> "GraphDataset":
        return self.index_select(torch.as_tensor(np.asarray(positions, dtype=np.int64)))

    def labels(self, tasks: dict[str, TaskSpec]) -> dict[str, TaskLabels]:
        rows = self._rows()
        num_atoms = self.slices[keys.ATOMIC_NUMBERS].diff()[rows]  # (len,) atoms per structure
        out = {}
        for name, task in tasks.items():
            mask = self._data[keys.mask_key(name)]
            if task.level == "atom":
                atoms = key_rows(self.slices, keys.mask_key(name), rows)
                owner = torch.repeat_interleave(torch.arange(len(rows)), num_atoms)  # (atoms,) position of each
                labelled = mask[atoms]
                out[name] = TaskLabels(self._data[keys.label_key(name)][atoms][labelled], num_atoms[owner][labelled],
                                       np.unique(owner[labelled].numpy()).astype(np.int64))
                continue
            labelled = mask[rows]  # graph-level keys hold one row per graph
            out[name] = TaskLabels(self._data[keys.label_key(name)][rows][labelled], num_atoms[labelled],
                                   torch.nonzero(labelled).flatten().numpy().astype(np.int64))
        return out

    def statistics(self) -> dict:
        """What a model derives from its training structures (mean neighbours per atom, the elements present), and
        their number of atoms."""
        rows = self._rows()
        edge_counts = self.slices[keys.EDGE_INDEX].diff()  # (num_graphs,) edges per graph
        node_counts = self.slices[keys.ATOMIC_NUMBERS].diff()  # (num_graphs,) atoms per graph
        graph_of_atom = torch.repeat_interleave(torch.arange(len(node_counts)), node_counts)
        species = self._data[keys.ATOMIC_NUMBERS][torch.isin(graph_of_atom, rows)]
        return {"avg_num_neighbors": float(edge_counts[rows].sum()) / max(int(node_counts[rows].sum()), 1),
                "species": sorted(int(z) for z in torch.unique(species)), "num_atoms": int(node_counts[rows].sum())}

    @classmethod
    def load_from(cls, path: Path, digest: str | None = None) -> "GraphDataset":
        """The graphs ``save_to`` wrote; with ``digest``, a file whose sha256 differs is a DataError, never read."""
        if digest is not None and file_digest(path) != digest:
            raise DataError(str(path), "the graph cache fails its checksum (its bytes changed after it was written)",
                            CORRUPTED_CACHE)
        try:
            data, slices = torch.load(path, weights_only=True)  # tensors, lists and str only: nothing is unpickled
        except Exception as err:  # noqa: BLE001 - any unloadable file is one line naming it
            raise DataError(str(path), f"the graph cache does not load ({type(err).__name__})", CORRUPTED_CACHE) \
                from None
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


def write_report(path: Path, report: dict) -> None:
    """The build report as JSON, with the sha256 of its content in it (``read_report`` checks it), atomically."""
    content = json.loads(json.dumps(report))  # as it will read back (tuples as lists, ...)
    digest = hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps({**content, "digest": digest}, indent=1))
    os.replace(tmp, path)


def read_report(path: Path) -> dict:
    """A report ``write_report`` wrote; bad JSON or content that fails its digest is a one-line DataError."""
    try:
        content = json.loads(Path(path).read_text())
        digest = content.pop("digest", None) if isinstance(content, dict) else None
    except (OSError, ValueError) as err:
        raise DataError(str(path), f"the graph cache report is unreadable ({type(err).__name__})",
                        CORRUPTED_CACHE) from None
    if digest is None:
        raise DataError(str(path), "the graph cache report records no digest (an older equiprop wrote it)",
                        CORRUPTED_CACHE)
    if digest != hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest():
        raise DataError(str(path), "the graph cache report fails its checksum (not what equiprop wrote)",
                        CORRUPTED_CACHE)
    return content


def writable_cache_dir(folder: Path) -> Path:
    """``folder``, created if need be; a ConfigError naming it if it cannot be written to (not advice to delete)."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError:
        pass
    if not (folder.is_dir() and os.access(folder, os.W_OK)):
        raise ConfigError(f"the graph cache folder {folder} is not writable: set EQUIPROP_CACHE (or data.cache_dir) "
                          "to a writable folder")
    return folder


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

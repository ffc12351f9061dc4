"""Graphs on disk: an SQLite file written once in shards, read row by row by DataLoader workers with bounded memory.

Why SQLite (Python's ``sqlite3``): one file, transactions (a shard and the record that it is done commit together,
so a killed build resumes at the first unfinished shard and never keeps half of one), random access by row id for
shuffled batches, safe concurrent readers (each process opens its own connection), nothing to install. PyG's
``OnDiskDataset`` uses the same backend; we keep our own table because a row must also carry a checksum and the
build must be resumable. LMDB would need a map size fixed in advance; HDF5 handles concurrent readers after fork
poorly.

One row per graph: the structure id and chemical system (text), atom and edge counts, a CRC-32 of the payload, and
the payload: positions and cell (float64, cast to the default dtype on read exactly as the in-memory path casts
them), atomic numbers (int16), edges (int32) and integer image shifts (int8), the edge-length scale, then each task's
model-space labels (float64) and masks, one row per structure or per atom (``TaskSpec.level``). A payload whose
CRC does not match is never decoded: reading it raises a one-line DataError naming the store and the structure.
"""

from __future__ import annotations

import json
import os
import sqlite3
import zlib
from pathlib import Path
from typing import Iterable

import numpy as np
import torch

from equiprop.data import keys
from equiprop.data.errors import DataError, SkipLog
from equiprop.data.graph import CrystalGraph, graph_edges, label_rows
from equiprop.data.record import CrystalRecord
from equiprop.data.tasks import TaskSpec

STORE_FORMAT_VERSION = 1
SCHEMA = """
CREATE TABLE IF NOT EXISTS graphs (id INTEGER PRIMARY KEY, structure_id TEXT, chemical_system TEXT,
                                   num_nodes INTEGER, num_edges INTEGER, crc INTEGER, payload BLOB);
CREATE TABLE IF NOT EXISTS shards (shard INTEGER PRIMARY KEY, graphs INTEGER, skips TEXT);
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT);
"""


def encode(record: CrystalRecord, tasks: dict[str, TaskSpec], cutoff: float, max_neighbors: int | None,
           min_neighbors: int) -> tuple[tuple, bool]:
    """(structure_id, chemical_system, num_nodes, num_edges, crc, payload) of one record's graph, and whether its
    radius was extended; DataError as ``record_to_graph`` raises it (an isolated atom)."""
    edge_index, shifts, radius = graph_edges(record, cutoff, max_neighbors, min_neighbors)
    i, j = edge_index  # every atom's nearest neighbour is an edge: the shortest distance comes from them
    vectors = record.positions[j] + shifts @ record.cell - record.positions[i]
    record.check_distance(float(np.sqrt((vectors ** 2).sum(1).min())) if len(i) else float("inf"))
    if len(shifts) and np.abs(shifts).max() > 127:
        raise DataError(record.id, "image shift beyond 127 cells (a cell thinner than cutoff/127)", "degenerate cell")
    parts = [np.ascontiguousarray(record.positions, dtype=np.float64), np.asarray(record.cell, dtype=np.float64),
             np.asarray(record.pbc, dtype=bool), np.asarray(record.numbers, dtype=np.int16),
             edge_index.astype(np.int32), shifts.astype(np.int8), np.array([cutoff / radius])]
    for name, task in tasks.items():
        value, mask = label_rows(task, record.labels.get(name), record.num_atoms)
        parts += [np.asarray(value, dtype=np.float64), mask.astype(bool)]
    payload = b"".join(p.tobytes() for p in parts)
    row = (record.id, record.chemical_system, record.num_atoms, edge_index.shape[1], zlib.crc32(payload), payload)
    return row, radius != cutoff


def decode(row: tuple, tasks: dict[str, TaskSpec], where: str) -> CrystalGraph:
    """A ``CrystalGraph`` equal, key by key and dtype by dtype, to ``record_to_graph`` of the stored record."""
    structure_id, chemical_system, n, e, crc, payload = row
    if zlib.crc32(payload) != crc:
        raise DataError(where, f"stored graph of {structure_id} fails its checksum (the store is corrupted): delete "
                               "the store folder and rebuild", "corrupted store")
    dtype, offset, out = torch.get_default_dtype(), 0, {}
    payload = bytearray(payload)  # writable, so tensors may share its memory

    def take(np_dtype, shape):
        nonlocal offset
        count = int(np.prod(shape))
        array = np.frombuffer(payload, dtype=np_dtype, count=count, offset=offset).reshape(shape)
        offset += count * np.dtype(np_dtype).itemsize
        return array

    out[keys.POSITIONS] = torch.as_tensor(take(np.float64, (n, 3)), dtype=dtype)
    out[keys.CELL] = torch.as_tensor(take(np.float64, (3, 3)), dtype=dtype).unsqueeze(0)
    out[keys.PBC] = torch.as_tensor(take(bool, (3,)).copy()).unsqueeze(0)
    out[keys.ATOMIC_NUMBERS] = torch.as_tensor(take(np.int16, (n,)), dtype=torch.long)
    out[keys.EDGE_INDEX] = torch.as_tensor(take(np.int32, (2, e)), dtype=torch.long)
    out[keys.EDGE_CELL_SHIFT] = torch.as_tensor(take(np.int8, (e, 3)), dtype=dtype)
    out[keys.EDGE_LENGTH_SCALE] = torch.as_tensor(take(np.float64, (1,)), dtype=dtype)
    out[keys.STRUCTURE_ID], out[keys.CHEMICAL_SYSTEM] = structure_id, chemical_system
    for name, task in tasks.items():
        rows = 1 if task.level == "structure" else n
        out[keys.label_key(name)] = torch.as_tensor(take(np.float64, (rows, *task.model_shape)), dtype=dtype)
        out[keys.mask_key(name)] = torch.as_tensor(take(bool, (rows,)).copy())
    return CrystalGraph(num_nodes=n, **out)


class GraphStore:
    """The SQLite file of one content key (``dataset.cache_key``): written by ``build_store``, read by
    ``StoredGraphs``. Each process opens its own connection (DataLoader workers after fork included)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._connection, self._pid = None, None

    @property
    def connection(self) -> sqlite3.Connection:
        if self._connection is None or self._pid != os.getpid():
            self._connection, self._pid = sqlite3.connect(self.path, timeout=60), os.getpid()
            self.query(SCHEMA, script=True)
        return self._connection

    def query(self, sql: str, params=(), script: bool = False) -> list:
        """Rows of one statement; a damaged file is a one-line DataError naming it, never a traceback."""
        try:
            if script:
                self._connection.executescript(sql)
                return []
            return self.connection.execute(sql, params).fetchall()
        except sqlite3.DatabaseError as err:
            raise DataError(str(self.path), f"unreadable graph store ({err}): delete it and rebuild",
                            "corrupted store") from None

    def __getstate__(self):  # a connection never crosses a process boundary
        return {"path": self.path, "_connection": None, "_pid": None}

    def done_shards(self) -> dict[int, tuple[int, dict]]:
        rows = self.query("SELECT shard, graphs, skips FROM shards")
        return {k: (n, json.loads(skips)) for k, n, skips in rows}

    def write_shard(self, shard: int, id_range: tuple[int, int], rows: list[tuple], skips: dict) -> None:
        """A shard's graph rows (each ``(record index, *encode(...))``; ids are record indices, so they do not
        depend on what was skipped) and its done mark, in one transaction; rows a killed build left in
        ``id_range`` are replaced."""
        with self.connection:
            self.connection.execute("DELETE FROM graphs WHERE id >= ? AND id < ?", id_range)
            self.connection.executemany(
                "INSERT INTO graphs (id, structure_id, chemical_system, num_nodes, num_edges, crc, payload) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)", rows)
            self.connection.execute("INSERT OR REPLACE INTO shards VALUES (?, ?, ?)", (shard, len(rows),
                                                                                      json.dumps(skips)))

    def set_meta(self, name: str, value) -> None:
        with self.connection:
            self.connection.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (name, json.dumps(value)))

    def meta(self, name: str, default=None):
        rows = self.query("SELECT value FROM meta WHERE name = ?", (name,))
        return json.loads(rows[0][0]) if rows else default

    def index(self) -> tuple[np.ndarray, list[str], list[str], np.ndarray, np.ndarray]:
        """Row ids, structure ids, chemical systems, atoms and edges of every stored graph, in id order."""
        rows = self.query("SELECT id, structure_id, chemical_system, num_nodes, num_edges FROM graphs ORDER BY id")
        ids, names, systems, nodes, edges = zip(*rows) if rows else ((), (), (), (), ())
        return np.array(ids, dtype=np.int64), list(names), list(systems), np.array(nodes), np.array(edges)

    def rows(self, ids) -> list[tuple]:
        """The stored rows of ``ids``, in that order, in one query (a batch is one round trip)."""
        ids = [int(i) for i in ids]
        found = {}
        for start in range(0, len(ids), 900):  # SQLite's limit on bound parameters
            chunk = ids[start:start + 900]
            query = ("SELECT id, structure_id, chemical_system, num_nodes, num_edges, crc, payload FROM graphs "
                     f"WHERE id IN ({','.join('?' * len(chunk))})")
            found.update((row[0], row[1:]) for row in self.query(query, chunk))
        missing = [i for i in ids if i not in found]
        if missing:
            raise DataError(str(self.path), f"graph rows {missing[:3]} are missing: delete the store and rebuild",
                            "corrupted store")
        return [found[i] for i in ids]


class StoredGraphs(torch.utils.data.Dataset):
    """The graphs of a store as a map-style dataset (positions ``0..len-1`` over its row ids): what the in-memory
    ``GraphDataset`` gives, read from disk one graph at a time."""

    def __init__(self, store: GraphStore, tasks: dict[str, TaskSpec], row_ids: np.ndarray):
        self.store, self.tasks, self.row_ids = store, tasks, np.asarray(row_ids, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.row_ids)

    def __getitem__(self, position: int) -> CrystalGraph:
        (row,) = self.store.rows([self.row_ids[position]])
        return decode(row, self.tasks, str(self.store.path))

    def __getitems__(self, positions: list[int]) -> list[CrystalGraph]:  # a DataLoader batch in one query
        return [decode(row, self.tasks, str(self.store.path)) for row in self.store.rows(self.row_ids[positions])]

    def subset(self, positions) -> "StoredGraphs":
        return StoredGraphs(self.store, self.tasks, self.row_ids[np.asarray(positions, dtype=np.int64)])

    def __iter__(self):
        for start in range(0, len(self), 256):  # streaming passes read in chunks
            chunk = self.row_ids[start:start + 256]
            for row in self.store.rows(chunk):
                yield decode(row, self.tasks, str(self.store.path))


# -- building ---------------------------------------------------------------------------------------------------
def _encode_shard(job: tuple) -> tuple[int, list[tuple], dict]:
    shard, first, records, tasks, graph = job
    rows, skips, extended = [], SkipLog(), []
    for i, record in enumerate(records):
        try:
            row, longer = encode(record, tasks, graph["cutoff"], graph["max_neighbors"], graph["min_neighbors"])
        except DataError as err:
            skips.add(err.kind, f"{record.id}: {err.problem}")
            continue
        rows.append((first + i, *row))
        if longer:
            extended.append(record.id)
    return shard, rows, {"counts": dict(skips.counts), "examples": dict(skips.examples), "extended": extended}


def _shards(records: Iterable[CrystalRecord], size: int):
    shard, batch = 0, []
    for record in records:
        batch.append(record)
        if len(batch) == size:
            yield shard, batch
            shard, batch = shard + 1, []
    if batch:
        yield shard, batch


def build_store(store: GraphStore, records: Iterable[CrystalRecord], tasks: dict[str, TaskSpec], graph: dict,
                shard_size: int = 1024, workers: int | None = None, total: int | None = None,
                progress: bool = True) -> dict:
    """Write the graphs of ``records`` (an iterable, read once, in a fixed order) into ``store``, shard by shard,
    ``workers`` processes encoding (default: every core) while this one writes. Shards a killed build finished are
    not recomputed (their records are only read past). Returns what was built and resumed, and the skips."""
    from multiprocessing import get_context

    from tqdm import tqdm

    done = store.done_shards()
    workers = workers or os.cpu_count() or 1
    skips, extended = SkipLog(), []
    for _, shard_skips in done.values():
        skips.extend(_skip_log(shard_skips))
        extended += shard_skips["extended"]
    jobs = ((k, k * shard_size, batch, tasks, graph) for k, batch in _shards(records, shard_size) if k not in done)
    built = 0
    bar = tqdm(total=total, desc="graphs", unit="structure", disable=not progress, smoothing=0.1)
    bar.update(sum(n for n, _ in done.values()))
    pool = get_context("fork").Pool(workers) if workers > 1 else None
    try:
        for shard, rows, shard_skips in (pool.imap(_encode_shard, jobs) if pool else map(_encode_shard, jobs)):
            store.write_shard(shard, (shard * shard_size, (shard + 1) * shard_size), rows, shard_skips)
            skips.extend(_skip_log(shard_skips))
            extended += shard_skips["extended"]
            built += 1
            bar.update(len(rows) + sum(shard_skips["counts"].values()))
    finally:
        if pool is not None:
            pool.terminate()
        bar.close()
    store.set_meta("complete", True)
    return {"shards_built": built, "shards_resumed": len(done), "skips": skips,
            "extended": {"count": len(extended), "examples": extended[:3]}}


def _skip_log(stored: dict) -> SkipLog:
    log = SkipLog()
    for reason, n in stored["counts"].items():
        log.counts[reason] += n
        log.examples[reason].extend(stored["examples"].get(reason, [])[:log.max_examples])
    return log


# -- one streaming pass ---------------------------------------------------------------------------------------------
def streamed_pass(graphs: StoredGraphs, tasks: dict[str, TaskSpec]) -> dict:
    """What the in-memory path reads from its collated tensors, in one pass over ``graphs`` (in their order): per
    task the labelled model-space rows and the atoms of their structures, the structures carrying a label, and the
    elements present. Memory: the labels (folded into one tensor every 4,096 graphs), not the graphs."""
    labels = {name: [] for name in tasks}
    atoms = {name: [] for name in tasks}
    counts = dict.fromkeys(tasks, 0)
    species = set()
    for k, graph in enumerate(graphs):
        species.update(torch.unique(graph[keys.ATOMIC_NUMBERS]).tolist())
        for name in tasks:
            mask = graph[keys.mask_key(name)]
            if bool(mask.any()):
                counts[name] += 1
                labels[name].append(graph[keys.label_key(name)][mask])
                atoms[name].append(torch.full((int(mask.sum()),), graph.num_nodes))
        if k % 4096 == 4095:  # a million small tensors would cost more than their numbers
            labels = {n: [torch.cat(v)] if v else v for n, v in labels.items()}
            atoms = {n: [torch.cat(v)] if v else v for n, v in atoms.items()}
    shapes = {name: (0, *task.model_shape) for name, task in tasks.items()}
    return {"labels": {n: torch.cat(v) if v else torch.zeros(shapes[n]) for n, v in labels.items()},
            "atoms": {n: torch.cat(v) if v else torch.zeros(0, dtype=torch.long) for n, v in atoms.items()},
            "counts": counts, "species": sorted(species)}

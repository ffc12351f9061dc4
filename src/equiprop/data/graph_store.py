"""Graphs on disk: an SQLite file written once in shards, read row by row by DataLoader workers with bounded memory.

Why SQLite (Python's ``sqlite3``): one file, transactions (a shard and the record that it is done commit together,
so a killed build resumes at the first unfinished shard and never keeps half of one), random access by row id for
shuffled batches, safe concurrent readers (each process opens its own connection), nothing to install. PyG's
``OnDiskDataset`` uses the same backend; we keep our own table because a row must also carry a checksum and the
build must be resumable. LMDB would need a map size fixed in advance; HDF5 handles concurrent readers after fork
poorly.

One row per graph: the structure id and chemical system (text), atom and edge counts, a CRC-32, and the payload:
positions and cell (float64, cast to the default dtype on read exactly as the in-memory path casts them), atomic
numbers (int16), edges (int32) and integer image shifts (int8), the edge-length scale, then each task's model-space
labels (float64) and masks, one row per structure or per atom (``TaskSpec.level``).

Checks (store format 2), so that damage is an error or a rebuild, never numbers: the row CRC covers the payload and
every column that decides anything (row id, structure id, chemical system, atom and edge counts), and a row failing
it is never decoded (a one-line DataError naming the store and structure). Each shard records a digest of its rows'
index columns and CRCs, computed by the encoding worker before the rows reach the file: a resumed build rebuilds a
finished shard that no longer matches. A complete store records its row count and the digest of its shards; ``index``
(the split's input) checks both, so a changed chemical system or count, or a deleted row, is a one-line DataError
(on which the data module rebuilds the store), not a silently different split. CRCs and digests catch damage (a
disk, a copy, a hand edit), not someone who recomputes them. A folder SQLite cannot write to is a ConfigError naming
it, never advice to delete the store.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import warnings
import zlib
from contextlib import contextmanager
from pathlib import Path
from typing import Iterable

import numpy as np
import torch

from equiprop.data import keys
from equiprop.data.errors import ConfigError, DataError, SkipLog
from equiprop.data.graph import CrystalGraph, graph_edges, label_rows
from equiprop.data.processes import DieWithParent
from equiprop.data.record import CrystalRecord
from equiprop.data.tasks import TaskSpec

STORE_FORMAT_VERSION = 2  # 2: the row CRC covers the index columns; shard digests; the complete store's count/digest
CORRUPTED, OUTDATED = "corrupted store", "outdated store"  # DataError kinds: the data module rebuilds on either
SCHEMA = """
CREATE TABLE IF NOT EXISTS graphs (id INTEGER PRIMARY KEY, structure_id TEXT, chemical_system TEXT,
                                   num_nodes INTEGER, num_edges INTEGER, crc INTEGER, payload BLOB);
CREATE TABLE IF NOT EXISTS shards (shard INTEGER PRIMARY KEY, graphs INTEGER, skips TEXT, digest TEXT);
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT);
"""
INDEX_COLUMNS = "id, structure_id, chemical_system, num_nodes, num_edges, crc"


def row_crc(row_id, structure_id, chemical_system, num_nodes, num_edges, payload: bytes) -> int:
    """CRC-32 of a row's payload and of every column that decides which structure it is, which split group it joins
    and how its payload is cut: none of them can change unnoticed."""
    header = json.dumps([row_id, structure_id, chemical_system, num_nodes, num_edges], default=repr)
    return zlib.crc32(payload, zlib.crc32(header.encode()))


def shard_digest(rows: Iterable[tuple]) -> str:
    """sha256 of rows' index columns and CRCs (``INDEX_COLUMNS``, in id order)."""
    h = hashlib.sha256()
    for row in rows:
        h.update(json.dumps(list(row[:6]), default=repr).encode() + b"\n")
    return h.hexdigest()


def store_digest(shards: dict[int, str]) -> str:  # over the shards that hold rows, in order
    return hashlib.sha256("".join(f"{k}:{shards[k]}\n" for k in sorted(shards)).encode()).hexdigest()


def encode(record: CrystalRecord, tasks: dict[str, TaskSpec], cutoff: float, max_neighbors: int | None,
           min_neighbors: int) -> tuple[tuple, bool]:
    """(structure_id, chemical_system, num_nodes, num_edges, payload) of one record's graph, and whether its
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
    # plain str and int: the CRC is computed over exactly what SQLite stores and gives back
    row = (str(record.id), str(record.chemical_system), int(record.num_atoms), int(edge_index.shape[1]), payload)
    return row, radius != cutoff


def payload_size(n: int, e: int, tasks: dict[str, TaskSpec]) -> int:  # bytes of the layout ``encode`` writes
    return n * 26 + 83 + e * 11 + sum((1 if t.level == "structure" else n) * (int(np.prod(t.model_shape)) * 8 + 1)
                                      for t in tasks.values())


def decode(row: tuple, tasks: dict[str, TaskSpec], where: str) -> CrystalGraph:
    """A ``CrystalGraph`` equal, key by key and dtype by dtype, to ``record_to_graph`` of the stored record."""
    row_id, structure_id, chemical_system, n, e, crc, payload = row
    if not isinstance(payload, bytes) or row_crc(row_id, structure_id, chemical_system, n, e, payload) != crc:
        raise DataError(where, f"the stored graph of {structure_id} (row {row_id}) fails its checksum: the store is "
                               "damaged; delete it to have it rebuilt", CORRUPTED)
    if not (isinstance(n, int) and isinstance(e, int) and n > 0 and e >= 0 and len(payload) == payload_size(
            n, e, tasks)):  # only a store of other tasks (never served: they are in its key) could get here
        raise DataError(where, f"the stored graph of {structure_id} (row {row_id}) does not match its {n} atoms, "
                               f"{e} edges and the tasks: delete the store to have it rebuilt", CORRUPTED)
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

    def close(self) -> None:
        if self._connection is not None and self._pid == os.getpid():
            self._connection.close()
        self._connection = None

    def __getstate__(self):  # a connection never crosses a process boundary
        return {"path": self.path, "_connection": None, "_pid": None}

    @contextmanager
    def checked(self):
        """SQLite's errors as one line: a folder it cannot write to is a ConfigError naming that folder (deleting the
        store would not help), a damaged file a DataError naming it."""
        try:
            yield
        except sqlite3.DatabaseError as err:
            folder = self.path.parent
            if isinstance(err, sqlite3.OperationalError) and ("readonly" in str(err) or "unable to open" in str(err)):
                what = f"folder {folder}" if not os.access(folder, os.W_OK) else f"store {self.path}"
                raise ConfigError(f"the graph cache {what} is not writable ({err}): set EQUIPROP_CACHE (or "
                                  "data.cache_dir) to a writable folder") from None
            if isinstance(err, sqlite3.OperationalError):  # locked, disk full: the file itself is not damaged
                raise DataError(str(self.path), f"graph store cannot be used ({err})", "unusable store") from None
            raise DataError(str(self.path), f"the graph store is damaged ({err})", CORRUPTED) from None

    def query(self, sql: str, params=(), script: bool = False) -> list:
        """Rows of one statement; SQLite's errors are one line (``checked``)."""
        with self.checked():
            if script:
                self._connection.executescript(sql)
                return []
            return self.connection.execute(sql, params).fetchall()

    def done_shards(self) -> dict[int, tuple[int, dict, str]]:
        """Finished shards: their graph count, skips and digest."""
        rows = self.query("SELECT shard, graphs, skips, digest FROM shards")
        try:
            return {k: (n, json.loads(skips), digest) for k, n, skips, digest in rows}
        except (TypeError, ValueError):
            raise DataError(str(self.path), "its shard records are not JSON", CORRUPTED) from None

    def write_shard(self, shard: int, id_range: tuple[int, int], rows: list[tuple], skips: dict, digest: str) -> None:
        """A shard's graph rows (each ``(record index, ..., crc, payload)``; ids are record indices, so they do not
        depend on what was skipped), its done mark and digest, in one transaction; rows a killed build left in
        ``id_range`` are replaced."""
        with self.checked(), self.connection:
            self.connection.execute("DELETE FROM graphs WHERE id >= ? AND id < ?", id_range)
            self.connection.executemany(
                "INSERT INTO graphs (id, structure_id, chemical_system, num_nodes, num_edges, crc, payload) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)", rows)
            self.connection.execute("INSERT OR REPLACE INTO shards VALUES (?, ?, ?, ?)",
                                    (shard, len(rows), json.dumps(skips), digest))

    def set_meta(self, **values) -> None:
        with self.checked(), self.connection:
            self.connection.executemany("INSERT OR REPLACE INTO meta VALUES (?, ?)",
                                        [(name, json.dumps(value)) for name, value in values.items()])

    def meta(self, name: str, default=None):
        rows = self.query("SELECT value FROM meta WHERE name = ?", (name,))
        try:
            return json.loads(rows[0][0]) if rows else default
        except (TypeError, ValueError):
            raise DataError(str(self.path), f"its meta entry {name!r} is not JSON", CORRUPTED) from None

    def index(self) -> tuple[np.ndarray, list[str], list[str], np.ndarray, np.ndarray]:
        """Row ids, structure ids, chemical systems, atoms and edges of every stored graph, in id order. A complete
        store is verified first (``verify``)."""
        rows = self.query(f"SELECT {INDEX_COLUMNS} FROM graphs ORDER BY id")
        if self.meta("complete"):
            self.verify(rows)
        ids, names, systems, nodes, edges, _ = zip(*rows) if rows else ((),) * 6
        return np.array(ids, dtype=np.int64), list(names), list(systems), np.array(nodes), np.array(edges)

    def verify(self, rows: list[tuple] | None = None) -> None:
        """DataError unless this complete store is of the current format and its rows (``INDEX_COLUMNS``) match the
        row count and digest its build recorded; where a row fails its CRC, the message names its structure."""
        where = str(self.path)
        if self.meta("format") != STORE_FORMAT_VERSION:
            raise DataError(where, f"the graph store has format {self.meta('format')}, not {STORE_FORMAT_VERSION} "
                                   "(an older equiprop wrote it)", OUTDATED)
        rows = self.query(f"SELECT {INDEX_COLUMNS} FROM graphs ORDER BY id") if rows is None else rows
        count, size = self.meta("count"), self.meta("shard_size")
        if not (isinstance(size, int) and size > 0):
            raise DataError(where, f"the graph store records no valid shard size ({size!r})", CORRUPTED)
        if len(rows) != count:
            raise DataError(where, f"the graph store holds {len(rows)} graphs but {count} were written (rows were "
                                   "deleted or added)", CORRUPTED)
        found = shard_digests(rows, size)
        if store_digest(found) == self.meta("digest"):
            return
        recorded = {k: digest for k, (n, _, digest) in self.done_shards().items() if n}
        bad = min((k for k in set(found) | set(recorded) if found.get(k) != recorded.get(k)), default=None)
        problem = "its digest does not match" if bad is None else f"shard {bad} does not match its recorded digest"
        for row in [] if bad is None else self.rows(range(bad * size, (bad + 1) * size), missing_ok=True):
            if not isinstance(row[6], bytes) or row_crc(*row[:5], row[6]) != row[5]:  # name the structure
                problem = f"the stored graph of {row[1]} (row {row[0]}) fails its checksum"
                break
        raise DataError(where, f"{problem}: the graph store is damaged", CORRUPTED)

    def rows(self, ids, missing_ok: bool = False) -> list[tuple]:
        """The stored rows of ``ids`` (id first), in that order, in one query (a batch is one round trip)."""
        ids = [int(i) for i in ids]
        found = {}
        for start in range(0, len(ids), 900):  # SQLite's limit on bound parameters
            chunk = ids[start:start + 900]
            query = (f"SELECT {INDEX_COLUMNS}, payload FROM graphs WHERE id IN ({','.join('?' * len(chunk))})")
            found.update((row[0], row) for row in self.query(query, chunk))
        missing = [i for i in ids if i not in found]
        if missing_ok:
            return [found[i] for i in ids if i in found]
        if missing:
            raise DataError(str(self.path), f"graph rows {missing[:3]} are missing: delete the store to have it "
                                            "rebuilt", CORRUPTED)
        return [found[i] for i in ids]


def shard_digests(rows: list[tuple], shard_size: int) -> dict[int, str]:
    """``shard_digest`` of each shard's rows (``INDEX_COLUMNS`` in id order; shards without rows are absent)."""
    shards: dict[int, list] = {}
    for row in rows:
        shards.setdefault(row[0] // shard_size if isinstance(row[0], int) else -1, []).append(row)
    return {k: shard_digest(v) for k, v in shards.items()}


# -- building ---------------------------------------------------------------------------------------------------
def _encode_shard(job: tuple) -> tuple[int, list[tuple], dict, str]:
    shard, first, records, tasks, graph = job
    rows, skips, extended = [], SkipLog(), []
    for i, record in enumerate(records):
        try:
            (structure_id, system, n, e, payload), longer = encode(record, tasks, graph["cutoff"],
                                                                   graph["max_neighbors"], graph["min_neighbors"])
        except DataError as err:
            skips.add(err.kind, f"{record.id}: {err.problem}")
            continue
        index = (first + i, structure_id, system, n, e)
        rows.append((*index, row_crc(*index, payload), payload))
        if longer:
            extended.append(record.id)
    shard_skips = {"counts": dict(skips.counts), "examples": dict(skips.examples), "extended": extended}
    return shard, rows, shard_skips, shard_digest(rows)  # the digest of what was encoded, before any disk


def _shards(records: Iterable[CrystalRecord], size: int):
    shard, batch = 0, []
    for record in records:
        batch.append(record)
        if len(batch) == size:
            yield shard, batch
            shard, batch = shard + 1, []
    if batch:
        yield shard, batch


def _intact_shards(store: GraphStore, shard_size: int) -> dict[int, tuple[int, dict, str]]:
    """The finished shards of a killed build whose rows still match their count and digest; the others are rebuilt
    (with a warning: a hand-edited or damaged row is never kept)."""
    done = store.done_shards()
    found = shard_digests(store.query(f"SELECT {INDEX_COLUMNS} FROM graphs ORDER BY id"), shard_size)
    damaged = sorted(k for k, (n, _, digest) in done.items() if found.get(k, shard_digest([])) != digest)
    if damaged:
        warnings.warn(f"{store.path}: {len(damaged)} finished shard(s) no longer match their digest (e.g. shard "
                      f"{damaged[0]}): rebuilt")
    return {k: v for k, v in done.items() if k not in damaged}


def build_store(store: GraphStore, records: Iterable[CrystalRecord], tasks: dict[str, TaskSpec], graph: dict,
                shard_size: int = 1024, workers: int | None = None, total: int | None = None,
                progress: bool = True) -> dict:
    """Write the graphs of ``records`` (an iterable, read once, in a fixed order) into ``store``, shard by shard,
    ``workers`` processes encoding (default: every core) while this one writes. Shards a killed build finished are
    not recomputed (their records are only read past) once their rows are checked against their digests. Returns
    what was built and resumed, and the skips; the complete store records its row count and digest."""
    from multiprocessing import get_context

    from tqdm import tqdm

    if store.meta("format") not in (None, STORE_FORMAT_VERSION):
        raise DataError(str(store.path), f"the graph store has format {store.meta('format')}, not "
                                         f"{STORE_FORMAT_VERSION}: delete it to have it rebuilt", OUTDATED)
    if store.meta("shard_size", shard_size) != shard_size:
        raise DataError(str(store.path), f"the graph store was begun with shards of {store.meta('shard_size')} "
                                         f"graphs, not {shard_size}: delete it to have it rebuilt", CORRUPTED)
    store.set_meta(format=STORE_FORMAT_VERSION, shard_size=shard_size, complete=False)  # complete once verified
    done = _intact_shards(store, shard_size)
    workers = workers or os.cpu_count() or 1
    skips, extended = SkipLog(), []
    for _, shard_skips, _ in done.values():
        skips.extend(_skip_log(shard_skips))
        extended += shard_skips["extended"]
    jobs = ((k, k * shard_size, batch, tasks, graph) for k, batch in _shards(records, shard_size) if k not in done)
    built = 0
    bar = tqdm(total=total, desc="graphs", unit="structure", disable=not progress, smoothing=0.1)
    bar.update(sum(n for n, _, _ in done.values()))
    pool = get_context("fork").Pool(workers, initializer=DieWithParent()) if workers > 1 else None
    try:
        for shard, rows, shard_skips, digest in (pool.imap(_encode_shard, jobs) if pool else map(_encode_shard, jobs)):
            store.write_shard(shard, (shard * shard_size, (shard + 1) * shard_size), rows, shard_skips, digest)
            skips.extend(_skip_log(shard_skips))
            extended += shard_skips["extended"]
            built += 1
            bar.update(len(rows) + sum(shard_skips["counts"].values()))
    finally:
        if pool is not None:
            pool.terminate()
        bar.close()
    shards = store.done_shards()  # the digests the encoders computed, not a re-read of the file
    store.set_meta(complete=True, count=sum(n for n, _, _ in shards.values()),
                   digest=store_digest({k: digest for k, (n, _, digest) in shards.items() if n}))
    return {"shards_built": built, "shards_resumed": len(done), "skips": skips,
            "extended": {"count": len(extended), "examples": extended[:3]}}


def _skip_log(stored: dict) -> SkipLog:
    log = SkipLog()
    for reason, n in stored["counts"].items():
        log.counts[reason] += n
        log.examples[reason].extend(stored["examples"].get(reason, [])[:log.max_examples])
    return log

"""Per-structure cache of frozen encoder features on disk, content-keyed like the graph store.

A frozen encoder (or the frozen first layers of a partly fine-tuned one) gives the same per-atom features for a
structure every epoch: they are computed once, written to disk, and later epochs, runs, folds and predictions only
look them up. The key of a structure hashes what the features depend on: atomic numbers, positions, cell,
periodicity and the graph's edges with their image shifts (so another cutoff or neighbour cap is another key). The
cache folder is named by a hash of the encoder's frozen state: its class, its configuration, where the cache sits in
the network, and a digest of the frozen weights, so a changed model or weight is a cache miss.

Storage: one SQLite file per folder (``features.sqlite``, like ``data.graph_store``), one row per structure: key,
dtype, shape, a CRC-32 and the bytes. A batch is one query; memory holds at most ``EQUIPROP_FEATURE_MEMORY_MB``
(default 1024) of recently used rows, so a Materials-Project-size cache (~20 GB) streams from disk instead of being
loaded whole. Rows of a batch are written in one transaction (a killed run keeps whole batches only); concurrent
writers (DDP ranks) wait for SQLite's lock and never clash.

Nothing damaged is read as numbers. The CRC covers the key, dtype and shape as well as the bytes, and a row is also
refused if its dtype is not one an encoder stores or its shape does not account for its bytes: such a row is deleted
with a warning naming the file and structure, and recomputed. Rows of the previous row format (a CRC of the bytes
only; ``PRAGMA user_version`` below ``ROW_FORMAT``) are deleted once, with a warning giving their count, and
recomputed. A file SQLite cannot read is moved aside with a warning and the cache starts again. A folder that cannot
be written to is read as it is (rows still checked) and new features stay in memory, with a warning. Shards of the
oldest format (``<sha256>.pt``) are verified and imported.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import sqlite3
import warnings
import zlib
from collections import OrderedDict
from pathlib import Path
from urllib.parse import quote

import numpy as np
import torch

from equiprop.data import keys

CACHE_FORMAT_VERSION = 2  # the folder's namespace; 2: per-structure rows with checksums (SQLite, or .pt shards)
ROW_FORMAT = 2  # the file's user_version; 2: the CRC covers key, dtype and shape too (1: the payload only)
# what encoders store; any other dtype string in a row is damage, never handed to numpy
ROW_DTYPES = frozenset(np.dtype(t).str for t in (np.float16, np.float32, np.float64, np.int8, np.int16, np.int32,
                                                 np.int64, np.uint8, np.bool_))
DEFAULT_FEATURE_CACHE = "~/.cache/equiprop/features"
STORE_NAME = "features.sqlite"
QUERY_CHUNK = 500  # keys per SELECT (SQLite's bound-parameter limit is 999 on old builds)
SCHEMA = """
PRAGMA journal_mode=WAL;
PRAGMA synchronous=NORMAL;
CREATE TABLE IF NOT EXISTS features (key TEXT PRIMARY KEY, dtype TEXT, shape TEXT, crc INTEGER, payload BLOB);
"""


def default_cache_dir() -> Path:
    base = os.environ.get("EQUIPROP_CACHE")
    return (Path(base) / "features" if base else Path(DEFAULT_FEATURE_CACHE)).expanduser()


def memory_limit_bytes() -> int:
    return int(float(os.environ.get("EQUIPROP_FEATURE_MEMORY_MB", "1024")) * 2 ** 20)


def weights_digest(tensors: dict[str, torch.Tensor]) -> str:
    h = hashlib.sha256()
    for name in sorted(tensors):
        h.update(name.encode())
        h.update(tensors[name].detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def structure_keys(data) -> list[str]:
    """One content key per graph of a PyG ``Batch`` (or of a single ``Data``)."""
    num_graphs = int(getattr(data, "num_graphs", 1) or 1)
    batch = data[keys.BATCH] if keys.BATCH in data and data[keys.BATCH] is not None else None
    if batch is None:
        batch = torch.zeros(data.num_nodes, dtype=torch.long)
    node_ptr = torch.cat([torch.zeros(1, dtype=torch.long), torch.bincount(batch, minlength=num_graphs).cumsum(0)])
    edge_graph = batch[data[keys.EDGE_INDEX][0]]
    edge_ptr = torch.cat([torch.zeros(1, dtype=torch.long),
                          torch.bincount(edge_graph, minlength=num_graphs).cumsum(0)])
    numbers, positions = data[keys.ATOMIC_NUMBERS].cpu(), data[keys.POSITIONS].detach().double().cpu()
    cells, pbc = data[keys.CELL].detach().double().cpu(), data[keys.PBC].cpu()
    edges, shifts = data[keys.EDGE_INDEX].cpu(), data[keys.EDGE_CELL_SHIFT].detach().double().cpu()
    result = []
    for g in range(num_graphs):
        n0, n1, e0, e1 = int(node_ptr[g]), int(node_ptr[g + 1]), int(edge_ptr[g]), int(edge_ptr[g + 1])
        h = hashlib.sha256()
        for part in (numbers[n0:n1], positions[n0:n1], cells[g], pbc[g], edges[:, e0:e1] - n0, shifts[e0:e1]):
            h.update(part.contiguous().numpy().tobytes())
        result.append(h.hexdigest()[:32])
    return result


def row_crc(key, dtype, shape, payload: bytes) -> int:
    """CRC-32 of a row's bytes and of the columns that say how to read them."""
    return zlib.crc32(payload, zlib.crc32(json.dumps([key, dtype, shape], default=repr).encode()))


def encode_row(key: str, value: torch.Tensor) -> tuple:
    array = value.detach().cpu().contiguous().numpy()
    payload, dtype, shape = array.tobytes(), array.dtype.str, json.dumps(list(array.shape))
    return key, dtype, shape, row_crc(key, dtype, shape, payload), payload


def row_problem(row: tuple) -> str | None:
    """What is wrong with a stored row (key, dtype, shape, crc, payload), or None if it can be read as it says."""
    key, dtype, shape, crc, payload = row
    if not isinstance(payload, bytes) or row_crc(key, dtype, shape, payload) != crc:
        return "fails its checksum"
    try:
        dims = json.loads(shape)
        ok = (dtype in ROW_DTYPES and isinstance(dims, list) and all(type(d) is int and d >= 0 for d in dims)
              and math.prod(dims) * np.dtype(dtype).itemsize == len(payload))
    except (TypeError, ValueError):
        ok = False
    return None if ok else f"has an impossible dtype or shape ({dtype!r}, {shape!r})"


class FeatureCache:
    """Per-atom feature tensors by structure key, on disk under ``root/<namespace hash>/features.sqlite`` with the
    most recently used ones in memory. Each process (DataLoader workers, DDP ranks) opens its own connection."""

    def __init__(self, root: str | Path | None, namespace: dict, memory_limit: int | None = None):
        self.namespace = {"version": CACHE_FORMAT_VERSION, **namespace}
        digest = hashlib.sha256(json.dumps(self.namespace, sort_keys=True, default=str).encode()).hexdigest()[:24]
        self.directory = (Path(root).expanduser() if root else default_cache_dir()) / digest
        self.path = self.directory / STORE_NAME
        self.memory: OrderedDict[str, torch.Tensor] = OrderedDict()  # least recently used first
        self.memory_bytes, self.memory_limit = 0, memory_limit_bytes() if memory_limit is None else memory_limit
        self.hits = self.misses = 0
        self._connection, self._pid, self._read_only = None, None, False

    # -- reading ----------------------------------------------------------------------------------------------------
    def get(self, key: str) -> torch.Tensor | None:
        return self.get_many([key])[0]

    def get_many(self, names: list[str]) -> list[torch.Tensor | None]:
        """The cached tensor of each key (None for a miss): memory first, the rest in one query per 500 keys."""
        found = {k: self.memory.get(k) for k in names}
        for k, v in found.items():
            if v is not None:
                self.memory.move_to_end(k)
        wanted = [k for k, v in found.items() if v is None]
        for start in range(0, len(wanted), QUERY_CHUNK):
            chunk = wanted[start:start + QUERY_CHUNK]
            rows = self._execute(f"SELECT key, dtype, shape, crc, payload FROM features WHERE key IN "
                                 f"({','.join('?' * len(chunk))})", chunk)
            for row in rows:
                value = self._decode(row)
                if value is not None:
                    found[row[0]] = value
                    self._remember(row[0], value)
        result = [found[k] for k in names]
        self.misses += sum(v is None for v in result)
        self.hits += sum(v is not None for v in result)
        return result

    def _decode(self, row) -> torch.Tensor | None:
        key, dtype, shape, _, payload = row
        problem = row_problem(row)
        if problem is not None:
            warnings.warn(f"feature cache {self.path}: the row of structure {key} {problem} (corrupted): deleted; it "
                          "is recomputed")
            self._write("DELETE FROM features WHERE key = ?", [(key,)])
            return None
        return torch.from_numpy(np.frombuffer(bytearray(payload), dtype=np.dtype(dtype)).reshape(json.loads(shape)))

    def _remember(self, key: str, value: torch.Tensor) -> None:
        if key not in self.memory:
            self.memory[key] = value
            self.memory_bytes += value.nbytes
        while self.memory_bytes > self.memory_limit and self.memory:
            self.memory_bytes -= self.memory.popitem(last=False)[1].nbytes

    # -- writing ----------------------------------------------------------------------------------------------------
    def put(self, entries: dict[str, torch.Tensor]) -> None:
        """Add entries in memory and on disk in one transaction (rows already there, e.g. from another rank, stay)."""
        if not entries:
            return
        entries = {k: v.detach().cpu().contiguous() for k, v in entries.items()}
        for key, value in entries.items():
            self._remember(key, value)
        self._write("INSERT OR IGNORE INTO features VALUES (?, ?, ?, ?, ?)",
                    [encode_row(k, v) for k, v in entries.items()])

    def _write(self, sql: str, rows: list[tuple]) -> None:
        try:
            self._execute("SELECT 1", [])  # opened first: the folder may prove read-only, the file damaged
            if not self._read_only:
                self._execute(sql, rows, many=True)
        except sqlite3.OperationalError as err:  # a read-only cache folder: features stay in memory for this run
            self._read_only = True
            warnings.warn(f"feature cache {self.path} is not writable ({err}): features are kept in memory only")

    # -- the file -----------------------------------------------------------------------------------------------------
    def __getstate__(self):  # a connection never crosses a copy or a process boundary (deepcopy, spawn): reopened
        return {**self.__dict__, "_connection": None, "_pid": None}

    @property
    def connection(self) -> sqlite3.Connection:
        if self._connection is None or self._pid != os.getpid():
            self._connection, self._pid = None, os.getpid()
            try:
                self.directory.mkdir(parents=True, exist_ok=True)
                files = [self.directory, *(f for f in (self.path, Path(f"{self.path}-wal"), Path(f"{self.path}-shm"))
                                           if f.exists())]
                if not all(os.access(f, os.W_OK) for f in files):  # never let SQLite map a read-only WAL index
                    raise PermissionError(f"{', '.join(str(f) for f in files if not os.access(f, os.W_OK))} "
                                          "read-only")
                namespace = self.directory / "namespace.json"
                if not namespace.exists():
                    namespace.write_text(json.dumps(self.namespace, indent=1, default=str))
                self._connection = sqlite3.connect(self.path, timeout=120)
                self._connection.executescript(SCHEMA)
                self._upgrade()
            except (PermissionError, sqlite3.OperationalError) as err:
                if isinstance(err, sqlite3.OperationalError) and not ("readonly" in str(err) or "unable to open"
                                                                      in str(err)):
                    raise  # locked past the timeout: not a folder problem
                self._open_read_only(err)
            else:
                self._import_shards()
        return self._connection

    def _upgrade(self) -> None:
        """Rows of the previous row format (their dtype and shape outside the CRC) are deleted once, counted."""
        connection, old = self._connection, 0
        if connection.execute("PRAGMA user_version").fetchone()[0] >= ROW_FORMAT:
            return
        connection.execute("BEGIN IMMEDIATE")  # one process upgrades; the others then see the new version
        try:
            if connection.execute("PRAGMA user_version").fetchone()[0] < ROW_FORMAT:
                old = connection.execute("SELECT count(*) FROM features").fetchone()[0]
                connection.execute("DELETE FROM features")
                connection.execute(f"PRAGMA user_version = {ROW_FORMAT}")
            connection.commit()
        except BaseException:
            connection.rollback()
            raise
        if old:
            warnings.warn(f"feature cache {self.path}: {old} rows of an older format (dtype and shape outside their "
                          "checksum) deleted; they are recomputed")

    def _open_read_only(self, err: Exception) -> None:
        """A folder that cannot be written to: its file is read as it is (rows still checked), if of the current
        format; new features stay in memory for this run."""
        self._read_only, disk, note = True, None, "features are kept in memory only"
        if self._connection is not None:
            self._connection.close()
        try:  # immutable: no journal or lock files, which the folder could not hold
            disk = sqlite3.connect(f"file:{quote(str(self.path))}?immutable=1", uri=True)
            if disk.execute("PRAGMA user_version").fetchone()[0] != ROW_FORMAT:
                disk.close()
                disk, note = None, note + " (its rows are of an older format: recomputed)"
        except sqlite3.DatabaseError:
            disk = None
        self._connection = disk or sqlite3.connect(":memory:")
        if disk is None:
            self._connection.executescript(SCHEMA)
        warnings.warn(f"feature cache {self.path} is not writable ({err}): {note}")

    def _execute(self, sql: str, params, many: bool = False) -> list:
        """Rows of one query (``many``: one statement over rows, in one transaction); a file SQLite cannot read is
        moved aside (with a warning) and the cache starts again."""
        def run():
            if not many:
                return self.connection.execute(sql, params).fetchall()
            with self.connection:
                self.connection.executemany(sql, params)
            return []

        try:
            return run()
        except sqlite3.DatabaseError as err:
            if isinstance(err, sqlite3.OperationalError):  # locked or unopenable: not a damaged file
                raise
            if self._connection is not None:
                self._connection.close()
            self._connection = None
            if self._read_only:  # cannot be moved aside: this run works from memory
                self._connection = sqlite3.connect(":memory:")
                self._connection.executescript(SCHEMA)
                warnings.warn(f"feature cache {self.path} is unreadable ({err}) and not writable: features are "
                              "kept in memory only")
                return []
            aside = self.path.with_name(f"{STORE_NAME}.corrupt-{os.getpid()}")
            os.replace(self.path, aside)
            for suffix in ("-wal", "-shm"):
                Path(f"{self.path}{suffix}").unlink(missing_ok=True)
            warnings.warn(f"feature cache {self.path} is unreadable ({err}): moved to {aside}; its structures "
                          "are recomputed")
            return run()

    def _import_shards(self) -> None:
        """Shards of the previous format (``<sha256>.pt``): verified, imported in one transaction, then deleted."""
        for shard in sorted(self.directory.glob("*.pt")):
            entries = read_shard(shard)
            if entries:
                with self._connection:
                    self._connection.executemany("INSERT OR IGNORE INTO features VALUES (?, ?, ?, ?, ?)",
                                                 [encode_row(k, v) for k, v in entries.items()])
            try:
                shard.unlink(missing_ok=True)
            except OSError:  # a read-only folder: imported again next time (INSERT OR IGNORE), never read twice
                pass


def read_shard(shard: Path) -> dict[str, torch.Tensor] | None:
    """A previous-format shard's ``{key: tensor}``, or None (with a warning) if it fails its checksum or to load."""
    data = shard.read_bytes()
    problem = None
    if hashlib.sha256(data).hexdigest() != shard.stem:
        problem = "its bytes do not match the sha256 in its name"
    else:
        try:
            buffer = io.BytesIO(data)
            entries = torch.load(buffer, map_location="cpu", weights_only=True)
        except Exception as err:  # noqa: BLE001 - any unreadable shard is a cache miss, never a crash
            problem = f"it does not load ({type(err).__name__})"
        else:
            if not (isinstance(entries, dict) and all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                                      for k, v in entries.items())):
                problem = "it does not hold {key: tensor}"
    if problem is None:
        return entries
    warnings.warn(f"feature cache shard {shard} is corrupted ({problem}): not imported; its structures are recomputed")
    return None

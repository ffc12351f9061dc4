"""Merge several sources into one table: one record per material, each carrying only the labels it has.

Labels of one material from two sources are combined only when the ids match *and* the cells match (same composition,
lattice vectors equal within ``cell_tol`` Å): tensors are frame-dependent, so a rotated or re-chosen cell keeps its
labels in a record of its own (id suffixed with ``@<source>``), and the mismatch is counted.
"""

from __future__ import annotations

import json
import sqlite3
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import numpy as np

from equiprop.data.errors import SkipLog
from equiprop.data.record import CrystalRecord
from equiprop.data.sources.base import SourceResult

CELL_TOL = 0.01  # Å, largest difference of any lattice-vector component
LABEL_RTOL = 1e-3  # two sources' labels of one task "agree" within this relative tolerance


@dataclass
class MergeReport:
    merged: Counter = field(default_factory=Counter)  # "a + b" -> records whose labels were combined
    frame_mismatches: SkipLog = field(default_factory=SkipLog)  # same id, different cell: kept apart
    conflicts: SkipLog = field(default_factory=SkipLog)  # same task labelled twice with different values: first kept

    @property
    def num_merged(self) -> int:
        return sum(self.merged.values())


def same_cell(a: CrystalRecord, b: CrystalRecord, cell_tol: float = CELL_TOL) -> bool:
    return (a.num_atoms == b.num_atoms and np.array_equal(np.sort(a.numbers), np.sort(b.numbers))
            and np.allclose(a.cell, b.cell, rtol=0.0, atol=cell_tol))


def merge_sources(results: list[SourceResult], cell_tol: float = CELL_TOL, per_atom: frozenset[str] = frozenset()
                  ) -> tuple[list[CrystalRecord], MergeReport]:
    """Records of all sources, merged by id and cell. Earlier sources take precedence for structure and labels.
    ``per_atom``: tasks whose labels are per atom; they combine only where both sources list the atoms in one
    order (else the other source's per-atom labels would land on the wrong atoms), and count as conflicts otherwise."""
    table = _MemoryTable()
    report = _merge_into(table, [result.records for result in results], cell_tol, per_atom)
    return table.records, report


def _merge_into(table, streams: list[Iterable[CrystalRecord]], cell_tol: float, per_atom: frozenset[str]
                ) -> MergeReport:
    """The merge itself, over a table that finds the records kept under an id (``with_id``: (handle, record)
    pairs in table order), rewrites one after combining (``update``) and appends (``add``)."""
    report = MergeReport()
    for stream in streams:
        for record in stream:
            same_id = table.with_id(record.id)
            match = next(((h, r) for h, r in same_id if same_cell(r, record, cell_tol)), None)
            if match is not None:
                _combine(match[1], record, report, per_atom, cell_tol)
                table.update(*match)
                continue
            merge_id = record.id
            if same_id:
                report.frame_mismatches.add(f"{same_id[0][1].source} vs {record.source}", record.id)
                record = _renamed(record, f"{record.id}@{record.source}")
            table.add(merge_id, record)
    return report


class _MemoryTable:
    """Records in a list, found by id through a dict; combining changes them in place."""

    def __init__(self):
        self.records: list[CrystalRecord] = []
        self.by_id: dict[str, list[CrystalRecord]] = {}

    def with_id(self, merge_id: str) -> list[tuple[None, CrystalRecord]]:
        return [(None, r) for r in self.by_id.get(merge_id, [])]

    def update(self, handle, record: CrystalRecord) -> None:
        pass  # already changed in place

    def add(self, merge_id: str, record: CrystalRecord) -> None:
        self.by_id.setdefault(merge_id, []).append(record)
        self.records.append(record)


def _combine(kept: CrystalRecord, other: CrystalRecord, report: MergeReport, per_atom: frozenset[str],
             cell_tol: float) -> None:
    report.merged[f"{kept.source.split('+')[0]} + {other.source}"] += 1
    same_order = np.array_equal(kept.numbers, other.numbers) and np.allclose(kept.positions, other.positions,
                                                                            rtol=0.0, atol=cell_tol)
    for task, value in other.labels.items():
        if task in per_atom and not same_order:
            report.conflicts.add(f"{task}: per-atom labels of atoms in another order (first kept)", kept.id)
        elif task not in kept.labels:
            kept.labels[task] = value
        elif not np.allclose(kept.labels[task], value, rtol=LABEL_RTOL, atol=1e-8, equal_nan=True):
            report.conflicts.add(f"{task} differs between sources (first kept)", kept.id)
    kept.source = f"{kept.source}+{other.source}"


def _renamed(record: CrystalRecord, new_id: str) -> CrystalRecord:
    return CrystalRecord(id=new_id, cell=record.cell, positions=record.positions, numbers=record.numbers,
                         pbc=record.pbc, source=record.source, labels=record.labels)


# -- the same merge for records that do not fit in memory ---------------------------------------------------------
STAGING_SCHEMA = """
CREATE TABLE staged (position INTEGER PRIMARY KEY, merge_id TEXT, header TEXT, arrays BLOB);
CREATE INDEX staged_by_id ON staged (merge_id);
"""


def _label_json(value):
    if isinstance(value, np.ndarray):
        return {"__array__": list(value.shape), "values": value.astype(np.float64).ravel().tolist()}
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"label of type {type(value).__name__}")


def _label_value(value):
    if isinstance(value, dict) and "__array__" in value:
        return np.asarray(value["values"], dtype=np.float64).reshape(value["__array__"])
    return value


def _stage_row(record: CrystalRecord) -> tuple[str, bytes]:
    """(header JSON, array bytes) of a record, exact: float64 cell and positions, int64 numbers, bool pbc."""
    header = json.dumps({"id": record.id, "source": record.source, "labels": record.labels}, default=_label_json)
    return header, b"".join(a.tobytes() for a in (record.cell, record.pbc, record.numbers, record.positions))


def _unstage(header: str, arrays: bytes) -> CrystalRecord:
    meta = json.loads(header, object_hook=_label_value)
    n = (len(arrays) - 75) // 32  # 72 bytes of cell, 3 of pbc, then 8 per atomic number and 24 per position
    return CrystalRecord(id=meta["id"], cell=np.frombuffer(arrays, np.float64, 9, 0).reshape(3, 3),
                         pbc=np.frombuffer(arrays, bool, 3, 72).copy(),
                         numbers=np.frombuffer(arrays, np.int64, n, 75).copy(),
                         positions=np.frombuffer(arrays, np.float64, 3 * n, 75 + 8 * n).reshape(n, 3),
                         source=meta["source"], labels=meta["labels"])


class StagedRecords:
    """The merged table of ``merge_staged``, read back in table order one record at a time (``len`` known)."""

    def __init__(self, connection: sqlite3.Connection, count: int):
        self.connection, self.count = connection, count

    def __len__(self) -> int:
        return self.count

    def __iter__(self):
        cursor = self.connection.execute("SELECT header, arrays FROM staged ORDER BY position")
        for header, arrays in cursor:
            yield _unstage(header, arrays)


class _StagedTable:
    """Records in an SQLite file, found by id through an index; a combined record's row is rewritten."""

    def __init__(self, connection: sqlite3.Connection):
        self.connection, self.count = connection, 0

    def with_id(self, merge_id: str) -> list[tuple[int, CrystalRecord]]:
        rows = self.connection.execute("SELECT position, header, arrays FROM staged WHERE merge_id = ? "
                                       "ORDER BY position", (merge_id,)).fetchall()
        return [(position, _unstage(header, arrays)) for position, header, arrays in rows]

    def update(self, position: int, record: CrystalRecord) -> None:
        self.connection.execute("UPDATE staged SET header = ?, arrays = ? WHERE position = ?",
                                (*_stage_row(record), position))

    def add(self, merge_id: str, record: CrystalRecord) -> None:
        self.connection.execute("INSERT INTO staged (merge_id, header, arrays) VALUES (?, ?, ?)",
                                (merge_id, *_stage_row(record)))
        self.count += 1


def merge_staged(streams: list[Iterable[CrystalRecord]], path: Path, cell_tol: float = CELL_TOL,
                 per_atom: frozenset[str] = frozenset()) -> tuple[StagedRecords, MergeReport]:
    """``merge_sources`` over record streams, with the table staged in an SQLite file at ``path`` (replaced if
    present) instead of memory: the same records in the same order, the same report. The streams are consumed here."""
    Path(path).unlink(missing_ok=True)
    connection = sqlite3.connect(path, check_same_thread=False)  # read back by the build pool's feeder thread
    connection.executescript(STAGING_SCHEMA)
    table = _StagedTable(connection)
    with connection:  # one transaction: staging is rebuilt from the sources after a kill anyway
        report = _merge_into(table, streams, cell_tol, per_atom)
    return StagedRecords(connection, table.count), report

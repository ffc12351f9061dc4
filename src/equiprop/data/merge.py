"""Merge several sources into one table: one record per material, each carrying only the labels it has.

Labels of one material from two sources are combined only when the ids match *and* the cells match (same composition,
lattice vectors equal within ``cell_tol`` Å): tensors are frame-dependent, so a rotated or re-chosen cell keeps its
labels in a record of its own (id suffixed with ``@<source>``), and the mismatch is counted.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

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
    report = MergeReport()
    by_id: dict[str, list[CrystalRecord]] = {}
    table: list[CrystalRecord] = []
    for result in results:
        for record in result.records:
            same_id = by_id.setdefault(record.id, [])
            match = next((r for r in same_id if same_cell(r, record, cell_tol)), None)
            if match is not None:
                _combine(match, record, report, per_atom, cell_tol)
                continue
            if same_id:
                report.frame_mismatches.add(f"{same_id[0].source} vs {record.source}", record.id)
                record = _renamed(record, f"{record.id}@{record.source}")
            same_id.append(record)
            table.append(record)
    return table, report


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

"""What every reader returns, and the one routine that turns raw entries into validated, labelled records."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from equiprop.data.errors import ConfigError, DataError, SkipLog
from equiprop.data.record import CrystalRecord
from equiprop.data.tasks import TaskSpec


@dataclass
class SourceResult:
    """Records read from one source, with provenance and everything that was skipped or missing."""

    name: str  # e.g. "matminer:dielectric_constant"
    provenance: str  # file path or URL, and citation where known
    records: list[CrystalRecord] = field(default_factory=list)
    entries_read: int = 0  # raw entries seen, before any skip
    skips: SkipLog = field(default_factory=SkipLog)  # whole entries dropped, by reason
    label_skips: SkipLog = field(default_factory=SkipLog)  # single labels dropped (entry kept), by reason
    missing: Counter = field(default_factory=Counter)  # task -> labels absent or NaN/"na" in the source
    built_from: dict | None = None  # for a prebuilt file (the bundled dataset): the report of its own build
    keep_records: bool = True  # False: a stream, records pass through ``add_entry`` without being kept
    added: int = 0  # records passed on by ``add_entry`` (kept in ``records``, or streamed)
    # their labels as this source gave them: a merge later adds other sources' labels to kept records
    added_labels: Counter = field(default_factory=Counter)

    def label_counts(self) -> Counter:
        return Counter(self.added_labels)


class Source:
    """Base class of readers. Subclasses implement ``load(tasks)``; ``name`` identifies them in reports."""

    name: str = "source"

    def load(self, tasks: dict[str, TaskSpec]) -> SourceResult:  # pragma: no cover - interface
        raise NotImplementedError


def require_file(path: str | Path, what: str) -> Path:
    """The path if it exists, else a ConfigError naming it."""
    path = Path(path).expanduser()
    if not path.exists():
        raise ConfigError(f"{what}: file not found: {path}")
    return path


def add_entry(result: SourceResult, entry_id: str, make_record: Callable[[], CrystalRecord],
              raw_labels: dict, tasks: dict[str, TaskSpec], where: str | None = None,
              refine: Callable | None = None) -> CrystalRecord | None:
    """Build, validate and label one entry; count what is skipped. ``raw_labels`` maps task name -> raw value.

    Missing values (None, NaN, inf, "na") are masked and counted in ``result.missing``; an invalid label (wrong shape,
    asymmetric tensor, ...) is masked and counted in ``result.label_skips``; an invalid structure, or an entry left
    with no label of the requested tasks, is skipped and counted in ``result.skips``. ``refine(record, task, value,
    where)`` may check or transform a parsed label further (e.g. against the crystal's symmetry), raising DataError.
    """
    where = where or entry_id
    result.entries_read += 1
    try:
        # a streamed build checks distances where it builds the graph (graph_store.encode), from its edges
        record = make_record().validate() if result.keep_records else make_record().check_cell_only()
    except DataError as err:
        result.skips.add(err.kind, f"{where}: {err.problem}")
        return None
    for name, raw in raw_labels.items():
        task = tasks[name]
        try:
            value = task.parse(raw, where)
            if value is not None and task.level == "atom" and len(value) != record.num_atoms:
                raise DataError(where, f"{name}: per-atom label has {len(value)} rows, the structure has "
                                       f"{record.num_atoms} atoms", "per-atom label of wrong length")
            if value is not None and refine is not None:
                value = refine(record, task, value, where)
        except DataError as err:
            result.label_skips.add(f"{name}: {err.kind}", f"{where}: {err.problem}")
            continue
        if value is None:
            result.missing[name] += 1
        else:
            record.labels[name] = value
    if not record.labels:
        result.skips.add("no label of the requested tasks", where)
        return None
    result.added += 1
    result.added_labels.update(record.labels.keys())
    if result.keep_records:
        result.records.append(record)
    return record


def requested(columns: dict[str, str], tasks: dict[str, TaskSpec]) -> dict[str, str]:
    """The task -> column map restricted to the requested tasks."""
    return {task: col for task, col in columns.items() if task in tasks}


def get_path(doc: dict, dotted: str):
    """doc["a"]["b"] for "a.b"; a key that itself contains dots is tried first. None if absent."""
    if dotted in doc:
        return doc[dotted]
    value = doc
    for part in dotted.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value

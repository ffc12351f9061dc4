"""User data: a CGCNN-style folder of structure files plus a label CSV, or an extxyz file with labels in ``info``."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Iterator

from equiprop.data.errors import ConfigError, DataError
from equiprop.data.record import CrystalRecord, iread_extxyz, read_extxyz_text, read_structure_file, scan_xyz_frames
from equiprop.data.sources.base import Source, SourceResult, add_entry, require_file
from equiprop.data.tasks import MISSING_STRINGS, TaskSpec

ID_COLUMNS = ("id", "material_id")
STRUCTURE_FILE_PATTERNS = ("{id}.cif", "{id}.vasp", "{id}.poscar", "POSCAR_{id}")  # tried in this order


def _is_number(cell: str) -> bool:
    if cell.strip().lower() in MISSING_STRINGS:
        return True  # a missing value is a data cell, not a column name
    try:
        float(cell)
    except ValueError:
        return False
    return True


def _label_columns(tasks: dict[str, TaskSpec], available: list[str], columns: dict[str, str] | None,
                   where: str, complete: bool = True) -> dict[str, str]:
    """task -> column/info key: the explicit ``columns`` entry, else the task's ``key``, else its name.

    A task found nowhere is left out (another source may provide it); none found at all is a ConfigError.
    ``complete=False``: ``available`` is what a stream has seen so far; nothing is an error yet.
    """
    chosen = {}
    for name, task in tasks.items():
        if columns and name in columns:
            if columns[name] not in available and not complete:
                continue
            if columns[name] not in available:
                raise ConfigError(f"{where}: column {columns[name]!r} of task {name!r} not found "
                                  f"(available: {available})")
            chosen[name] = columns[name]
        elif task.key in available:
            chosen[name] = task.key
        elif name in available:
            chosen[name] = name
    if not chosen and complete:
        raise ConfigError(f"{where}: no label of the requested tasks {list(tasks)} (available: {available}); "
                          "name the columns with columns={task: column}")
    return chosen


class StructureFolder(Source):
    """A folder of structure files with a label CSV, as used by CGCNN.

    Structures are ``<id>.cif``, ``<id>.vasp``, ``<id>.poscar`` or ``POSCAR_<id>``. The CSV either has no header
    (CGCNN's ``id_prop.csv``: ``id,target`` rows; the target is the single requested task) or a header with an ``id``
    or ``material_id`` column and one column per task (named by ``columns``, else the task's key, else its name).
    """

    def __init__(self, root: str, labels: str = "id_prop.csv", columns: dict[str, str] | None = None):
        """
        Args:
            root: folder holding the structure files and the label CSV.
            labels: label CSV file name, relative to ``root``.
            columns: task -> CSV column (headered CSVs only); default: each task's key, else its name.
        """
        self.root = root
        self.labels = labels
        self.columns = columns
        self.name = f"folder:{Path(root).name}"

    def load(self, tasks: dict[str, TaskSpec]) -> SourceResult:
        root = require_file(self.root, self.name)
        csv_path = require_file(root / self.labels, self.name)
        with open(csv_path, newline="", encoding="utf-8") as f:
            rows = [[cell.strip() for cell in row] for row in csv.reader(f) if any(cell.strip() for cell in row)]
        if not rows:
            raise ConfigError(f"{self.name}: {csv_path} has no rows")
        header = rows[0]
        has_header = header[0].lower() in ID_COLUMNS or not all(_is_number(cell) for cell in header[1:])
        result = SourceResult(self.name, str(csv_path))
        if has_header:
            entries = self._headered(header, rows[1:], tasks, str(csv_path))
        else:
            entries = self._headerless(rows, tasks, str(csv_path))
        for entry_id, raw_labels in entries:
            structure_file = self._structure_file(root, entry_id)
            if structure_file is None:
                result.entries_read += 1
                result.skips.add("structure file missing", entry_id)
                continue
            # the file is read inside the callable so that a malformed file becomes a counted skip
            add_entry(result, entry_id,
                      lambda: read_structure_file(structure_file, id=entry_id, source=self.name)[0],
                      raw_labels, tasks, where=str(structure_file))
        return result

    def _headerless(self, rows: list[list[str]], tasks: dict[str, TaskSpec], where: str) -> list[tuple[str, dict]]:
        if len(tasks) != 1:
            raise ConfigError(f"{where} has no header, so its single target column cannot be matched to the "
                              f"{len(tasks)} requested tasks {list(tasks)}: add a header (id,<column per task>)")
        (task,) = tasks
        widths = {len(row) for row in rows}
        if widths != {2}:
            raise ConfigError(f"{where}: a CSV without header must have exactly 2 columns (id,target); "
                              f"found rows of {sorted(widths)} cells")
        return [(row[0], {task: row[1]}) for row in rows]

    def _headered(self, header: list[str], rows: list[list[str]], tasks: dict[str, TaskSpec],
                  where: str) -> list[tuple[str, dict]]:
        id_columns = [i for i, name in enumerate(header) if name.lower() in ID_COLUMNS]
        if not id_columns:
            raise ConfigError(f"{where}: no id column (expected one of {ID_COLUMNS}; header: {header})")
        id_index = id_columns[0]
        label_columns = _label_columns(tasks, header, self.columns, where)
        indices = {task: header.index(column) for task, column in label_columns.items()}
        entries = []
        for line, row in enumerate(rows, start=2):
            if len(row) != len(header):
                raise DataError(f"{where}:{line}", f"{len(row)} cells but the header has {len(header)}",
                                "malformed CSV row")
            entries.append((row[id_index], {task: row[i] for task, i in indices.items()}))
        return entries

    @staticmethod
    def _structure_file(root: Path, entry_id: str) -> Path | None:
        for pattern in STRUCTURE_FILE_PATTERNS:
            candidate = root / pattern.format(id=entry_id)
            if candidate.is_file():
                return candidate
        return None


class ExtXYZ(Source):
    """An extended-XYZ file of crystals (many frames), with labels in each frame's ``info`` (e.g. ``Ef=-1.2``) and the
    labels of per-atom tasks in its per-atom columns (``Properties=...:born_z:R:9``).

    Tensor labels may be flat (9 numbers for a 3x3 tensor). Frame ids come from info "id"/"material_id", else
    "<file stem>:<frame index>". ase moves the properties it knows (``energy``, ``stress``, ``forces``, ``charges``,
    ``magmoms``) into a calculator; they are read from there under the same names.
    """

    def __init__(self, path: str, columns: dict[str, str] | None = None):
        """
        Args:
            path: the .xyz/.extxyz file.
            columns: task -> info key; default: each task's key, else its name.
        """
        self.path = path
        self.columns = columns
        self.name = f"extxyz:{Path(path).stem}"

    def load(self, tasks: dict[str, TaskSpec]) -> SourceResult:
        path = require_file(self.path, self.name)
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as err:
            raise DataError(str(path), f"unreadable file ({err})", "unreadable file") from None
        frames = read_extxyz_text(text, str(path), self.name)
        available = sorted({key for frame in frames for key in frame.labels})
        label_keys = _label_columns(tasks, available, self.columns, str(path))
        result = SourceResult(self.name, str(path))
        for index, frame in enumerate(frames):
            self._add(result, frame, index, label_keys, tasks, path)
        return result

    def count(self) -> int:
        """Frames in the file, from its atom-count lines (atoms not parsed): ``storage: auto`` decides with it."""
        offsets, broken = scan_xyz_frames(require_file(self.path, self.name))
        return len(offsets) - 1 + (broken is not None)

    def stream(self, tasks: dict[str, TaskSpec]) -> tuple[SourceResult, Iterator[CrystalRecord]]:
        """The records one frame at a time (``ase.io.iread``), for builds that must not hold them all: the result's
        counts fill as the iterator is consumed. Label keys are chosen, as ``load`` chooses them, from the keys of
        the frames read so far (a label that first appears in a later frame is read from there on); a file with
        none of the tasks' labels is the same ConfigError, raised at its end."""
        path = require_file(self.path, self.name)
        result = SourceResult(self.name, str(path), keep_records=False)

        def records() -> Iterator[CrystalRecord]:
            seen, label_keys = set(), {}
            for index, frame in enumerate(iread_extxyz(path, self.name)):
                if not seen.issuperset(frame.labels):
                    seen.update(frame.labels)
                    label_keys = _label_columns(tasks, sorted(seen), self.columns, str(path), complete=False)
                record = self._add(result, frame, index, label_keys, tasks, path)
                if record is not None:
                    yield record
            _label_columns(tasks, sorted(seen), self.columns, str(path))

        return result, records()

    @staticmethod
    def _add(result, frame, index, label_keys, tasks, path):
        info, frame.labels = frame.labels, {}  # read_extxyz_text puts all of info there; keep only tasks
        raw_labels = {task: info.get(key) for task, key in label_keys.items()}
        return add_entry(result, frame.id, lambda: frame, raw_labels, tasks, where=f"{path}[{index}] ({frame.id})")

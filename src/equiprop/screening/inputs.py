"""Screening inputs as one ordered list of items, read by index range without reading anything else.

An ``--input`` is a folder (one level, sorted; dotfiles skipped), a glob, a structure file (CIF, POSCAR, extxyz with
many frames), an ASE database (``.db``) or ``bundled:NAME``. Each becomes a segment of a known length (a folder: its
entries; an extxyz file: its frames, found by scanning frame headers, not parsing atoms; a database: its rows), so
that item ``i`` of the whole list is fixed before anything is parsed and chunk ``k`` is items ``[k*C, (k+1)*C)``.

Reading yields, per item, a ``CrystalRecord`` (``source`` = its file) or an ``InputFailure`` (a row naming the file
and the problem: unreadable, unknown type, a sub-folder, ...): nothing is dropped.
"""

from __future__ import annotations

import glob
import hashlib
import io
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from equiprop.data.errors import ConfigError, DataError
from equiprop.data.record import CrystalRecord, from_ase, scan_xyz_frames, structure_format

GLOB_CHARS = set("*?[")


@dataclass
class InputFailure:
    id: str
    file: str
    reason: str
    error: str


def ase_connect(path: Path):
    import ase.db

    return ase.db.connect(str(path))


@lru_cache(maxsize=64)
def raw_layout(path: Path) -> bool:
    """Whether an ASE database's rows can be read straight from its SQLite table: the layout (version 9) whose blobs
    ``AseDatabase._read_raw`` decodes, on a little-endian machine; anything else is read through ase."""
    import sqlite3

    if not np.little_endian:
        return False
    try:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as connection:
            version = connection.execute("SELECT value FROM information WHERE name = 'version'").fetchone()
            columns = {c[1] for c in connection.execute("PRAGMA table_info(systems)")}
    except sqlite3.Error:
        return False
    return version == ("9",) and {"numbers", "positions", "cell", "pbc", "key_value_pairs"} <= columns


def failure(err: DataError, file: str, id: str | None = None) -> InputFailure:
    return InputFailure(id or Path(file).stem, file, err.kind, str(err))


class FileList:
    """Structure files, one item each (CIF/POSCAR; anything else is a failed item naming the problem)."""

    kind = "files"

    def __init__(self, paths: list[Path]):
        self.paths = paths

    def __len__(self):
        return len(self.paths)

    def signature(self) -> dict:
        """Names, sizes and modification times (a file replaced since makes its chunk stale: refused)."""
        digest = hashlib.sha256()
        for path in self.paths:
            stat = path.stat() if path.is_file() else None
            digest.update(f"{path}\t{stat.st_size if stat else ''}\t{stat.st_mtime_ns if stat else ''}\n".encode())
        return {"kind": self.kind, "count": len(self.paths), "first": str(self.paths[0]) if self.paths else "",
                "files_sha256": digest.hexdigest()}

    def read(self, start: int, stop: int):
        for path in self.paths[start:stop]:
            yield read_file_item(path)


def read_file_item(path: Path):
    """The record of one structure file, or why there is none (``equiprop predict``'s reading and checks)."""
    from equiprop.data.record import read_inputs

    if path.is_dir():  # predict would search it; a screen reads folders one level deep, as predict does
        return InputFailure(path.name, str(path), "folder not searched",
                            f"{path}: a folder inside an input folder: not searched (give it to --input)")
    items = read_inputs([str(path)], fast_cif=True)  # gemmi for CIFs it reads as pymatgen does (parity-tested)
    if len(items) == 1 and isinstance(items[0], CrystalRecord):
        return items[0]
    if len(items) == 1:
        return InputFailure(items[0]["id"], items[0]["file"], items[0]["reason"], items[0]["error"])
    return InputFailure(path.stem, str(path), "multi-frame file in a file list",
                        f"{path}: holds {len(items)} structures; give multi-frame files to --input directly")


class ExtxyzFrames:
    """The frames of one extxyz file, located by their byte offsets (headers scanned; atoms not parsed)."""

    kind = "extxyz"

    def __init__(self, path: Path):
        self.path = path
        self.offsets, self.broken = scan_xyz_frames(path)  # broken: why the file ends early (a failed last item)

    def __len__(self):
        return len(self.offsets) - 1 + (self.broken is not None)

    def signature(self) -> dict:
        stat = self.path.stat()
        return {"kind": self.kind, "path": str(self.path.resolve()), "size": stat.st_size,
                "mtime_ns": stat.st_mtime_ns, "count": len(self)}

    def read(self, start: int, stop: int):
        good = len(self.offsets) - 1
        if start < min(stop, good):
            with self.path.open("rb") as f:
                f.seek(int(self.offsets[start]))
                text = f.read(int(self.offsets[min(stop, good)] - self.offsets[start])).decode(errors="replace")
            yield from self._frames(text, start, min(stop, good))
        if self.broken is not None and stop > good:
            yield InputFailure(f"{self.path.stem}:{good}", str(self.path), "unparseable structure",
                               f"{self.path} (frame {good}): {self.broken}")

    def _frames(self, text: str, start: int, stop: int):
        import ase.io

        records = plain_extxyz(text, start, self.path)
        if records is not None:
            return records
        try:
            frames = ase.io.read(io.StringIO(text), index=":", format="extxyz")
        except Exception:  # noqa: BLE001 - ase raises many types; frame by frame finds the bad one
            frames = []
        if len(frames) == stop - start:
            return [self._record(atoms, i) for i, atoms in enumerate(frames, start)]
        return [self._one(i) for i in range(start, stop)]

    def _one(self, i: int):
        import ase.io

        with self.path.open("rb") as f:
            f.seek(int(self.offsets[i]))
            text = f.read(int(self.offsets[i + 1] - self.offsets[i])).decode(errors="replace")
        try:
            return self._record(ase.io.read(io.StringIO(text), format="extxyz"), i)
        except Exception as err:  # noqa: BLE001
            return InputFailure(f"{self.path.stem}:{i}", str(self.path), "unparseable structure",
                                f"{self.path} (frame {i}): cannot parse extxyz ({type(err).__name__}: {err})")

    def _record(self, atoms, i: int) -> CrystalRecord:
        frame_id = str(atoms.info.get("id", atoms.info.get("material_id", f"{self.path.stem}:{i}")))
        return from_ase(atoms, frame_id, str(self.path))


PLAIN_PROPERTIES = "species:S:1:pos:R:3"
LATTICE = re.compile(r'Lattice="([^"]*)"')
PROPERTIES = re.compile(r"(?:^|\s)Properties=(\S+)")
PBC = re.compile(r'(?:^|\s)pbc="([^"]*)"')
FRAME_ID = re.compile(r'(?:^|\s)(?:id|material_id)=("[^"]*"|\S+)')


def plain_extxyz(text: str, first: int, path: Path) -> list[CrystalRecord] | None:
    """Frames of the plain extxyz layout (``Lattice``, ``Properties=species:S:1:pos:R:3``, ``pbc``, ``id``), parsed
    directly (ase's general reader costs ~0.5 ms a frame); None for anything else, which ase then reads."""
    from ase.data import atomic_numbers

    lines, records, at = text.splitlines(), [], 0
    while at < len(lines) and lines[at].strip():
        count, comment = int(lines[at]), lines[at + 1]
        lattice, props, pbc = LATTICE.search(comment), PROPERTIES.search(comment), PBC.search(comment)
        if lattice is None or props is None or props.group(1) != PLAIN_PROPERTIES or \
                (pbc is not None and pbc.group(1).split() not in (["T"] * 3, ["F"] * 3)):
            return None
        found = FRAME_ID.search(comment)
        frame_id = found.group(1).strip('"') if found else f"{path.stem}:{first + len(records)}"
        try:
            table = [line.split() for line in lines[at + 2:at + 2 + count]]
            numbers = [atomic_numbers[row[0]] for row in table]
            positions = np.array([row[1:4] for row in table], dtype=np.float64)
            cell = np.array(lattice.group(1).split(), dtype=np.float64)
        except (KeyError, ValueError, IndexError):  # unknown symbol, short line ...: ase says what is wrong
            return None
        if any(len(row) != 4 for row in table) or cell.size != 9:
            return None
        records.append(CrystalRecord(frame_id, cell, positions.reshape(-1, 3), numbers,
                                     pbc=[pbc is None or pbc.group(1).startswith("T")] * 3, source=str(path)))
        at += count + 2
    return records


class AseDatabase:
    """The rows of an ASE database (ase.db), in id order, read with offset/limit."""

    kind = "ase.db"

    def __init__(self, path: Path):
        import ase.db

        self.path, self.db, self.broken = path, None, None
        try:
            self.count = ase.db.connect(str(path)).count()
        except Exception as err:  # noqa: BLE001 - sqlite and ase raise many types for a file that is not a db
            self.count, self.broken = 1, f"{path}: not a readable ASE database ({type(err).__name__}: {err})"

    def __len__(self):
        return self.count

    def signature(self) -> dict:
        stat = self.path.stat()
        return {"kind": self.kind, "path": str(self.path.resolve()), "size": stat.st_size,
                "mtime_ns": stat.st_mtime_ns, "count": self.count}

    def read(self, start: int, stop: int):
        if self.broken:  # one failed row for the whole file
            yield InputFailure(self.path.stem, str(self.path), "unreadable file", self.broken)
            return
        if raw_layout(self.path):
            yield from self._read_raw(start, stop)
            return
        self.db = self.db or ase_connect(self.path)  # one connection per process (workers fork)
        for row in self.db.select(sort="id", offset=start, limit=stop - start):
            yield self._record(row.id, row.key_value_pairs, row.toatoms)

    def _record(self, row, key_value_pairs: dict, atoms):
        row_id = str(key_value_pairs.get("material_id", f"{self.path.stem}:{row}"))
        try:
            return from_ase(atoms(), row_id, str(self.path))
        except DataError as err:
            return failure(err, str(self.path), row_id)
        except (ValueError, TypeError) as err:  # blobs of the wrong size
            return failure(DataError(row_id, f"unreadable row {row} ({err})", "unparseable structure"),
                           str(self.path), row_id)

    def _read_raw(self, start: int, stop: int):
        """The rows straight from ase's SQLite table, decoded as ase decodes them (its ``deblob``): ase's own
        ``select`` spends ~0.2 ms per row building row objects, 30x this, a quarter of a screening worker's time."""
        import sqlite3

        from ase import Atoms
        from ase.io.jsonio import decode

        with sqlite3.connect(f"file:{self.path}?mode=ro", uri=True) as connection:
            rows = connection.execute("SELECT id, numbers, positions, cell, pbc, key_value_pairs FROM systems "
                                      "ORDER BY id LIMIT ? OFFSET ?", (stop - start, start)).fetchall()
        for row, numbers, positions, cell, pbc, key_value_pairs in rows:
            if None in (numbers, positions, cell, pbc):  # a row ase would fill in (no cell, no pbc): through ase
                self.db = self.db or ase_connect(self.path)
                entry = self.db.get(id=row)
                yield self._record(row, entry.key_value_pairs, entry.toatoms)
                continue
            yield self._record(row, decode(key_value_pairs) if key_value_pairs else {}, lambda: Atoms(
                numbers=np.frombuffer(numbers, np.int32), positions=np.frombuffer(positions).reshape(-1, 3),
                cell=np.frombuffer(cell).reshape(3, 3), pbc=(pbc & np.array([1, 2, 4])).astype(bool)))

    def __getstate__(self):  # sqlite connections do not cross process boundaries
        return dict(self.__dict__, db=None)


@lru_cache(maxsize=2)
def _bundled_records(name: str) -> list[dict]:
    from equiprop.data.sources.records_json import bundled_path, read_json

    content = read_json(bundled_path(name))
    return content.get("records") or content.get("entries") or []


class Bundled:
    """A dataset shipped with equiprop (``bundled:default``: 5,909 crystals, 1 MB gzipped, loaded once per
    process as JSON dicts; records are built only for the items asked for)."""

    kind = "bundled"

    def __init__(self, name: str):
        self.name = name
        self.count = len(_bundled_records(name))

    def __len__(self):
        return self.count

    def signature(self) -> dict:
        return {"kind": self.kind, "name": self.name, "count": self.count}

    def read(self, start: int, stop: int):
        from equiprop.data.record import from_pymatgen_dict

        for d in _bundled_records(self.name)[start:stop]:
            try:
                if "structure" in d:  # the tiny layout: pymatgen dicts
                    yield from_pymatgen_dict(d["structure"], d["material_id"], f"bundled:{self.name}")
                else:
                    record = CrystalRecord.from_dict(d)
                    record.source, record.labels = f"bundled:{self.name}", {}
                    yield record
            except DataError as err:
                yield failure(err, f"bundled:{self.name}", str(d.get("id", d.get("material_id", "?"))))


def expand(inputs: list[str]) -> list:
    """Segments for the ``--input`` arguments, in order (consecutive single files share one FileList)."""
    segments, files = [], []

    def flush():
        if files:
            segments.append(FileList(list(files)))
            files.clear()

    for item in inputs:
        if item.startswith("bundled:"):
            flush()
            segments.append(Bundled(item.split(":", 1)[1]))
            continue
        path = Path(item)
        if path.is_dir():
            entries = sorted(p for p in path.iterdir() if not p.name.startswith("."))
        elif not path.exists() and GLOB_CHARS & set(item):
            entries = [Path(p) for p in sorted(glob.glob(item))]
            if not entries:
                raise ConfigError(f"--input {item}: the pattern matches no file")
        else:
            entries = [path]
        for entry in entries:
            if entry.suffix == ".db" and entry.is_file():
                flush()
                segments.append(AseDatabase(entry))
            elif structure_format(entry) == "extxyz" and entry.is_file():
                flush()
                segments.append(ExtxyzFrames(entry))
            else:
                files.append(entry)
    flush()
    return segments


class InputPlan:
    """The ordered items of all segments; ``read(indices)`` yields (index, record-or-failure)."""

    def __init__(self, segments: list):
        self.segments = segments
        self.starts = np.cumsum([0] + [len(s) for s in segments])

    def __len__(self):
        return int(self.starts[-1])

    def signature(self) -> list[dict]:
        return [s.signature() for s in self.segments]

    def read(self, indices):
        """Items at the given (sorted) global indices; consecutive runs are read as one range per segment."""
        indices = np.asarray(indices, dtype=np.int64)
        if not len(indices):
            return
        breaks = np.flatnonzero(np.diff(indices) != 1) + 1
        for run in np.split(indices, breaks):
            start, stop = int(run[0]), int(run[-1]) + 1
            first = int(np.searchsorted(self.starts, start, side="right")) - 1
            for s in range(first, len(self.segments)):
                lo, hi = max(start, self.starts[s]), min(stop, self.starts[s + 1])
                if lo >= hi:
                    break
                base = int(self.starts[s])
                yield from enumerate(self.segments[s].read(int(lo - base), int(hi - base)), int(lo))

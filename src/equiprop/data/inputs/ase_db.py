"""ASE databases (``.db``), one item per row in id order, read with offset/limit."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np

from equiprop.data.errors import DataError
from equiprop.data.inputs.failure import InputFailure
from equiprop.data.record import from_ase


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


class AseDatabase:
    """The rows of an ASE database (ase.db), in id order, read with offset/limit."""

    kind = "ase.db"

    @staticmethod
    def claims(path: Path) -> bool:
        return path.suffix == ".db" and path.is_file()

    def __init__(self, path: Path, tasks: dict | None = None):  # rows carry no labels: key_value_pairs are metadata
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
            return InputFailure.of(err, str(self.path), row_id)
        except (ValueError, TypeError) as err:  # blobs of the wrong size
            return InputFailure.of(DataError(row_id, f"unreadable row {row} ({err})", "unparseable structure"),
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



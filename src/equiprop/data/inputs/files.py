"""Single-structure files (CIF, POSCAR/CONTCAR/.vasp), one item each; anything else is a failed item naming why."""

from __future__ import annotations

import hashlib
from pathlib import Path

from equiprop.data.errors import DataError
from equiprop.data.inputs.failure import InputFailure
from equiprop.data.record import CrystalRecord, read_structure_file, structure_format


class FileList:
    kind = "files"

    def __init__(self, paths: list[Path], fast_cif: bool = False):
        self.paths, self.fast_cif = paths, fast_cif

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
            yield read_file_item(path, self.fast_cif)


def read_file_item(path: Path, fast_cif: bool = False) -> CrystalRecord | InputFailure:
    """The record of one structure file, or why there is none. ``fast_cif``: gemmi for the CIFs it reads as pymatgen
    does (``record.from_cif_fast``, parity-tested; sites possibly in another order), pymatgen for the rest."""
    try:
        if path.is_dir():  # folders are read one level deep: a folder inside one is named, not searched
            raise DataError(str(path), "a folder inside an input folder: not searched (give it to --input)",
                            "folder not searched")
        if not path.exists():
            raise DataError(str(path), "no such file", "missing file")
        if structure_format(path) is None:
            raise DataError(str(path), "unknown file type (expected .cif, POSCAR/CONTCAR/.vasp, .xyz/.extxyz, .db, "
                                       "a recipe .yaml or bundled:NAME)", "unknown file type")
        records = read_structure_file(path, fast_cif=fast_cif)
    except DataError as err:
        return InputFailure.of(err, str(path))
    if len(records) != 1:
        return InputFailure(path.stem, str(path), "multi-frame file in a file list",
                            f"{path}: holds {len(records)} structures; give multi-frame files to --input directly")
    records[0].source = str(path)
    return records[0]

"""Extended XYZ files, one item per frame: frames located by their byte offsets (headers scanned, atoms not parsed),
so that item ``i`` is known before anything is read."""

from __future__ import annotations

import io
import re
from pathlib import Path

import numpy as np

from equiprop.data.inputs.failure import InputFailure
from equiprop.data.record import CrystalRecord, frame_record, scan_xyz_frames, structure_format


class ExtxyzFrames:
    """The frames of one extxyz file. ``tasks``: the frames' ``info`` entries of these tasks become labels (as given,
    parsed by whoever uses them); without, frames carry no labels and the plain layout skips ase's general reader."""

    kind = "extxyz"

    @staticmethod
    def claims(path: Path) -> bool:
        return path.is_file() and structure_format(path) == "extxyz"

    def __init__(self, path: Path, tasks: dict | None = None):
        self.path, self.tasks = path, tasks
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

        records = None if self.tasks else plain_extxyz(text, start, self.path)
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
        record = frame_record(atoms, i, str(self.path), str(self.path))
        record.labels = {k: v for k, v in record.labels.items() if self.tasks and k in self.tasks}
        return record


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



"""The structures a user gives, one grammar for every command that reads them (``predict``, ``screen``, ``suggest``,
``distill``, ``embed``: ``--input``).

An input is a folder (its entries, one level, sorted; dotfiles skipped), a glob, a structure file (CIF, POSCAR), an
extxyz file (one item per frame), an ASE database (``.db``, one item per row), a recipe (``.yaml``: the records of its
``data.sources``) or ``bundled:NAME``. Each becomes a segment of a known length, so that item ``i`` of the whole list
is fixed before anything is parsed and a chunk is a range of items (screens read ranges, in parallel).

Reading yields, per item, a ``CrystalRecord`` (``source`` = its file) or an ``InputFailure`` naming the file and the
problem: nothing is dropped. Labels are read only where a command asks for them (``tasks``). A new input format is one
file here with a class (``claims(path)``, ``__len__``, ``read(start, stop)``, ``signature()``) added to ``FORMATS``.
"""

from __future__ import annotations

import glob
from pathlib import Path

import numpy as np

from equiprop.data.errors import ConfigError
from equiprop.data.inputs.ase_db import AseDatabase
from equiprop.data.inputs.bundled import Bundled
from equiprop.data.inputs.extxyz import ExtxyzFrames
from equiprop.data.inputs.failure import InputFailure
from equiprop.data.inputs.files import FileList
from equiprop.data.inputs.recipe import RecipeSources, SourceRecords

GLOB_CHARS = set("*?[")
BUNDLED_PREFIX = "bundled:"
FORMATS = [AseDatabase, ExtxyzFrames, RecipeSources]  # files any of these claims are a segment of their own

INPUT_HELP = ("structure files (CIF, POSCAR, extxyz frames, ASE .db rows), folders (one level), globs, a recipe .yaml "
              "(its data.sources) or bundled:NAME")

__all__ = ["InputFailure", "InputPlan", "expand", "read_structures", "FORMATS", "BUNDLED_PREFIX", "INPUT_HELP"]


def expand(inputs: list[str], tasks: dict | None = None, fast_cif: bool = False) -> list:
    """Segments for the ``--input`` arguments, in order (consecutive single files share one FileList). ``tasks``:
    read these tasks' labels where an input has them (bundled data and recipes through their Source, extxyz
    ``info``); ``fast_cif``: see ``files.read_file_item``."""
    segments, files = [], []

    def flush():
        if files:
            segments.append(FileList(list(files), fast_cif))
            files.clear()

    for item in inputs:
        if item.startswith(BUNDLED_PREFIX):
            flush()
            segments.append(bundled(item[len(BUNDLED_PREFIX):], tasks))
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
            fmt = next((f for f in FORMATS if f.claims(entry)), None)
            if fmt is None:
                files.append(entry)
                continue
            flush()
            segments.append(fmt(entry, tasks))
    flush()
    return segments


def bundled(name: str, tasks: dict | None):
    """``bundled:NAME``: read lazily without labels; with labels through its Source, whose checks the labels pass."""
    from equiprop.data.sources.records_json import BundledDataset, bundled_path

    bundled_path(name)  # an unknown name is a ConfigError listing the bundled ones
    if tasks is None:
        return Bundled(name)
    from equiprop.data.tasks import BUILTIN_TASKS

    # every known task: entries without a label of the command's tasks stay in
    return SourceRecords([BundledDataset(name)], {**BUILTIN_TASKS, **tasks}, BUNDLED_PREFIX + name)


class InputPlan:
    """The ordered items of all segments; ``read(indices)`` yields (index, record-or-failure)."""

    def __init__(self, segments: list):
        self.segments = segments
        self.starts = np.cumsum([0] + [len(s) for s in segments])

    def __len__(self):
        return int(self.starts[-1])

    @property
    def notices(self) -> list[str]:
        """What the sources behind the inputs skipped while reading, counted by reason, for the command to report."""
        return [line for s in self.segments for line in getattr(s, "notices", [])]

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

    def __iter__(self):
        """Every item in input order (records or failures)."""
        for _, item in self.read(np.arange(len(self))):
            yield item


def read_structures(inputs: list[str], tasks: dict | None = None, fast_cif: bool = False) -> InputPlan:
    """The plan of ``inputs`` (iterate it for records and failures in input order; ``notices`` for what the sources
    behind them skipped)."""
    return InputPlan(expand(inputs, tasks, fast_cif))

"""The four matminer 0.4.0 dataset CSVs (Materials Project data): dielectric, elastic, piezoelectric, formation energy.

Tensors are read in the frame of the ``poscar`` structure and kept only where they are invariant under that
structure's point group (symmetrised to it). Piezoelectric tensors are stored in the IEEE-176 frame: where a tensor
does not fit the POSCAR frame, the structure is rotated to IEEE and tried again.
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Literal, get_args

import numpy as np

from equiprop.data.errors import ConfigError, DataError
from equiprop.data.record import CrystalRecord, from_pymatgen, from_text
from equiprop.data.sources.base import Source, SourceResult, add_entry, require_file, requested
from equiprop.data.symmetry import fit_to_symmetry, ieee_rotation, point_group_rotations
from equiprop.data.tasks import TaskSpec

# dataset -> (structure column, structure format, {task: column})
DATASETS: dict[str, tuple[str, str, dict[str, str]]] = {
    "dielectric_constant": ("poscar", "poscar", {"Eg": "band_gap", "eps_electronic": "e_electronic",
                                                 "eps_total": "e_total", "refractive_index": "n"}),
    "elastic_tensor": ("poscar", "poscar", {"K_VRH": "K_VRH", "G_VRH": "G_VRH",
                                            "elastic_tensor": "elastic_tensor_original"}),
    "piezoelectric_tensor": ("poscar", "poscar", {"piezo_tensor": "piezoelectric_tensor", "eij_max": "eij_max"}),
    "flla_2015": ("structure", "pymatgen_literal", {"Ef": "formation_energy_per_atom", "e_above_hull": "e_above_hull"}),
}
MatminerDataset = Literal["dielectric_constant", "elastic_tensor", "piezoelectric_tensor", "flla_2015"]
assert set(get_args(MatminerDataset)) == set(DATASETS)
IEEE_FRAME_TASKS = {"piezo_tensor"}  # MP stores these in the IEEE standard frame, not the POSCAR frame


class MatminerCSV(Source):
    """One matminer dataset CSV (``pandas.read_csv(path, comment="#")``; first line is the citation).

    Args:
        path: the CSV(.gz), e.g. ``../shared/data/matminer-0.4.0/dielectric_constant.csv.gz``.
        dataset: which of ``DATASETS``; inferred from the file name when omitted.
        limit: read only the first ``limit`` rows (for quick looks and tests).
        check_symmetry: keep only tensors invariant under the structure's point group (symmetrised).
    """

    def __init__(self, path: str, dataset: MatminerDataset | None = None, limit: int | None = None,
                 check_symmetry: bool = True):
        self.path = str(path)
        self.dataset = dataset or Path(self.path).name.split(".")[0]
        if self.dataset not in DATASETS:
            raise ConfigError(f"{self.path}: unknown matminer dataset {self.dataset!r}; known: {', '.join(DATASETS)}")
        self.limit, self.check_symmetry = limit, check_symmetry
        self.name = f"matminer:{self.dataset}"
        self._rotations = None  # (record, its point-group rotations): reused by the record's other tensors

    def load(self, tasks: dict[str, TaskSpec]) -> SourceResult:
        import pandas as pd

        path = require_file(self.path, self.name)
        frame = pd.read_csv(path, comment="#", nrows=self.limit)
        result = SourceResult(self.name, f"{path} ({_first_line(path)})")
        structure_col, fmt, columns = DATASETS[self.dataset]
        columns = requested(columns, tasks)
        refine = self._fit_to_structure if self.check_symmetry else None
        for row in frame.to_dict("records"):
            entry_id = str(row["material_id"])
            raw = {name: _literal(row[column]) if tasks[name].rank else row[column]
                   for name, column in columns.items()}
            add_entry(result, entry_id, lambda r=row, i=entry_id: self._structure(r[structure_col], fmt, i), raw,
                      tasks, f"{path.name}:{entry_id}", refine)
        return result

    def _structure(self, text: str, fmt: str, entry_id: str) -> CrystalRecord:
        if fmt == "pymatgen_literal":
            from pymatgen.core import Structure

            try:  # a pymatgen dict written as a Python literal: literal_eval, never eval
                structure = Structure.from_dict(ast.literal_eval(text))
            except (ValueError, SyntaxError, KeyError, TypeError) as err:
                raise DataError(entry_id, f"cannot parse structure literal ({type(err).__name__})",
                                "unparseable structure") from None
            return from_pymatgen(structure, entry_id, self.name)
        return from_text(text, fmt, entry_id, self.name)

    def _fit_to_structure(self, record: CrystalRecord, task: TaskSpec, value, where: str):
        """The tensor symmetrised to the structure's point group, or DataError if it does not fit the frame."""
        if task.rank == 0:
            return value
        if self._rotations is None or self._rotations[0] is not record:  # once per record, for all its tensors
            self._rotations = (record, point_group_rotations(record.to_pymatgen()))
        rotations = self._rotations[1]
        try:
            return fit_to_symmetry(value, rotations, where)
        except DataError:
            if task.name not in IEEE_FRAME_TASKS or any(np.ndim(v) for v in record.labels.values()):
                raise
        # Rotate the structure to the IEEE frame (only while it carries no frame-dependent label yet).
        rotation = ieee_rotation(record.to_pymatgen())
        record.cell = record.cell @ rotation.T
        record.positions = record.positions @ rotation.T
        self._rotations = (record, np.einsum("ij,njk,lk->nil", rotation, rotations, rotation))
        return fit_to_symmetry(value, self._rotations[1], where)


def _literal(raw):
    """A tensor written as a Python literal string -> nested lists (literal_eval, never eval); on failure the raw
    string is kept, and the task's parser rejects it as a counted label skip."""
    if not isinstance(raw, str):
        return raw
    try:
        return ast.literal_eval(raw)
    except (ValueError, SyntaxError):
        return raw


def _first_line(path: Path) -> str:
    import gzip

    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt") as f:
        return f.readline().lstrip("# ").strip()

"""A per-atom task made from structures alone: the Ewald site potential of ionic crystals.

Each atom gets the electrostatic potential (V) that the point charges of all other atoms, periodic images included,
create at its site: ``V_i = 2 sum_j M_ij / q_i`` with pymatgen's Ewald energy matrix ``M`` (eV, ``sum_ij M_ij`` the
Ewald energy ``1/2 sum_i q_i V_i``) and formal charges ``q`` from pymatgen's bond-valence analysis. A crystal whose
charges cannot be assigned (metals, intermetallics) is skipped and counted; an atom of charge 0 has no defined
``V_i`` from ``M`` and is left unlabelled (masked). The task is defined in the recipe (``recipes/ewald_site_potential
.yaml``): ``{name: ewald_site_potential, key: ewald_site_potential, units: V, level: atom}``.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from equiprop.data.errors import DataError
from equiprop.data.record import CrystalRecord, from_pymatgen_dict
from equiprop.data.sources.base import Source, SourceResult, add_entry, require_file
from equiprop.data.sources.records_json import bundled_path, read_json
from equiprop.data.tasks import TaskSpec


def ewald_site_potentials(record: CrystalRecord) -> np.ndarray:
    """(num_atoms,) Ewald site potential of each atom, V, from bond-valence formal charges; NaN where the charge is 0.
    Raises DataError when no charges can be assigned."""
    from pymatgen.analysis.bond_valence import BVAnalyzer
    from pymatgen.analysis.ewald import EwaldSummation

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pymatgen warns about charge balance and Ewald accuracy settings
        try:
            structure = BVAnalyzer().get_oxi_state_decorated_structure(record.to_pymatgen())
        except ValueError:  # "Valences cannot be assigned!"
            raise DataError(record.id, "no bond-valence oxidation states (not an ionic crystal)",
                            "no oxidation states") from None
        charges = np.array([site.specie.oxi_state for site in structure], dtype=np.float64)
        site_energies = EwaldSummation(structure).total_energy_matrix.sum(axis=1)  # (num_atoms,) eV
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(charges != 0, 2.0 * site_energies / charges, np.nan)


class EwaldSitePotentials(Source):
    """The structures of an equiprop records file (default: the bundled dataset), labelled per atom with their Ewald
    site potentials.

    Args:
        dataset: a bundled dataset ("default", "tiny"), used when ``path`` is not given.
        path: an equiprop records JSON(.gz) file (``{"records": [...]}`` or the tiny layout ``{"entries": [...]}``).
        task: the per-atom task the potentials label.
        limit: label only the first ``limit`` structures (None: all).
    """

    def __init__(self, dataset: str = "default", path: str | None = None, task: str = "ewald_site_potential",
                 limit: int | None = None):
        self.dataset, self.path, self.task, self.limit = dataset, path, task, limit
        self.name = f"ewald:{Path(path).name.split('.')[0] if path else dataset}"
        self.file = str(path or bundled_path(dataset))  # its content is part of the graph cache key

    def load(self, tasks: dict[str, TaskSpec]) -> SourceResult:
        path = require_file(self.file, self.name)
        wanted = {name: task for name, task in tasks.items() if name == self.task}
        result = SourceResult(self.name, f"{path} (Ewald site potentials of bond-valence charges, pymatgen)")
        if not wanted:
            return result
        content = read_json(path)
        entries = content.get("records") or content.get("entries") or []
        for entry in entries[:self.limit]:
            entry_id = str(entry.get("id") or entry.get("material_id"))
            try:
                record = CrystalRecord.from_dict({**entry, "labels": {}, "source": self.name}) if "cell" in entry \
                    else from_pymatgen_dict(entry.get("structure"), entry_id, self.name)
                raw = {self.task: ewald_site_potentials(record.validate())}
            except DataError as err:
                result.entries_read += 1
                result.skips.add(err.kind, f"{entry_id}: {err.problem}")
                continue
            add_entry(result, entry_id, lambda record=record: record, raw, wanted, f"{path.name}:{entry_id}")
        return result

"""Castelli cubic perovskites as packaged by CDVAE (perov5 ``{train,val,test}.csv.gz``: CIF strings, 5-atom cells).

Labels: ``heat_all`` (formation energy per 5-atom cell, eV; equal to the matbench_perovskites target) and the
GLLB-SC direct/indirect gaps (eV). A different DFT setup from the Materials Project: its own tasks.
"""

from __future__ import annotations

from pathlib import Path

from equiprop.data.record import from_text
from equiprop.data.sources.base import Source, SourceResult, add_entry, require_file, requested
from equiprop.data.tasks import TaskSpec

COLUMNS = {"e_form_perovskite": "heat_all", "gap_gllbsc_direct": "dir_gap", "gap_gllbsc_indirect": "ind_gap"}
CITATION = "Castelli et al., Energy Environ. Sci. 5, 9034 (2012); packaged by CDVAE (Xie et al. 2022)"


class Perov5CSV(Source):
    """Args:
        paths: perov5 CSV(.gz) files (e.g. test.csv.gz and val.csv.gz); ids are their ``material_id`` column.
        limit: read only the first ``limit`` rows of each file.
    """

    def __init__(self, paths: list[str], limit: int | None = None):
        self.paths, self.limit = [str(p) for p in paths], limit
        self.name = "perov5"

    def load(self, tasks: dict[str, TaskSpec]) -> SourceResult:
        import pandas as pd

        result = SourceResult(self.name, f"{', '.join(self.paths)} ({CITATION})")
        columns = requested(COLUMNS, tasks)
        for path in map(Path, self.paths):
            frame = pd.read_csv(require_file(path, self.name), nrows=self.limit)
            for row in frame.to_dict("records"):
                entry_id = str(row["material_id"])
                add_entry(result, entry_id, lambda r=row, i=entry_id: from_text(r["cif"], "cif", i, self.name),
                          {name: row[column] for name, column in columns.items()}, tasks, f"{path.name}:{entry_id}")
        return result

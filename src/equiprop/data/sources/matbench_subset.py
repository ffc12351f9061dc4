"""MatBench-subset protocol: local structures standing in for MatBench entries whose full data is not available.

A subset map (``../shared/data/matbench/subset_maps/matbench_<task>.csv``: local_id, local_target, mbid, ...) names
which local entry corresponds to which MatBench id. Records get the MatBench id and the map's ``local_target`` (in
the MatBench task's units, e.g. log10 GPa), so the official folds restricted to them can be used. Results on such a
subset are references next to published models, not leaderboard results.
"""

from __future__ import annotations

import pandas as pd

from equiprop.data.record import CrystalRecord
from equiprop.data.sources.base import Source, SourceResult, add_entry, require_file
from equiprop.data.tasks import MATBENCH_TASKS, TaskSpec, resolve_tasks


class MatbenchSubset(Source):
    """Args:
        task: MatBench task, e.g. "matbench_log_kvrh".
        map_path: its subset map CSV.
        structures: the local source holding the structures (e.g. MatminerCSV of elastic_tensor.csv.gz).
        structure_task: a task that source provides, so that it returns its records (e.g. "K_VRH").
    """

    def __init__(self, task: str, map_path: str, structures: Source, structure_task: str):
        self.task, self.map_path, self.structures, self.structure_task = task, map_path, structures, structure_task
        self.name = f"matbench-subset:{task}"

    def load(self, tasks: dict[str, TaskSpec]) -> SourceResult:
        label_task = MATBENCH_TASKS[self.task][0]
        frame = pd.read_csv(require_file(self.map_path, self.name))
        local = self.structures.load(resolve_tasks([self.structure_task]))
        by_id = {r.id: r for r in local.records}
        result = SourceResult(self.name, f"{self.map_path} over {local.name}: MatBench-subset protocol")
        for row in frame.itertuples():
            if pd.isna(row.mbid):
                result.skips.add("local entry without a MatBench counterpart", str(row.local_id))
                continue
            record = by_id.get(str(row.local_id))
            if record is None:
                result.skips.add("local structure not found (skipped or absent in the local source)",
                                 f"{row.local_id} -> {row.mbid}")
                continue
            add_entry(result, row.mbid, lambda r=record, i=row.mbid: CrystalRecord(
                i, r.cell, r.positions, r.numbers, r.pbc, self.name), {label_task: row.local_target}, tasks)
        return result

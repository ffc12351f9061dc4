"""MatBench v0.1 tasks: the official data (a local file, or matminer's download) and the official 5-fold splits."""

from __future__ import annotations

import gzip
import importlib.util
import json
import os
import warnings
from pathlib import Path

from equiprop.data.errors import ConfigError, DataError
from equiprop.data.record import CrystalRecord, from_pymatgen, from_pymatgen_dict
from equiprop.data.sources.base import Source, SourceResult, add_entry, require_file
from equiprop.data.tasks import MATBENCH_TASKS, TaskSpec

MATBENCH_CITATION = "MatBench v0.1: Dunn et al., npj Comput. Mater. 6, 138 (2020)"
DOWNLOAD_URL = "https://ml.materialsproject.org/projects/{task}.json.gz"  # where matminer downloads each task from
INSTALL_HINT = "pip install --no-deps matbench==0.6"  # matbench pins an old scipy; its own deps are ours already


def _matbench_package_file(name: str) -> Path:
    """A data file shipped inside the installed matbench package, found without importing matbench.

    Importing ``matbench`` loads matminer and parses the 46 MB validation file through monty: slow, and not needed.
    """
    spec = importlib.util.find_spec("matbench")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(f"the matbench package is not installed ({INSTALL_HINT})")
    path = Path(list(spec.submodule_search_locations)[0]) / name
    if not path.exists():
        raise ConfigError(f"{path} is missing from the installed matbench package (expected matbench 0.6)")
    return path


def matbench_metadata(task: str) -> dict:
    """Metadata of a MatBench v0.1 task from the matbench package: n_samples, target, task_type, unit, ..."""
    with open(_matbench_package_file("matbench_v0.1_dataset_metadata.json")) as f:
        metadata = json.load(f)
    if task not in metadata:
        raise ConfigError(f"unknown MatBench task {task!r}; MatBench v0.1 tasks: {', '.join(sorted(metadata))}")
    return metadata[task]


def matbench_folds(task: str) -> dict[int, tuple[list[str], list[str]]]:
    """The official MatBench v0.1 5-fold splits of ``task``: fold number -> (train ids, test ids).

    Read from ``matbench_v0.1_validation.json`` inside the installed matbench package (not cached: the file holds
    ~2.5 million ids, and a split is needed once per run).
    """
    path = _matbench_package_file("matbench_v0.1_validation.json")
    with open(path) as f:
        splits = json.load(f)["splits"]
    if task not in splits:
        raise ConfigError(f"no MatBench v0.1 splits for {task!r}; tasks with splits: {', '.join(sorted(splits))}")
    folds = {}
    for fold_key, fold in splits[task].items():  # "fold_0" ... "fold_4"
        folds[int(fold_key.removeprefix("fold_"))] = (list(fold["train"]), list(fold["test"]))
    return dict(sorted(folds.items()))


def read_split_json(path: str | Path) -> dict:
    """A pandas ``orient="split"`` JSON (or JSON.gz) file: {"index": [...], "columns": [...], "data": [[...], ...]}."""
    path = Path(path)
    opener = gzip.open if path.name.endswith(".gz") else open
    try:
        with opener(path, "rt", encoding="utf-8") as f:
            doc = json.load(f)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:  # gzip.BadGzipFile is an OSError
        raise DataError(str(path), f"unreadable JSON ({type(err).__name__}: {err})", "unreadable file") from None
    if not isinstance(doc, dict) or not {"index", "columns", "data"} <= doc.keys():
        raise DataError(str(path), 'expected an orient="split" JSON object with "index", "columns" and "data"',
                        "unexpected file layout")
    if len(doc["index"]) != len(doc["data"]):
        raise DataError(str(path), f"{len(doc['index'])} ids in index but {len(doc['data'])} data rows",
                        "unexpected file layout")
    return doc


def _record(structure, entry_id: str, source: str) -> CrystalRecord:
    # a local file holds pymatgen dicts; matminer's download gives Structure objects
    if isinstance(structure, dict):
        return from_pymatgen_dict(structure, entry_id, source)
    return from_pymatgen(structure, entry_id, source)


class MatbenchTask(Source):
    """One MatBench v0.1 structure task (e.g. ``matbench_phonons``), with MatBench ids as record ids.

    The data come from, in order: ``path`` if given; else ``<data_home or $MATMINER_DATA>/<task>.json.gz`` if that
    file has exactly the task's official number of rows; else matminer's download (``MatbenchBenchmark``), which
    needs network access. Use the official folds from ``matbench_folds(task)`` to compare with the leaderboard.
    """

    def __init__(self, task: str, path: str | None = None, data_home: str | None = None):
        """
        Args:
            task: MatBench task name, e.g. "matbench_phonons" (structure tasks only).
            path: local orient="split" JSON or JSON.gz file of the task, in the official MatBench layout.
            data_home: folder holding a pre-placed ``<task>.json.gz`` (default: $MATMINER_DATA).
        """
        if task not in MATBENCH_TASKS:
            raise ConfigError(f"unsupported MatBench task {task!r}; structure tasks: {', '.join(MATBENCH_TASKS)}")
        self.task = task
        self.path = path
        self.data_home = data_home
        self.name = f"matbench:{task}"

    def load(self, tasks: dict[str, TaskSpec]) -> SourceResult:
        label_task, target = MATBENCH_TASKS[self.task]
        if label_task not in tasks:
            raise ConfigError(f"{self.name} provides task {label_task!r}, which is not among the requested tasks "
                              f"{list(tasks)}")
        ids, structures, targets, origin = self._read(target)
        ids = matbench_ids(ids, self.task)
        result = SourceResult(self.name, f"{origin} ({MATBENCH_CITATION})")
        for mbid, structure, value in zip(ids, structures, targets):
            add_entry(result, str(mbid), lambda: _record(structure, str(mbid), self.name), {label_task: value}, tasks)
        return result

    # -- where the data come from ---------------------------------------------------------------------------------
    def _read(self, target: str) -> tuple[list, list, list, str]:
        """(ids, structures, targets, origin) from the explicit path, a pre-placed file, or the download."""
        if self.path is not None:
            path = require_file(self.path, self.name)
            return (*_split_columns(read_split_json(path), target, str(path)), str(path))
        placed = self._placed_file()
        if placed is not None:
            path, doc = placed
            return (*_split_columns(doc, target, str(path)), str(path))
        return self._download(target)

    def _placed_file(self) -> tuple[Path, dict] | None:
        """(path, parsed document) of the pre-placed ``<task>.json.gz`` if it has the official row count, else None."""
        home = self.data_home or os.environ.get("MATMINER_DATA")
        if not home:
            return None
        candidate = Path(home).expanduser() / f"{self.task}.json.gz"
        if not candidate.exists():
            return None
        expected = matbench_metadata(self.task)["n_samples"]
        doc = read_split_json(candidate)
        rows = len(doc["index"])
        if rows != expected:
            # a subset or an older version would silently break comparability with the leaderboard
            warnings.warn(f"{self.name}: ignoring {candidate}: {rows} rows, but MatBench v0.1 has {expected}")
            return None
        return candidate, doc

    def _download(self, target: str) -> tuple[list, list, list, str]:
        url = DOWNLOAD_URL.format(task=self.task)
        try:
            from matbench.bench import MatbenchBenchmark

            benchmark = MatbenchBenchmark(autoload=False, subset=[self.task])
            mb_task = benchmark.tasks_map[self.task]
            mb_task.load()  # matminer: reads $MATMINER_DATA/<task>.json.gz or downloads it there
            frame = mb_task.df
        except Exception as err:  # network, missing package, hash mismatch: all mean "no data here"
            raise ConfigError(
                f"{self.name}: the data could not be downloaded or read by matminer ({type(err).__name__}: "
                f"{err}). Without network access, download {url} elsewhere and either pass path=<file> or place it as "
                f"<data_home or $MATMINER_DATA>/{self.task}.json.gz") from err
        expected = matbench_metadata(self.task)["n_samples"]
        if len(frame) != expected:  # matminer reads an existing file without checking its hash
            raise ConfigError(f"{self.name}: matminer loaded {len(frame)} rows, but MatBench v0.1 has {expected}; "
                              f"remove the stale file from $MATMINER_DATA and retry")
        return [str(i) for i in frame.index], list(frame["structure"]), list(frame[target]), url


def _split_columns(doc: dict, target: str, where: str) -> tuple[list, list, list]:
    """(ids, structures, targets) from an orient="split" document."""
    columns = list(doc["columns"])
    for needed in ("structure", target):
        if needed not in columns:
            raise DataError(where, f"no column {needed!r} (columns: {columns})", "missing column")
    i_structure, i_target = columns.index("structure"), columns.index(target)
    return list(doc["index"]), [row[i_structure] for row in doc["data"]], [row[i_target] for row in doc["data"]]


def matbench_ids(index: list, task: str) -> list[str]:
    """MatBench ids for a file's index: kept if already ids; row numbers (matminer's copies) converted as matbench does.

    matbench names row i of ``matbench_phonons`` "mb-phonons-{i+1}", zero-padded to the digits of the task's size.
    """
    if not all(isinstance(i, int) for i in index):
        return [str(i) for i in index]
    prefix = task.replace("matbench", "mb").replace("_", "-")
    width = len(str(matbench_metadata(task)["n_samples"]))
    return [f"{prefix}-{i + 1:0{width}d}" for i in index]

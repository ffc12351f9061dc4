"""equiprop's own record files, including the datasets shipped inside the package.

Two layouts are read: equiprop's ``{"meta", "tasks", "records": [CrystalRecord.to_dict(), ...]}`` (JSON or JSON.gz),
and the ``tiny_multitask.json`` layout ``{"meta", "entries": [{"material_id", "structure", <task>: value|null}]}``.
"""

from __future__ import annotations

import gzip
import json
from importlib import resources
from pathlib import Path
from typing import Literal

from equiprop.data.errors import ConfigError, DataError
from equiprop.data.record import CrystalRecord, from_pymatgen_dict
from equiprop.data.sources.base import Source, SourceResult, add_entry, require_file
from equiprop.data.tasks import TaskSpec

BUNDLED = {"default": "default.json.gz", "tiny": "tiny_multitask.json"}
ENTRY_ALIASES = {"elastic_tensor": "elastic_tensor_voigt"}  # task -> field name in the tiny layout


def bundled_path(name: str) -> Path:
    if name not in BUNDLED:
        raise ConfigError(f"unknown bundled dataset {name!r}; bundled: {', '.join(BUNDLED)}")
    return Path(str(resources.files("equiprop.data") / "bundled" / BUNDLED[name]))


def read_json(path: Path) -> dict:
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rt") as f:
            return json.load(f)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:  # gzip.BadGzipFile is an OSError
        raise DataError(str(path), f"not a readable JSON file ({type(err).__name__}: {err})",
                        "unreadable file") from None


class RecordsJSON(Source):
    """Records in equiprop's JSON layout (or the tiny_multitask layout).

    Args:
        path: JSON or JSON.gz file.
        name: name of this source in reports (default: file stem).
    """

    def __init__(self, path: str, name: str | None = None):
        self.path = str(path)
        self.name = name or f"records:{Path(self.path).name.split('.')[0]}"

    def load(self, tasks: dict[str, TaskSpec]) -> SourceResult:
        path = require_file(self.path, self.name)
        content = read_json(path)
        meta = content.get("meta", {})
        result = SourceResult(self.name, f"{path} ({meta.get('provenance', 'equiprop records')})")
        if "sources" in meta and "merge" in meta:
            result.built_from = {"sources": meta["sources"], "merge": meta["merge"]}
        if "records" in content:
            for d in content["records"]:
                raw = {t: d.get("labels", {}).get(t) for t in tasks}
                add_entry(result, d["id"], lambda d=d: _without_labels(CrystalRecord.from_dict(d)), raw, tasks,
                          f"{path.name}:{d['id']}")
        elif "entries" in content:
            for e in content["entries"]:
                raw = {t: e.get(ENTRY_ALIASES.get(t, t)) for t in tasks}
                source = "+".join(e.get("sources", [])) or self.name
                add_entry(result, e["material_id"], lambda e=e, s=source: from_pymatgen_dict(
                    e["structure"], e["material_id"], s), raw, tasks, f"{path.name}:{e['material_id']}")
        else:
            raise ConfigError(f"{path}: neither an equiprop records file ('records') nor a tiny layout ('entries')")
        return result


def _without_labels(record: CrystalRecord) -> CrystalRecord:
    record.labels = {}  # labels are re-parsed by add_entry, through each task's own checks
    return record


class BundledDataset(RecordsJSON):
    """A dataset shipped inside the package: ``default`` (5.9k MP materials, matminer 0.4.0) or ``tiny`` (58)."""

    def __init__(self, dataset: Literal["default", "tiny"] = "default"):
        super().__init__(str(bundled_path(dataset)), name=f"bundled:{dataset}")
        self.dataset = dataset

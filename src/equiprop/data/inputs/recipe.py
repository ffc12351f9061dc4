"""The structures of datasets read by their ``Source`` (``equiprop.data.sources``): the sources of a recipe given as
an input (``--input recipes/x.yaml`` reads its ``data.sources`` with its ``data.tasks``), and ``bundled:NAME`` where
labels are wanted. Loaded whole (a source reads its file at once); what the source skipped is reported, not dropped.
"""

from __future__ import annotations

import hashlib
import importlib
from pathlib import Path

import yaml

from equiprop.data.errors import ConfigError, DataError
from equiprop.data.inputs.failure import InputFailure
from equiprop.data.sources.base import Source
from equiprop.data.tasks import resolve_tasks

SOURCE_PACKAGE = "equiprop.data.sources"


class SourceRecords:
    """The records that ``Source.load(tasks)`` gives, in its order; ``notices``: what it skipped ("N x reason (e.g.
    ...)", per source), which the command reports."""

    kind = "source"

    def __init__(self, sources: list[Source], tasks: dict, name: str, labels: bool = True):
        self.name, self.records, self.notices = name, [], []
        for source in sources:
            result = source.load(tasks)
            for record in result.records:
                record.source = name
                if not labels:
                    record.labels = {}
            self.records += result.records
            where = name if result.name == name else f"{name} ({result.name})"
            self.notices += [f"{where}: {line}" for log in (result.skips, result.label_skips) for line in log.lines()]

    def __len__(self):
        return len(self.records)

    def signature(self) -> dict:
        return {"kind": self.kind, "name": self.name, "count": len(self.records)}

    def read(self, start: int, stop: int):
        yield from self.records[start:stop]


class RecipeSources(SourceRecords):
    """A recipe (``.yaml``/``.yml``) as an input: the records of its ``data.sources``; the labels of its
    ``data.tasks`` where the command reads labels."""

    kind = "recipe"

    @staticmethod
    def claims(path: Path) -> bool:
        return path.suffix in (".yaml", ".yml") and path.is_file()

    def __init__(self, path: Path, tasks: dict | None = None):
        self.path = path
        try:
            recipe = yaml.safe_load(path.read_text())
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as err:
            self.records, self.notices, self.name = [], [], str(path)
            self.broken = InputFailure(path.stem, str(path), "unreadable file",
                                       f"{path}: not a readable YAML recipe ({type(err).__name__}: {err})")
            return
        self.broken = None
        data = (recipe or {}).get("data") if isinstance(recipe, dict) else None
        data = data.get("init_args", data) if isinstance(data, dict) else None
        if not isinstance(data, dict) or not data.get("sources"):
            raise ConfigError(f"--input {path}: a recipe given as an input needs a data.sources list")
        from equiprop.data.datamodule import DEFAULT_TASKS  # the data module's own default, as a fit reads it

        recipe_tasks = resolve_tasks(data.get("tasks") or DEFAULT_TASKS)
        sources = [source_from_config(entry, f"{path}: data.sources[{i}]") for i, entry in enumerate(data["sources"])]
        super().__init__(sources, {**recipe_tasks, **(tasks or {})}, str(path), labels=tasks is not None)

    def __len__(self):
        return 1 if self.broken else len(self.records)

    def signature(self) -> dict:
        return {"kind": self.kind, "path": str(self.path.resolve()), "count": len(self),
                "sha256": hashlib.sha256(self.path.read_bytes()).hexdigest()}

    def read(self, start: int, stop: int):
        if self.broken:
            yield self.broken
            return
        yield from super().read(start, stop)


def source_from_config(entry, where: str) -> Source:
    """A Source from ``{class_path, init_args}``: only classes of ``equiprop.data.sources`` (a recipe given as an
    input names data to read, never code to run)."""
    if isinstance(entry, str):
        entry = {"class_path": entry}
    if not isinstance(entry, dict) or not isinstance(entry.get("class_path"), str):
        raise ConfigError(f"{where}: expected a mapping with class_path (and init_args), got {entry!r}")
    class_path, init_args = entry["class_path"], entry.get("init_args") or {}
    module_name, _, class_name = class_path.rpartition(".")
    if module_name != SOURCE_PACKAGE and not module_name.startswith(SOURCE_PACKAGE + "."):
        raise ConfigError(f"{where}: {class_path} is not a reader of {SOURCE_PACKAGE} (only those are read from a "
                          "recipe given as an input)")
    try:
        cls = getattr(importlib.import_module(module_name), class_name)
    except (ImportError, AttributeError):
        raise ConfigError(f"{where}: no source class {class_path}") from None
    if not (isinstance(cls, type) and issubclass(cls, Source)):
        raise ConfigError(f"{where}: {class_path} is not a Source")
    try:
        return cls(**init_args)
    except (TypeError, DataError) as err:
        raise ConfigError(f"{where}: {class_path}({init_args}): {err}") from None

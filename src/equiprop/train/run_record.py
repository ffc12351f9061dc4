"""What a run folder's checkpoints are: the record a fit keeps of the files it wrote and of the config it ran.

``runs/<run_name>/.equiprop-run.json`` (hidden, beside the checkpoints)::

    {"format": "equiprop-run-1", "config_sha256": "...", "config_summary": {...}, "files": {"best.ckpt": "<sha256>"}}

- ``files``: every checkpoint equiprop's checkpoint writer (``train.checkpoint_io``) put in the folder, with the sha256
  of the bytes it wrote. ``--overwrite=true`` deletes exactly these, and only while they still hold those bytes: a file
  the user put there, or changed since, is never deleted (the fit is refused, naming it).
- ``config_sha256``: the digest of the resolved configuration (recipe and overrides, as LightningCLI parsed them),
  leaving out where the run writes (run name, folders, logger) and cosmetics (progress bar, model summary).
  ``equiprop ensemble`` reuses a member only when its record says it was trained from the same configuration.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from equiprop.data.errors import ConfigError
from equiprop.data.dataset import file_digest

RECORD_NAME = ".equiprop-run.json"
RECORD_FORMAT = "equiprop-run-1"
# where a run writes and how it looks while it runs: not what it computes
VOLATILE_KEYS = ("config", "run_name", "overwrite", "ckpt_path", "checkpoint.dirpath", "trainer.default_root_dir",
                 "trainer.logger", "trainer.enable_progress_bar", "trainer.enable_model_summary")


def record_path(run_dir: str | Path) -> Path:
    return Path(run_dir) / RECORD_NAME


def read_record(run_dir: str | Path) -> dict:
    """The folder's record ({} when there is none); ConfigError naming the file when it is not a valid record."""
    path = record_path(run_dir)
    if not path.exists():
        return {}
    try:
        record = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ConfigError(f"{path}: not a readable run record ({type(err).__name__}); equiprop will not delete or "
                          "reuse what this folder holds: move the folder away") from None
    files = record.get("files") if isinstance(record, dict) else None
    if record.get("format") != RECORD_FORMAT or not isinstance(files, dict) or \
            not all(isinstance(k, str) and isinstance(v, str) for k, v in files.items()):
        raise ConfigError(f"{path}: not an equiprop run record (format {RECORD_FORMAT!r}); equiprop will not delete "
                          "or reuse what this folder holds: move the folder away")
    return record


def write_record(run_dir: str | Path, record: dict) -> None:
    """Atomically (a reader never sees half a record)."""
    path = record_path(run_dir)
    partial = path.with_name(f"{path.name}.{os.getpid()}.partial")
    partial.write_text(json.dumps({"format": RECORD_FORMAT, **record}, indent=1))
    os.replace(partial, path)


def start_record(run_dir: Path, config_sha256: str | None, summary: dict, keep_files: bool) -> None:
    """A new run in ``run_dir`` (``keep_files``: a resumed run keeps the files it already wrote)."""
    files = read_record(run_dir).get("files", {}) if keep_files else {}
    write_record(run_dir, {"config_sha256": config_sha256, "config_summary": summary, "files": files})


def note_written(path: str | Path) -> None:
    """Record that equiprop wrote ``path`` (its folder's record; the checkpoint writer calls this after each save)."""
    path = Path(path)
    try:
        record = read_record(path.parent)
    except ConfigError:
        record = {}  # a damaged record is replaced by one naming what this run wrote
    record.setdefault("files", {})[path.name] = file_digest(path)
    write_record(path.parent, {k: v for k, v in record.items() if k != "format"})


def note_removed(path: str | Path) -> bool:
    """Forget ``path`` if equiprop wrote it (and it is unchanged); False when it is not ours to delete."""
    path = Path(path)
    record = read_record(path.parent)
    digest = record.get("files", {}).get(path.name)
    if digest is None or not path.is_file() or file_digest(path) != digest:
        return False
    del record["files"][path.name]
    write_record(path.parent, {k: v for k, v in record.items() if k != "format"})
    return True


def owned_checkpoints(run_dir: Path) -> tuple[list[Path], list[Path]]:
    """(checkpoints equiprop wrote here and that still hold its bytes, every other ``*.ckpt`` in the folder)."""
    files = read_record(run_dir).get("files", {})
    ours, others = [], []
    for path in sorted(run_dir.glob("*.ckpt")):
        digest = files.get(path.name)
        (ours if digest is not None and file_digest(path) == digest else others).append(path)
    return ours, others


def config_digest(config) -> tuple[str, dict]:
    """(sha256, short summary) of a parsed LightningCLI config (jsonargparse Namespace) without ``VOLATILE_KEYS``."""
    plain = config.clone().as_dict() if hasattr(config, "as_dict") else dict(config)
    for key in VOLATILE_KEYS:
        *parents, last = key.split(".")
        node = plain
        for part in parents:
            node = node.get(part) if isinstance(node, dict) else None
        if isinstance(node, dict):
            node.pop(last, None)
    text = json.dumps(plain, sort_keys=True, default=str)
    summary = {"seed_everything": plain.get("seed_everything"),
               "tasks": (plain.get("data") or {}).get("tasks"),
               "encoder": ((plain.get("model") or {}).get("encoder") or {}).get("class_path")}
    return hashlib.sha256(text.encode()).hexdigest(), summary

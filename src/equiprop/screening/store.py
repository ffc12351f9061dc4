"""The work folder of a screen: its manifest (what it computes) and completed chunk files, for resuming.

    OUT.csv.work/manifest.json          inputs, checkpoints (sha256), selection recipe hash, chunk size
    OUT.csv.work/phase1/chunk_000123.csv  rows of input items [123*C, 124*C)
    OUT.csv.work/phase2/chunk_000004.csv  rows of the selected candidates [4*C, 5*C) (in input order)

Every file is written to a temporary name and renamed into place (``os.replace``), so a killed screen leaves whole
chunks or none: on restart, chunks on disk are skipped before their inputs are even read. A work folder made with
other settings is refused (one line naming what differs) rather than mixed with new results. Each chunk ends with a
``#sha256=...`` line over the rows above it: a chunk that fails it (a flipped digit, a truncated or edited file, a
chunk from before the checksum) is counted, named in a warning and computed again, never read into the output.
"""

from __future__ import annotations

import csv
import io
import json
import hashlib
import os
import sys
from pathlib import Path

from equiprop.data.dataset import file_digest
from equiprop.data.errors import ConfigError, DataError

MANIFEST_VERSION = 1
CHECKSUM_PREFIX = "#sha256="
SETTINGS = {"inputs": "inputs", "phase1": "Phase-1 checkpoints", "phase2": "Phase-2 checkpoints",
            "selection_sha256": "selection recipe", "chunk_size": "--chunk-size",
            "allow_unseen_elements": "--allow-unseen-elements", "mc_samples": "--mc-samples"}


def atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with tmp.open("w", newline="") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def exclusive_write(path: Path, text: str) -> bool:
    """Write ``path`` whole unless it exists: a hard link of a complete temporary file, which fails if the name is
    taken (atomic on local and network file systems alike). False when another process wrote it first."""
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with tmp.open("w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    try:
        os.link(tmp, path)
        return True
    except FileExistsError:
        return False
    finally:
        tmp.unlink()


def checkpoint_identity(paths: list[str]) -> list[dict]:
    return [{"path": str(Path(p).resolve()), "sha256": file_digest(Path(p))} for p in paths]


def _difference(name: str, old, new) -> str:
    if name in ("phase1", "phase2"):
        old, new = [c["path"] for c in old or []], [c["path"] for c in new or []]
        return f"{SETTINGS[name]} (were {old or 'none'}, now {new or 'none'}, or their contents changed)"
    if name == "inputs":
        return "inputs (the input files, their order, count or contents changed)"
    return f"{SETTINGS[name]} (was {old!r}, now {new!r})"


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def checked_text(path: Path) -> str | None:
    """A chunk file's rows (its checksum line removed) if they match the checksum, else None."""
    try:
        text = path.read_bytes().decode()  # as written: csv's \r\n line ends kept
    except (OSError, UnicodeDecodeError):
        return None
    body, _, last = text.rstrip("\n").rpartition("\n")
    if not last.startswith(CHECKSUM_PREFIX) or last[len(CHECKSUM_PREFIX):] != _digest(body + "\n"):
        return None
    return body + "\n"


class WorkDir:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.verified: set[tuple[str, int]] = set()  # chunks whose checksum held in this run
        self.damaged: list[Path] = []  # chunks that failed it: computed again

    def open(self, manifest: dict) -> bool:
        """Create the folder, or check an existing one was made with these settings; True when resuming. Shards
        starting together on one folder (``--shard``): exactly one creates the manifest, the others compare with it."""
        manifest = dict(manifest, version=MANIFEST_VERSION)
        file = self.path / "manifest.json"
        if not file.exists():
            if self.path.exists() and any(not p.name.startswith(".manifest.json.tmp") for p in self.path.iterdir()):
                raise ConfigError(f"--workdir {self.path} exists, is not empty and holds no manifest.json: not a "
                                  "screen's work folder; give another one")
            self.path.mkdir(parents=True, exist_ok=True)
            if exclusive_write(file, json.dumps(manifest, indent=1)):
                return False
        try:
            old = json.loads(file.read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise ConfigError(f"{file}: unreadable manifest ({err}); delete {self.path} to start over") from None
        differs = [k for k in SETTINGS if old.get(k) != manifest.get(k)]
        if differs:
            raise ConfigError(f"cannot resume {self.path}: it was made with different "
                              f"{'; '.join(_difference(k, old.get(k), manifest.get(k)) for k in differs)}; "
                              f"rerun with the same settings, or give another --workdir (or delete it)")
        return True

    def chunk_path(self, stage: str, k: int) -> Path:
        return self.path / stage / f"chunk_{k:06d}.csv"

    def done(self, stage: str, k: int) -> bool:
        """Whether the chunk is on disk and intact; a damaged one is reported (once) and counts as not done."""
        if (stage, k) in self.verified:
            return True
        path = self.chunk_path(stage, k)
        if not path.is_file():
            return False
        if checked_text(path) is None:
            if path not in self.damaged:
                self.damaged.append(path)
                print(f"equiprop screen: warning: {path}: fails its checksum (damaged, edited or from an older "
                      "equiprop): computed again", file=sys.stderr)
            return False
        self.verified.add((stage, k))
        return True

    def write_chunk(self, stage: str, k: int, header: list[str], rows: list[list]) -> None:
        path = self.chunk_path(stage, k)
        path.parent.mkdir(exist_ok=True)
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow(header)
        writer.writerows(rows)
        text = buffer.getvalue()
        atomic_write(path, f"{text}{CHECKSUM_PREFIX}{_digest(text)}\n")
        self.verified.add((stage, k))

    def read_chunk(self, stage: str, k: int) -> tuple[list[str], list[list[str]]]:
        path = self.chunk_path(stage, k)
        text = checked_text(path)
        if text is None:  # changed after this run checked or wrote it
            raise DataError(str(path), "fails its checksum: the work folder changed during the screen; run the "
                                       "screen again (damaged chunks are computed again)", "damaged chunk")
        rows = list(csv.reader(io.StringIO(text, newline="")))
        return rows[0], rows[1:]

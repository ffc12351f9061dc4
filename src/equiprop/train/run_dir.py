"""One fit per run directory: a re-run never shadows an earlier run's checkpoints, two fits never share a folder.

Runs live under one root of their own, ``runs/`` in the working directory, or wherever ``$EQUIPROP_RUNS`` points
(e.g. a cluster's scratch disk): never under ``checkpoints/``, which holds only the shipped models (``runs_root``).
``equiprop fit`` writes ``best.ckpt`` and ``last.ckpt`` into ``runs/<run_name>/``. A folder that already holds
checkpoints is refused unless the fit resumes it (``--ckpt_path``) or replaces it (``--overwrite=true``, which deletes
the old checkpoints first), so ``best.ckpt`` is always the current run's own. While a fit runs it holds
``.<run_name>.fit.lock`` beside the run folder (created with O_EXCL, so of two fits started at once exactly one gets it); a second fit on
the same folder is refused. A lock left by a killed process on this host is detected (its process is gone) and taken
over. Under DDP only global rank zero takes the lock.

A run name is one plain folder name (``check_run_name``): ``--run_name=/tmp/x`` or ``../x`` would put checkpoints
outside ``runs/``, and ``--overwrite=true`` would delete them there. Workflows that nest their runs (tune trials,
MatBench folds, learning curves) build ``<name>/trial_000`` from a checked name through ``build_run``, which allows
sub-folders, each of them a plain name too (``run_folder``).
"""

from __future__ import annotations

import atexit
import json
import os
import re
import socket
import time
from pathlib import Path

from equiprop.data.errors import ConfigError
from equiprop.shipped import refuse_shipped, refuse_shipped_name
from equiprop.train.run_record import owned_checkpoints, start_record

RUNS_ENV = "EQUIPROP_RUNS"  # where runs go; default DEFAULT_RUNS_ROOT in the working directory
DEFAULT_RUNS_ROOT = "runs"
PLAIN_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")
MAX_NAME = 200  # file names end at 255 bytes; ".<name>.fit.lock", "<name>_ensemble_calibration.md" add to a name


def runs_root() -> Path:
    """The folder every run, ensemble, study, MatBench fold and curve writes under: ``$EQUIPROP_RUNS`` or ``runs``."""
    return Path(os.environ.get(RUNS_ENV) or DEFAULT_RUNS_ROOT)


def run_path(*parts: str) -> Path:
    """``runs_root() / parts...`` (``run_path(run_name)``: a run's folder; ``run_path(f"{name}_ensemble.json")``)."""
    return runs_root().joinpath(*parts)


def check_run_name(name) -> str:
    """``name`` if it is one plain folder name, not too long for a file name and no shipped model's name, else a
    ConfigError naming it and what is allowed."""
    if not isinstance(name, str) or PLAIN_NAME.fullmatch(name) is None:
        raise ConfigError(f"run_name {name!r} is not one folder name: use ASCII letters, digits, '_', '-' and '.' "
                          "(not first), no '/' (e.g. --run_name=my_run_s0); it names the folder under runs/ ($EQUIPROP_RUNS)")
    if len(name) > MAX_NAME:
        raise ConfigError(f"run_name {name[:40]!r}... is {len(name)} characters long: at most {MAX_NAME} (it names "
                          "a folder, and files such as its lock and its ensemble manifest add to it)")
    refuse_shipped_name(name)
    return name


def run_folder(root: str | Path, name, nested: bool = False) -> Path:
    """``root/name``; ``nested``: ``name`` may be plain names joined by '/' (a workflow's sub-folders), never more."""
    if nested and isinstance(name, str) and "/" in name and all(PLAIN_NAME.fullmatch(p) for p in name.split("/")):
        for part in name.split("/"):
            check_run_name(part)
        return Path(root, *name.split("/"))
    return Path(root) / check_run_name(name)


def is_rank_zero() -> bool:
    """True in the launching process: DDP's other ranks are started with these variables set."""
    return all(int(os.environ.get(var, 0)) == 0 for var in ("LOCAL_RANK", "NODE_RANK", "RANK"))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def acquire_lock(run_dir: Path, reentrant: bool = False) -> Path:
    """Create the run folder's lock for this process, or raise ConfigError naming the fit that holds it.
    ``reentrant``: a lock this process already holds is taken again (a workflow building a folder's run anew)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    lock = lock_path(run_dir)
    mine = json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "started": time.time()})
    for _ in range(2):  # a second try after removing a dead process's lock
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            holder = _read_lock(lock)
            same_host = holder.get("host") == socket.gethostname()
            if reentrant and lock in HELD and same_host and holder.get("pid") == os.getpid():
                return lock  # this process's own earlier run of the folder (a workflow building it again)
            if same_host and isinstance(holder.get("pid"), int) and not _alive(holder["pid"]):
                lock.unlink(missing_ok=True)  # its fit was killed: the folder is free
                continue
            raise ConfigError(f"{run_dir} is in use by another fit (process {holder.get('pid')} on "
                              f"{holder.get('host')}, lock {lock}); choose another --run_name, or delete the lock "
                              "file if that fit is no longer running") from None
        with os.fdopen(fd, "w") as f:
            f.write(mine)
        HELD.append(lock)
        return lock
    raise ConfigError(f"{run_dir}: could not take the lock {lock}")


def lock_path(run_dir: Path) -> Path:
    """Beside the folder, not in it: Lightning warns about a non-empty checkpoint folder."""
    return run_dir.parent / f".{run_dir.name}.fit.lock"


def _read_lock(lock: Path) -> dict:
    try:
        return json.loads(lock.read_text())
    except (OSError, ValueError):
        return {}  # being written right now by the process that created it


def release_lock(lock: Path) -> None:
    if _read_lock(lock).get("pid") == os.getpid():
        lock.unlink(missing_ok=True)
    if lock in HELD:
        HELD.remove(lock)


def release_all() -> None:
    """Release every lock this process holds (after a fit returns or fails, and at exit)."""
    for lock in list(HELD):
        release_lock(lock)


HELD: list[Path] = []  # locks taken by this process
atexit.register(release_all)


def claim_run_dir(run_dir: Path, resume: bool, overwrite: bool, own_dir: Path | None = None,
                  config: tuple[str | None, dict] = (None, {}), reentrant: bool = False) -> Path:
    """Lock ``run_dir`` for this fit and make sure no earlier run's checkpoint can be mistaken for this one's.

    ``own_dir``: ``runs/<run_name>``, the only folder ``--overwrite=true`` deletes in (default ``run_dir``);
    only checkpoints an equiprop run wrote there, unchanged since (``train.run_record``), are deleted. ``config``:
    (digest, summary) of the resolved config, recorded for ``equiprop ensemble``'s reuse check."""
    refuse_shipped(run_dir, "checkpoint folder")
    lock = acquire_lock(run_dir, reentrant)
    try:
        earlier = sorted(run_dir.glob("*.ckpt"))
        if earlier and not resume:
            if not overwrite:
                names = ", ".join(p.name for p in earlier[:4]) + (" ..." if len(earlier) > 4 else "")
                last = run_dir / "last.ckpt"
                raise ConfigError(f"{run_dir} already holds a run ({names}); resume it with --ckpt_path "
                                  f"{last if last.exists() else earlier[0]}, replace it with --overwrite=true, or "
                                  "choose another --run_name")
            remove_earlier_run(run_dir, own_dir or run_dir)
        start_record(run_dir, *config, keep_files=resume)
    except BaseException:
        release_lock(lock)
        raise
    return lock


def remove_earlier_run(run_dir: Path, own_dir: Path) -> None:
    """``--overwrite=true``: delete the checkpoints an equiprop run wrote in ``runs/<run_name>/``, or refuse
    (naming them) when the folder holds any other: a file equiprop did not write is never deleted."""
    if run_dir.resolve() != own_dir.resolve():
        raise ConfigError(f"--overwrite=true deletes only in the run's own folder {own_dir}; the checkpoint folder "
                          f"{run_dir} (checkpoint.dirpath) holds checkpoints equiprop will not delete: choose an "
                          "empty folder")
    ours, others = owned_checkpoints(run_dir)
    if others:
        names = ", ".join(p.name for p in others[:4]) + (" ..." if len(others) > 4 else "")
        raise ConfigError(f"{run_dir} holds checkpoints no equiprop run wrote there, or changed since ({names}): "
                          "--overwrite=true deletes only what an equiprop run wrote; move them away first")
    for path in ours:
        path.unlink()

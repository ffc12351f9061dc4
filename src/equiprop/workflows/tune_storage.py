"""Where an ``equiprop tune`` study lives, and how workers share it: ``--storage`` forms, heartbeats, the worker loop.

``--storage`` takes one of:

- an SQLAlchemy URL for Optuna's RDB storage: ``sqlite:///study.db`` (relative) or ``sqlite:////abs/study.db``
  (one machine: SQLite's file locks are not safe on network file systems), ``postgresql+psycopg://user@host/db``
  (many machines; ``postgresql://`` picks the driver of the installed SQLAlchemy: psycopg 3 from SQLAlchemy 2.1),
  ``mysql+pymysql://...``;
- ``journal://PATH``: Optuna's journal file (``JournalFileBackend``: an append-only log guarded by a symlink lock,
  safe on NFS and other shared file systems). ``journal:///scratch/study.log`` is ``/scratch/study.log``,
  ``journal://study.log`` is ``study.log`` in the current folder; the folder must exist.

Heartbeats on every storage: a running trial records one each ``tune.heartbeat_interval`` seconds; a trial silent for
``tune.grace_period`` seconds (its worker killed) is failed by the next worker that looks and queued again with the
same parameters (up to twice). RDB storages keep heartbeats in their own table, stamped by the database's clock.
Optuna's journal storage has no heartbeat (5.x), so ``HeartbeatJournalStorage`` adds one: each beat is a trial
system attribute holding the worker's wall clock, compared with the checking worker's clock, so the machines' clocks
must agree to well within the grace period (NTP does).

Workers (``run_worker``): each runs trials until the study holds ``--n-trials`` finished (complete or pruned) ones.
While the trials left are all running in other workers it waits, polling, so that a killed worker's trial, failed
once silent for the grace period, is retried by a live worker. A trial started when the study already has enough
finished or earlier-numbered running trials (two workers starting the last one at once) is dropped at once: it ends
as FAIL with the user attribute ``surplus`` and trains nothing. Each trial records ``worker`` (host:pid).
"""

from __future__ import annotations

import os
import socket
import time
import warnings
from pathlib import Path

import optuna
from optuna.storages import BaseStorage, JournalStorage, RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.storages._heartbeat import BaseHeartbeat
from optuna.trial import TrialState

from equiprop.data.errors import ConfigError
from equiprop.shipped import refuse_shipped

JOURNAL = "journal://"
FORMS = ("sqlite:///FILE, postgresql+psycopg://USER@HOST/DB (or another SQLAlchemy URL of Optuna's RDB storage) "
         "or journal://PATH (journal:///abs/study.log)")
HEARTBEAT_KEY = "equiprop:heartbeat"  # trial system attribute of the journal storage: the last beat (unix seconds)
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
MAX_RETRY = 2
WORKER = f"{socket.gethostname()}:{os.getpid()}"


class HeartbeatJournalStorage(JournalStorage, BaseHeartbeat):
    """Optuna's journal storage with the heartbeat its RDB storage has, so ``study.optimize`` runs the same machinery
    on it: a beat thread per running trial, stale trials failed before each new trial, the retry callback."""

    def __init__(self, backend, heartbeat_interval: int, grace_period: int, stale_trial_callback=None):
        super().__init__(backend)
        self.heartbeat_interval, self.grace_period = heartbeat_interval, grace_period
        self.stale_trial_callback = stale_trial_callback

    def record_heartbeat(self, trial_id: int) -> None:
        try:
            self.set_trial_system_attr(trial_id, HEARTBEAT_KEY, time.time())
        except optuna.exceptions.UpdateFinishedTrialError:  # failed as stale by another worker: nothing to keep alive
            pass

    def _get_stale_trial_ids(self, study_id: int) -> list[int]:
        """Running trials whose last beat (or start, for a retry that inherited its original's beat) is older than
        the grace period; trials that never beat (asked outside ``optimize``) are left alone, as RDB does."""
        now, stale = time.time(), []
        for trial in self.get_all_trials(study_id, deepcopy=False, states=(TrialState.RUNNING,)):
            if HEARTBEAT_KEY not in trial.system_attrs:
                continue
            started = trial.datetime_start.timestamp() if trial.datetime_start else 0.0
            if now - max(trial.system_attrs[HEARTBEAT_KEY], started) > self.grace_period:
                stale.append(trial._trial_id)
        return stale

    def get_heartbeat_interval(self) -> int | None:
        return self.heartbeat_interval

    def get_heartbeat_stale_trial_callback(self):
        return self.stale_trial_callback


def journal_path(url: str) -> Path:
    """The file of ``journal://PATH``, checked: a file name, in a folder that exists, outside every shipped model."""
    path = Path(url.removeprefix(JOURNAL))
    if not url.removeprefix(JOURNAL) or path.is_dir():
        raise ConfigError(f"--storage {url}: journal://PATH needs a file, e.g. journal:///scratch/study.log")
    if not path.parent.is_dir():
        raise ConfigError(f"--storage {url}: folder {path.parent} does not exist (create it, on a file system every "
                          "worker sees)")
    refuse_shipped(path, "--storage")
    return path


def open_storage(url: str, interval: int, grace: int) -> BaseStorage:
    """The storage ``url`` names, with heartbeats every ``interval`` s: a trial silent for ``grace`` s is failed and
    retried (up to ``MAX_RETRY`` times). A bad URL, a missing driver or an unreachable database is a ConfigError."""
    with warnings.catch_warnings():  # experimental in name only: Optuna's documented way to retry a killed trial
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        retry = RetryHeartbeatStaleTrialCallback(max_retry=MAX_RETRY)
    if url.startswith(JOURNAL):
        from optuna.storages.journal import JournalFileBackend

        return HeartbeatJournalStorage(JournalFileBackend(str(journal_path(url))), interval, grace, retry)
    return rdb_storage(url, interval, grace, retry)


def rdb_storage(url: str, interval: int, grace: int, retry) -> RDBStorage:
    import sqlalchemy

    if url.startswith("sqlite:///"):  # a file: never one of a shipped model
        refuse_shipped(url.removeprefix("sqlite:///"), "--storage")
    try:
        sqlalchemy.engine.make_url(url).get_dialect()
    except sqlalchemy.exc.ArgumentError:  # not a URL, or no such dialect (redis://, file paths)
        raise ConfigError(f"--storage: one of {FORMS}; got {url!r}") from None
    except ImportError as err:
        raise ConfigError(f"--storage {label(url)}: its database driver is missing ({err}); for PostgreSQL: "
                          "pip install 'psycopg[binary]'") from None
    for attempt in range(3):
        try:
            return RDBStorage(url, heartbeat_interval=interval, grace_period=grace,
                              heartbeat_stale_trial_callback=retry)
        except ImportError as err:
            raise ConfigError(f"--storage {label(url)}: its database driver is missing ({err.__cause__ or err}); "
                              "for PostgreSQL: pip install 'psycopg[binary]'") from None
        except sqlalchemy.exc.IntegrityError:  # two workers creating the tables of a new database at once
            if attempt == 2:
                raise
            time.sleep(1.0)
        except sqlalchemy.exc.OperationalError as err:
            raise ConfigError(f"--storage {label(url)}: cannot open the database: "
                              f"{str(err.orig or err).strip().splitlines()[0]}") from None


def label(url: str) -> str:
    """The storage as printed: an RDB URL without its password."""
    if url.startswith(JOURNAL):
        return url
    import sqlalchemy

    try:
        return sqlalchemy.engine.make_url(url).render_as_string(hide_password=True)
    except sqlalchemy.exc.ArgumentError:
        return url


class Surplus(RuntimeError):
    """A trial started after the study had its trials: finished ones and earlier running ones fill ``--n-trials``."""


def fail_stale_trials(study) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)


def within(objective, n_trials: int):
    """``objective`` run only by a trial inside ``--n-trials``: of two trials started at once for the last place,
    the later-numbered one ends at once as a surplus FAIL (both workers see the earlier one, so exactly one goes on)."""

    def guarded(trial):
        ahead = [t for t in trial.study.get_trials(deepcopy=False)
                 if t.state in FINISHED or (t.state == TrialState.RUNNING and t.number < trial.number)]
        if len(ahead) >= n_trials:
            trial.set_user_attr("surplus", f"the study already had {n_trials} finished or running trials")
            raise Surplus(f"trial {trial.number} not run: {len(ahead)} trials finished or running before it")
        trial.set_user_attr("worker", WORKER)
        return objective(trial)

    return guarded


def run_worker(study, objective, n_trials: int, budget: int, poll: float) -> None:
    """Run trials until the study holds ``n_trials`` finished ones, at most ``budget`` new ones (retries of killed
    trials come on top); wait, polling each ``poll`` s, while the trials left are running in other workers."""
    started, said = [0], None

    def count(study, trial):
        if "failed_trial" not in trial.system_attrs:
            started[0] += 1

    while started[0] < budget:
        fail_stale_trials(study)
        trials = study.get_trials(deepcopy=False)
        finished = sum(t.state in FINISHED for t in trials)
        running = [t.number for t in trials if t.state == TrialState.RUNNING]
        if finished >= n_trials:
            return
        if finished + len(running) >= n_trials:  # the rest is in other workers' hands (or a killed worker's)
            if said != running:
                print(f"waiting for trials {running} of other workers (a killed worker's trial is retried once "
                      "silent for tune.grace_period s)", flush=True)
                said = running
            time.sleep(poll)
            continue
        study.optimize(within(objective, n_trials), n_trials=1, catch=(RuntimeError,), gc_after_trial=True,
                       callbacks=[count])

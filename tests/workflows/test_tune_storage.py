"""``equiprop tune`` workers on one study across processes (``equiprop.workflows.tune_storage``): a journal file and a
real PostgreSQL server started here (skipped, with the reason, where its binaries are absent or it cannot start).

Two worker processes share a study; one is killed with SIGKILL while it runs a trial; the other finishes the study:
exactly ``--n-trials`` complete trials, none run twice, the killed trial failed after the grace period and retried
with its parameters by the live worker."""

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import optuna
import pytest
import yaml

from equiprop.cli import main
from equiprop.data.errors import ConfigError
from equiprop.workflows.tune import make_storage, make_study
from equiprop.workflows.tune_storage import HEARTBEAT_KEY, Surplus, fail_stale_trials, label, run_worker, within

pytestmark = [pytest.mark.integration,  # the tests that ask() a trial themselves, as a killed worker would have
              pytest.mark.filterwarnings("ignore:Heartbeat of storage is supposed to be used with Study.optimize")]
TUNE = {"metric": "val/loss", "pruner": {"class": "NopPruner"}, "seed": 1, "heartbeat_interval": 1, "grace_period": 3,
        "search_space": {"model.lr": {"type": "float", "low": 1e-4, "high": 1e-2, "log": True}}}


# -- a throwaway PostgreSQL server ------------------------------------------------------------------------------------
def postgres_bin() -> Path | None:
    """The folder of initdb and pg_ctl: Debian's /usr/lib/postgresql/<version>/bin (newest), else the PATH."""
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"), key=lambda p: int(p.parts[-3])
                   if p.parts[-3].isdigit() else 0)
    if found:
        return found[-1].parent
    pg_ctl = shutil.which("pg_ctl")
    return Path(pg_ctl).parent if pg_ctl and shutil.which("initdb") else None


def as_server_user(folder: Path) -> list[str]:
    """The prefix that runs the server unprivileged (PostgreSQL refuses root), owning ``folder``; [] if not root."""
    if os.geteuid() != 0:
        return []
    import pwd

    for name in ("postgres", "nobody"):
        try:
            user = pwd.getpwnam(name)
            break
        except KeyError:
            continue
    else:
        pytest.skip("running as root with no postgres or nobody user to run the PostgreSQL server as")
    if not shutil.which("setpriv"):
        pytest.skip("running as root without setpriv (util-linux) to start the PostgreSQL server unprivileged")
    for path in (folder, *folder.rglob("*")):
        os.chown(path, user.pw_uid, user.pw_gid)
    return ["setpriv", f"--reuid={user.pw_uid}", f"--regid={user.pw_gid}", "--clear-groups"]


@pytest.fixture(scope="module")
def postgres_server():
    """(socket folder, role) of a PostgreSQL server in a temporary folder, listening only on a unix socket."""
    pytest.importorskip("psycopg", reason="no PostgreSQL driver: pip install 'psycopg[binary]' (the test extra)")
    binaries = postgres_bin()
    if binaries is None:
        pytest.skip("PostgreSQL server binaries (initdb, pg_ctl) not found: apt-get install postgresql")
    folder = Path(tempfile.mkdtemp(prefix="eqp-pg-"))  # short: a unix socket path has ~100 characters
    data, log = folder / "data", folder / "server.log"
    prefix, started = [], False
    try:
        prefix = as_server_user(folder)
        init = subprocess.run([*prefix, str(binaries / "initdb"), "-D", str(data), "-U", "equiprop", "-A", "trust",
                               "-E", "UTF8", "--no-sync"], capture_output=True, text=True)
        if init.returncode:
            pytest.skip(f"initdb could not create a PostgreSQL cluster: {(init.stderr or init.stdout)[-300:]}")
        options = f"-c listen_addresses='' -k {folder} -c fsync=off -c full_page_writes=off"
        start = subprocess.run([*prefix, str(binaries / "pg_ctl"), "-D", str(data), "-l", str(log), "-w", "-t", "60",
                                "-o", options, "start"], capture_output=True, text=True)
        if start.returncode:
            tail = log.read_text()[-300:] if log.exists() else start.stderr[-300:]
            pytest.skip(f"the PostgreSQL server did not start: {tail}")
        started = True
        yield folder, "equiprop"
    finally:
        if started:
            subprocess.run([*prefix, str(binaries / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"],
                           capture_output=True)
        shutil.rmtree(folder, ignore_errors=True)


def postgres_database(server, name: str) -> str:
    """A new database on the server: its SQLAlchemy URL (psycopg 3, unix socket)."""
    import psycopg

    folder, role = server
    with psycopg.connect(host=str(folder), user=role, dbname="postgres", autocommit=True) as connection:
        connection.execute(f"CREATE DATABASE {name}")
    return f"postgresql+psycopg://{role}@/{name}?host={folder}"


@pytest.fixture(params=["journal", "postgresql"])
def storage_url(request, tmp_path):
    if request.param == "journal":
        return f"journal://{tmp_path / 'study.log'}"  # journal:///tmp/...: an absolute path
    return postgres_database(request.getfixturevalue("postgres_server"), f"study_{time.monotonic_ns()}")


# -- the storages -----------------------------------------------------------------------------------------------------
def test_a_silent_trial_is_failed_and_queued_again_and_its_retry_is_not_failed_at_once(storage_url):
    storage = make_storage(TUNE, storage_url)
    study = make_study(TUNE, storage, "heartbeat")
    trial = study.ask()
    storage.record_heartbeat(trial._trial_id)
    time.sleep(4.5)  # past the 3 s grace period (PostgreSQL's clock and ours may round to whole seconds)
    fail_stale_trials(study)
    assert [t.state.name for t in study.trials] == ["FAIL", "WAITING"]
    retry = study.ask()  # pops the queued retry; in the journal it inherits the old beat, yet has just started
    assert retry.number == 1 and study.trials[1].system_attrs["failed_trial"] == 0
    assert HEARTBEAT_KEY in study.trials[1].system_attrs or not storage_url.startswith("journal")
    fail_stale_trials(study)
    assert [t.state.name for t in study.trials] == ["FAIL", "RUNNING"]
    storage.record_heartbeat(trial._trial_id)  # a late beat of the failed trial changes nothing and raises nothing
    assert study.trials[0].state.name == "FAIL"


def test_of_two_trials_started_at_once_for_the_last_place_only_the_earlier_one_runs(tmp_path):
    study = make_study(TUNE, make_storage(TUNE, f"journal://{tmp_path / 'race.log'}"), "race")
    first, second = study.ask(), study.ask()  # two workers' trials, both running, one place left
    guarded = within(lambda trial: 1.0, n_trials=1)
    with pytest.raises(Surplus, match="trial 1 not run: 1 trials finished or running before it"):
        guarded(second)
    assert guarded(first) == 1.0
    assert "surplus" in study.trials[1].user_attrs and "worker" in study.trials[0].user_attrs


def test_a_worker_waits_for_a_killed_workers_trial_and_runs_its_retry(tmp_path, capsys):
    """In one process: a trial that beat once and went silent holds the last place; the worker runs the other one,
    waits, and once the grace period has passed runs the retry, with the killed trial's parameters."""
    study = make_study(TUNE, make_storage(TUNE, f"journal://{tmp_path / 'wait.log'}"), "wait")
    killed = study.ask()
    killed.suggest_float("x", 0, 1)
    study._storage.record_heartbeat(killed._trial_id)
    start = time.monotonic()
    run_worker(study, lambda trial: trial.suggest_float("x", 0, 1), n_trials=2, budget=2, poll=0.2)
    assert time.monotonic() - start > TUNE["grace_period"]
    assert [t.state.name for t in study.trials] == ["FAIL", "COMPLETE", "COMPLETE"]
    assert study.trials[2].system_attrs["failed_trial"] == 0 and study.trials[2].params == study.trials[0].params
    assert "waiting for trials [0] of other workers" in capsys.readouterr().out


def test_journal_paths_and_bad_storages_are_one_line_errors(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    make_storage(TUNE, "journal://relative.log")
    assert (tmp_path / "relative.log").is_file()
    with pytest.raises(ConfigError, match=r"--storage: one of sqlite:///FILE, postgresql\+psycopg://USER@HOST/DB .* "
                                          r"or journal://PATH .*got 'redis://localhost/0'"):
        make_storage(TUNE, "redis://localhost/0")
    with pytest.raises(ConfigError, match="--storage: one of .*got 'study.log'"):
        make_storage(TUNE, "study.log")
    with pytest.raises(ConfigError, match="--storage journal:///nowhere/study.log: folder /nowhere does not exist"):
        make_storage(TUNE, "journal:///nowhere/study.log")
    with pytest.raises(ConfigError, match="journal://PATH needs a file"):
        make_storage(TUNE, f"journal://{tmp_path}")
    assert label("postgresql+psycopg://me:secret@db.cluster/optuna") == "postgresql+psycopg://me:***@db.cluster/optuna"


def test_a_journal_in_a_shipped_model_is_refused(tmp_path, capsys):
    from equiprop.shipped import shipped_models

    models = shipped_models()
    if not models:
        pytest.skip("no shipped models in this checkout")
    folder = next(iter(models.values()))
    before = sorted(p.name for p in folder.iterdir())
    recipe = tmp_path / "tune.yaml"
    recipe.write_text(yaml.safe_dump({"run_name": "x", "tune": TUNE}))
    assert main(["tune", "-c", str(recipe), "--n-trials", "1", f"--storage=journal://{folder}/study.log"]) == 2
    assert "lies in the shipped model" in capsys.readouterr().err
    assert sorted(p.name for p in folder.iterdir()) == before


def test_an_unknown_storage_stops_the_command_before_any_folder(tmp_path, monkeypatch, cli_recipe, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "tune.yaml").write_text(yaml.safe_dump({**cli_recipe, "tune": TUNE}))
    assert main(["tune", "-c", "tune.yaml", "--n-trials", "1", "--storage", "mongodb://host/db"]) == 2
    err = capsys.readouterr().err.strip()
    assert "--storage: one of sqlite:///FILE" in err and "\n" not in err
    assert not (tmp_path / "runs").exists()


# -- two worker processes, one killed ---------------------------------------------------------------------------------
def worker(tmp_path, url: str, n_trials: int, name: str) -> subprocess.Popen:
    """``equiprop tune`` in a process of its own, its output in ``<name>.log`` (a pipe nobody reads could fill up)."""
    argv = [sys.executable, "-m", "equiprop.cli", "tune", "-c", "tune.yaml", "--n-trials", str(n_trials),
            "--storage", url, "--study-name", "shared"]
    with open(tmp_path / f"{name}.log", "w") as log:
        return subprocess.Popen(argv, cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT)


def kill_tree(process: subprocess.Popen, watch) -> None:
    import psutil

    if process.poll() is not None:
        return
    children = psutil.Process(process.pid).children(recursive=True)
    process.send_signal(signal.SIGKILL)
    process.wait(10)
    for child in children:
        if not watch.gone(child):
            child.kill()


def test_two_workers_share_a_study_and_a_killed_workers_trial_is_retried(tmp_path, cli_recipe, storage_url,
                                                                          process_watch):
    n_trials = 4
    (tmp_path / "tune.yaml").write_text(yaml.safe_dump({**cli_recipe, "run_name": "shared", "tune": TUNE}))
    storage = make_storage(TUNE, storage_url)
    doomed, survivor = (worker(tmp_path, storage_url, n_trials, name) for name in ("doomed", "survivor"))
    doomed_id = f"{socket.gethostname()}:{doomed.pid}"
    try:
        def doomed_runs_its_second_trial() -> bool:
            try:
                trials = optuna.load_study(study_name="shared", storage=storage).trials
            except KeyError:  # the study is not created yet
                return False
            mine = [t for t in trials if t.user_attrs.get("worker") == doomed_id]
            return len(mine) >= 2 and mine[-1].state.name == "RUNNING" or doomed.poll() is not None

        ready = process_watch.wait_for(doomed_runs_its_second_trial, 150, step=0.2)
        kill_tree(doomed, process_watch)
        assert ready and doomed.returncode == -signal.SIGKILL, (tmp_path / "doomed.log").read_text()[-3000:]
        survivor.wait(150)
        assert survivor.returncode == 0, (tmp_path / "survivor.log").read_text()[-3000:]
    finally:
        for process in (doomed, survivor):
            if process.poll() is None:
                kill_tree(process, process_watch)
    trials = optuna.load_study(study_name="shared", storage=storage).trials
    complete = [t for t in trials if t.state.name == "COMPLETE"]
    killed = [t for t in trials if t.state.name == "FAIL" and "surplus" not in t.user_attrs]
    assert len(complete) == n_trials, [(t.number, t.state.name, t.user_attrs) for t in trials]
    assert {t.user_attrs["worker"] for t in complete} == {doomed_id, f"{socket.gethostname()}:{survivor.pid}"}
    # the killed trial: failed once silent, retried by the survivor with its parameters
    assert len(killed) == 1 and killed[0].user_attrs["worker"] == doomed_id
    retry = [t for t in complete if t.system_attrs.get("failed_trial") == killed[0].number]
    assert len(retry) == 1 and retry[0].params == killed[0].params
    assert retry[0].user_attrs["worker"] == f"{socket.gethostname()}:{survivor.pid}"
    # no trial twice: each complete trial's parameters drawn once, each trial trained in its own folder by one worker
    assert len({tuple(sorted(t.params.items())) for t in complete}) == n_trials
    trained = {t.number for t in complete + killed}
    assert {int(p.name.removeprefix("trial_")) for p in (tmp_path / "runs" / "shared").glob("trial_*")} == trained

"""Runs never overwrite or shadow each other, and checkpoints are written atomically in the run folder."""

import hashlib
import subprocess
import sys
import textwrap

import pytest
import torch
import yaml

from equiprop.cli import main
from equiprop.data.errors import ConfigError
from equiprop.train.checkpoint_io import AtomicCheckpointIO
from equiprop.train.run_dir import acquire_lock, check_run_name, lock_path, release_lock
from equiprop.train.run_record import read_record

@pytest.fixture
def recipe(tmp_path, monkeypatch, cli_recipe):
    monkeypatch.chdir(tmp_path)  # runs go to ./runs/<run_name>
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(cli_recipe))
    return path


def _digest(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.integration  # four short fits
def test_a_second_fit_with_the_same_run_name_is_refused_unless_resumed_or_overwritten(recipe, tmp_path, capsys):
    run = tmp_path / "runs" / "tiny"
    assert main(["fit", "-c", str(recipe)]) == 0
    first = _digest(run / "best.ckpt")
    capsys.readouterr()

    assert main(["fit", "-c", str(recipe), "--seed_everything=1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "already holds a run (best.ckpt, last.ckpt)" in err[0]
    assert "--ckpt_path runs/tiny/last.ckpt" in err[0] and "--overwrite=true" in err[0]
    assert _digest(run / "best.ckpt") == first  # untouched

    assert main(["fit", "-c", str(recipe), "--seed_everything=1", "--overwrite=true"]) == 0
    assert _digest(run / "best.ckpt") != first  # the new run's own model, not the old one's
    assert sorted(p.name for p in run.glob("*.ckpt")) == ["best.ckpt", "last.ckpt"]  # never best-v1.ckpt

    # resuming keeps writing the run's own best.ckpt / last.ckpt
    assert main(["fit", "-c", str(recipe), "--trainer.max_epochs=2", "--ckpt_path", str(run / "last.ckpt")]) == 0
    assert sorted(p.name for p in run.glob("*.ckpt")) == ["best.ckpt", "last.ckpt"]
    assert torch.load(run / "last.ckpt", weights_only=True)["global_step"] == 4  # 2 epochs x 2 batches
    assert not lock_path(run).exists()  # released when the process ends, or at once for a refused fit


def test_runs_have_a_root_of_their_own_that_equiprop_runs_moves(recipe, tmp_path, monkeypatch):
    """A run never writes under checkpoints/ (the shipped models' root): runs/ by default, $EQUIPROP_RUNS if set."""
    scratch = tmp_path / "scratch" / "equiprop-runs"  # e.g. a cluster's scratch disk, given as an absolute path
    monkeypatch.setenv("EQUIPROP_RUNS", str(scratch))
    assert main(["fit", "-c", str(recipe)]) == 0
    assert sorted(p.name for p in (scratch / "tiny").glob("*.ckpt")) == ["best.ckpt", "last.ckpt"]
    assert read_record(scratch / "tiny")  # the run recorded what it wrote there
    assert not (tmp_path / "runs").exists() and not (tmp_path / "checkpoints").exists()


def test_a_fit_on_a_folder_another_fit_holds_is_refused(recipe, tmp_path, capsys):
    run = tmp_path / "runs" / "tiny"
    lock = acquire_lock(run)  # another fit, as far as the folder can tell (a live process holds the lock)
    try:
        assert main(["fit", "-c", str(recipe)]) == 2
        assert "is in use by another fit" in capsys.readouterr().err
        assert not list(run.glob("*.ckpt"))
    finally:
        release_lock(lock)
    assert main(["fit", "-c", str(recipe)]) == 0


def test_the_lock_of_a_killed_fit_is_taken_over(tmp_path):
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    run = tmp_path / "run"
    run.mkdir()
    import json
    import socket

    lock_path(run).write_text(json.dumps({"pid": int(gone.stdout), "host": socket.gethostname()}))
    lock = acquire_lock(run)  # its process is gone: the folder is free
    assert json.loads(lock.read_text())["pid"] != int(gone.stdout)
    release_lock(lock)
    assert not lock.exists()


@pytest.mark.integration  # two Python processes importing equiprop
def test_of_two_fits_started_at_once_exactly_one_gets_the_folder(tmp_path):
    script = textwrap.dedent(f"""
        import sys, time
        from equiprop.data.errors import ConfigError
        from equiprop.train.run_dir import acquire_lock
        time.sleep(max(0.0, {__import__('time').time() + 3.0} - time.time()))  # start together
        try:
            acquire_lock(__import__('pathlib').Path(sys.argv[1]))
            print("got it"); sys.stdout.flush(); time.sleep(2)
        except ConfigError as err:
            print("refused:", err)
    """)
    workers = [subprocess.Popen([sys.executable, "-c", script, str(tmp_path / "run")], stdout=subprocess.PIPE,
                                text=True) for _ in range(2)]
    outputs = [w.communicate(timeout=60)[0] for w in workers]
    assert sorted(o.split()[0] for o in outputs) == ["got", "refused:"], outputs
    assert not lock_path(tmp_path / "run").exists()


def test_checkpoints_are_replaced_atomically_in_the_run_folder(tmp_path):
    io = AtomicCheckpointIO()
    target = tmp_path / "run" / "last.ckpt"
    io.save_checkpoint({"state_dict": {"w": torch.ones(3)}, "epoch": 1}, target)
    before = _digest(target)
    with pytest.raises(Exception):  # torch.save fails half-way: a lambda cannot be serialised
        io.save_checkpoint({"state_dict": {"w": torch.zeros(3)}, "epoch": 2, "bad": lambda: None}, target)
    assert _digest(target) == before  # the earlier checkpoint is intact, not truncated
    # no partial file left behind; the run record names the checkpoint with the sha256 of what was written
    assert sorted(p.name for p in target.parent.iterdir()) == [".equiprop-run.json", "last.ckpt"]
    assert torch.load(target, weights_only=True)["epoch"] == 1
    assert read_record(target.parent)["files"] == {"last.ckpt": before}


def test_fits_write_through_the_atomic_checkpoint_io(cli_recipe, tmp_path):
    from equiprop.train.run import build_run

    trainer, _, _ = build_run(cli_recipe, [], tmp_path / "work")
    assert isinstance(trainer.strategy.checkpoint_io, AtomicCheckpointIO)


def test_a_lock_of_a_live_process_on_this_host_is_respected(tmp_path):
    lock = acquire_lock(tmp_path / "run")
    with pytest.raises(ConfigError, match="in use by another fit"):
        acquire_lock(tmp_path / "run")
    assert acquire_lock(tmp_path / "run", reentrant=True) == lock  # a workflow re-building its own folder
    release_lock(lock)
    assert not lock.exists()


BAD_NAMES = ["", ".", "..", "a/b", "../x", "a\\b", "-x", ".hidden", "my run", "x;y", "é"]


@pytest.mark.parametrize("name", BAD_NAMES)
def test_a_run_name_that_is_not_one_plain_folder_name_is_refused(name):
    with pytest.raises(ConfigError, match="is not one folder name") as err:
        check_run_name(name)
    assert len(str(err.value).splitlines()) == 1 and repr(name) in str(err.value)


@pytest.mark.parametrize("name", ["run", "my_run_s0", "v1.2-small", "_x", "0"])
def test_plain_folder_names_are_run_names(name):
    assert check_run_name(name) == name


@pytest.mark.parametrize("given", ["{outside}", "../outside", "sub/../../outside", "{outside}/nested"])
def test_a_fit_never_writes_or_deletes_outside_its_run_folder(given, cli_recipe, tmp_path, monkeypatch):
    from equiprop.train.run import fit

    (tmp_path / "work").mkdir()
    monkeypatch.chdir(tmp_path / "work")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "last.ckpt").write_bytes(b"someone else's")  # what --overwrite=true would delete
    name = given.format(outside=outside)
    with pytest.raises(ConfigError, match="is not one folder name"):
        fit(cli_recipe, [f"--run_name={name}", "--overwrite=true"])
    assert [p.name for p in outside.iterdir()] == ["last.ckpt"]
    assert (outside / "last.ckpt").read_bytes() == b"someone else's"
    assert not list((tmp_path / "work").iterdir())  # refused before any folder was made


def test_the_fit_command_refuses_an_absolute_run_name_in_one_line(recipe, tmp_path, capsys):
    assert main(["fit", "-c", str(recipe), f"--run_name={tmp_path / 'elsewhere'}"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "is not one folder name" in err[0], err
    assert not (tmp_path / "elsewhere").exists() and not (tmp_path / "runs").exists()


def test_workflows_nest_runs_in_plain_sub_folders_only(cli_recipe, tmp_path, monkeypatch):
    from equiprop.train.run import build_run

    monkeypatch.chdir(tmp_path)
    trainer, _, _ = build_run(dict(cli_recipe, run_name="study/trial_000"))
    assert trainer.checkpoint_callback.dirpath.endswith("runs/study/trial_000")
    with pytest.raises(ConfigError, match="is not one folder name"):
        build_run(dict(cli_recipe, run_name="study/../../x"))


def test_a_workflow_fit_claims_its_folder_as_equiprop_fit_does(cli_recipe, tmp_path, monkeypatch):
    """build_run (tune trials, MatBench folds, curve points): a foreign checkpoint or another live fit's lock
    refuses it; its own earlier checkpoints are replaced when the workflow runs the folder again."""
    import json
    import os
    import socket

    from equiprop.train.run import build_run

    monkeypatch.chdir(tmp_path)
    cli_recipe["data"]["cache_dir"] = str(tmp_path / "graphs")
    recipe = dict(cli_recipe, run_name="study/trial_000")
    folder = tmp_path / "runs" / "study" / "trial_000"
    folder.mkdir(parents=True)
    (folder / "best.ckpt").write_bytes(b"a user's file")
    with pytest.raises(ConfigError, match=r"holds checkpoints no equiprop run wrote there.*best\.ckpt"):
        build_run(recipe)
    assert (folder / "best.ckpt").read_bytes() == b"a user's file"
    (folder / "best.ckpt").unlink()
    lock = lock_path(folder)
    lock.write_text(json.dumps({"pid": os.getppid(), "host": socket.gethostname(), "started": 0}))
    with pytest.raises(ConfigError, match="in use by another fit"):
        build_run(recipe)
    lock.unlink()
    for _ in range(2):  # the second build replaces the first fit's own checkpoints
        trainer, model, datamodule = build_run(recipe)
        trainer.fit(model, datamodule=datamodule)
    assert sorted(p.name for p in folder.glob("*.ckpt")) == ["best.ckpt", "last.ckpt"]

"""Shared fixtures: the one location of the real data, the tiny structures, an isolated graph cache.

Real data lives in ``../shared/data`` beside the checkout (developers and CI have it; a user's fresh clone does not).
``EQUIPROP_TEST_SHARED_DATA`` overrides that location; it is read here and nowhere else, e.g.
``EQUIPROP_TEST_SHARED_DATA=/nonexistent pytest`` runs the suite as a fresh clone would. A test that needs files found
only there takes the ``shared_data`` fixture or carries ``@pytest.mark.requires_shared_data``: both skip it, with a
one-line reason, when the folder is absent. The 58 tiny structures (``tiny_entries``) ship in ``tests/fixtures/``.
"""

import contextlib
import copy
import json
import os
from pathlib import Path

import pytest
import torch

CHECKOUT = Path(__file__).resolve().parents[1]
FIXTURES = Path(__file__).resolve().parent / "fixtures"
TINY_MULTITASK = FIXTURES / "tiny_multitask.json"  # copy of ../shared/data/tiny_multitask.json (fixtures/README.md)
SHARED_DATA_ENV = "EQUIPROP_TEST_SHARED_DATA"
SHARED_DATA = Path(os.environ.get(SHARED_DATA_ENV) or CHECKOUT.parent / "shared" / "data")
SKIP_REASON = f"needs the real data at {SHARED_DATA} (../shared/data beside the checkout, or ${SHARED_DATA_ENV})"


# Modules in which every test is an integration test (Optuna studies, MatBench folds), marked here rather than in the
# files while their authors rework them; the marker can move into each file as ``pytestmark`` later.
INTEGRATION_MODULES = {"workflows/test_tune.py", "workflows/test_matbench.py"}


@pytest.hookimpl(tryfirst=True)  # before -m deselects by marker
def pytest_collection_modifyitems(items):
    tests = Path(__file__).resolve().parent
    for item in items:
        if item.path.resolve().relative_to(tests).as_posix() in INTEGRATION_MODULES:
            item.add_marker(pytest.mark.integration)


def pytest_runtest_setup(item):
    if item.get_closest_marker("requires_shared_data") is not None and not SHARED_DATA.is_dir():
        pytest.skip(SKIP_REASON)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real-data folder; skips the test when it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(SKIP_REASON)
    return SHARED_DATA


@pytest.fixture(scope="session")
def tiny_multitask_path() -> Path:
    """Path of the tiny multi-task file shipped with the tests (pymatgen structure dicts + masked labels)."""
    return TINY_MULTITASK


@pytest.fixture(scope="session")
def tiny_entries(tiny_multitask_path) -> list[dict]:
    """The 58 entries of tiny_multitask.json (pymatgen structure dicts + masked labels)."""
    return json.loads(tiny_multitask_path.read_text())["entries"]


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path_factory, monkeypatch):
    """No test writes graphs to the user's cache."""
    monkeypatch.setenv("EQUIPROP_CACHE", str(tmp_path_factory.getbasetemp() / "graph_cache"))


@pytest.fixture
def float64():
    """Default dtype float64 for the test: e3nn builds coupling coefficients in it, and equivariance checks then hold to
    rounding (1e-10), not to float32's 1e-4."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(previous)


# a tiny fit recipe for the command line (in-process via equiprop.cli.main): a few batches, seconds
CLI_RECIPE = {
    "run_name": "tiny",
    "seed_everything": 0,
    "trainer": {"max_epochs": 1, "accelerator": "cpu", "log_every_n_steps": 1, "limit_train_batches": 2,
                "limit_val_batches": 1, "enable_progress_bar": False, "enable_model_summary": False},
    "model": {"encoder": {"class_path": "equiprop.nn.EquivariantEncoder",
                          "init_args": {"max_ell": 1, "multiplicities": [8, 4], "num_layers": 1}}},
    "data": {"sources": [{"class_path": "equiprop.data.sources.BundledDataset", "init_args": {"dataset": "tiny"}}],
             "tasks": ["Ef", "Eg"], "cutoff": 4.5, "batch_size": 8,
             "split": {"class_path": "equiprop.data.splits.RandomSplit",
                       "init_args": {"val_fraction": 0.25, "test_fraction": 0.25}}},
}


@pytest.fixture
def cli_recipe():
    """A fresh copy of CLI_RECIPE (a dict) to change and write."""
    return copy.deepcopy(CLI_RECIPE)


@pytest.fixture(scope="session")
def cli_recipe_factory():
    """Fresh copies of CLI_RECIPE for module-scoped fixtures (``cli_recipe_factory()``)."""
    return lambda: copy.deepcopy(CLI_RECIPE)


@contextlib.contextmanager
def _read_only(folder):
    """``folder`` and its files unwritable. Permission bits do not bind root: as root, the immutable attribute
    (the test is skipped where it cannot be set)."""
    import shutil
    import subprocess

    if os.geteuid() != 0:
        paths = [folder, *folder.rglob("*")]
        modes = {p: p.stat().st_mode for p in paths}
        for p in paths:
            p.chmod(modes[p] & ~0o222)
        try:
            yield
        finally:
            for p in paths:
                p.chmod(modes[p])
        return
    if not shutil.which("chattr") or subprocess.run(["chattr", "-R", "+i", str(folder)],
                                                    capture_output=True).returncode:
        pytest.skip("running as root where the immutable attribute cannot be set: no read-only folder to test")
    try:
        yield
    finally:
        subprocess.run(["chattr", "-R", "-i", str(folder)], check=True)


@pytest.fixture
def read_only():
    """``with read_only(folder):`` the folder and its files cannot be written while the block runs."""
    return _read_only


class ProcessWatch:
    """Child processes of a command run in a subprocess (psutil), for the tests that kill it with SIGKILL."""

    @staticmethod
    def gone(process) -> bool:
        """Ended (a zombie not yet reaped by init counts as ended: it holds no memory and runs nothing)."""
        import psutil

        try:
            return not process.is_running() or process.status() == psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return True

    @staticmethod
    def wait_for(condition, timeout: float, step: float = 0.05) -> bool:
        import time

        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if condition():
                return True
            time.sleep(step)
        return condition()

    def kill_and_check(self, argv: list[str], cwd, min_children: int = 2, start_timeout: float = 120) -> None:
        """Start ``argv``, wait for ``min_children`` descendants, SIGKILL it, assert none outlives it by 5 s."""
        import signal
        import subprocess

        import psutil

        command = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=cwd)
        children = []
        try:
            parent = psutil.Process(command.pid)
            started = self.wait_for(lambda: len(parent.children(recursive=True)) >= min_children
                                    or command.poll() is not None, start_timeout)
            children = parent.children(recursive=True)
            assert started and command.poll() is None and len(children) >= min_children, \
                command.stderr.read().decode()[-2000:]
            import time

            time.sleep(0.5)  # the workers are busy (the case that used to leave one behind)
            command.send_signal(signal.SIGKILL)
            command.wait(10)
            assert self.wait_for(lambda: all(self.gone(c) for c in children), 5), \
                f"still alive 5 s after {argv[3]} was killed: {[c.pid for c in children if not self.gone(c)]}"
        finally:  # a failed run leaves nothing behind either
            for process in [*children, psutil.Process(command.pid)] if command.poll() is None else children:
                if not self.gone(process):
                    process.kill()
            command.wait(10)
            command.stderr.close()


@pytest.fixture
def process_watch() -> ProcessWatch:
    return ProcessWatch()


# -- the one quiet trainer and the one tiny-checkpoint factory ---------------------------------------------------------
def _quiet_trainer(**overrides):
    """The tests' Lightning Trainer: CPU, one epoch, no logger, progress bar, model summary or checkpointing unless
    ``overrides`` ask for them."""
    import lightning as L

    settings = dict(max_epochs=1, accelerator="cpu", logger=False, enable_progress_bar=False,
                    enable_checkpointing=False, enable_model_summary=False)
    return L.Trainer(**{**settings, **overrides})


def _tiny_checkpoint(path: Path, tasks: list, encoder=None, source=None, seed: int = 0, dropout: float = 0.0,
                     train_batches: int = 2, split: tuple[float, float] = (0.2, 0.2)) -> Path:
    """A real checkpoint at ``path``: a small model on the tiny structures, trained for ``train_batches`` batches
    with ``seed`` (``encoder``: a zero-argument callable building it after seeding; default a small invariant one;
    ``source``: a data source, default the bundled tiny set)."""
    import lightning as L

    from equiprop.data.datamodule import MultiTaskDataModule
    from equiprop.data.sources import BundledDataset
    from equiprop.data.splits import RandomSplit
    from equiprop.nn import InvariantEncoder
    from equiprop.train.module import MultiTaskModel

    L.seed_everything(seed)
    built = encoder() if encoder is not None else InvariantEncoder(cutoff=4.5, num_features=16, num_layers=1)
    model = MultiTaskModel(built, tasks, dropout=dropout)
    data = MultiTaskDataModule(sources=[source or BundledDataset("tiny")], tasks=tasks, cutoff=4.5,
                               split=RandomSplit(*split, seed=0), batch_size=8,
                               cache_dir=str(Path(path).parent / "cache"))
    trainer = _quiet_trainer(limit_train_batches=train_batches, limit_val_batches=1,
                             default_root_dir=str(Path(path).parent))
    trainer.fit(model, datamodule=data)
    trainer.save_checkpoint(path)
    return Path(path)


@pytest.fixture(scope="session")
def quiet_trainer():
    """``quiet_trainer(**overrides)`` -> a Lightning Trainer for tests (``_quiet_trainer``)."""
    return _quiet_trainer


@pytest.fixture(scope="session")
def tiny_checkpoint():
    """``tiny_checkpoint(path, tasks, ...)`` -> a real checkpoint of a small model (``_tiny_checkpoint``)."""
    return _tiny_checkpoint

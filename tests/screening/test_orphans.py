"""A screen killed with SIGKILL leaves no process behind: its DataLoader workers die with it (real processes).

Without ``DieWithParent`` a worker blocked sending a finished chunk to its dead parent lived on, reparented to init.
"""

import os
import subprocess
import sys

import pytest

from equiprop.data.processes import DieWithParent


@pytest.mark.integration
def test_workers_of_a_killed_screen_do_not_survive(tmp_path, checkpoints, process_watch):
    # 5,909 bundled structures, three times: phase 1 runs for several seconds with both workers busy
    process_watch.kill_and_check([sys.executable, "-m", "equiprop.cli", "screen", "--input", *["bundled:default"] * 3,
                                  "--phase1", str(checkpoints[0]), "--output", str(tmp_path / "out.csv"),
                                  "--workers", "2", "--chunk-size", "256", "--allow-unseen-elements"], tmp_path)


def test_a_worker_whose_parent_died_first_ends_itself():
    """The parent may die between fork and prctl: the worker sees another parent pid and exits at once."""
    init = DieWithParent()
    init.parent = -1  # as if created by a parent that is no longer ours
    done = subprocess.run([sys.executable, "-c", "import pickle, sys; pickle.loads(sys.stdin.buffer.read())(0); "
                           "print('survived')"], input=__import__("pickle").dumps(init), capture_output=True)
    expected = 1 if sys.platform.startswith("linux") else 0
    assert done.returncode == expected and (b"survived" in done.stdout) == (expected == 0)


def test_called_in_the_parent_itself_changes_nothing():
    init = DieWithParent(then=lambda worker_id: calls.append(worker_id))
    calls = []
    init(3)
    assert calls == [3] and os.getpid() == init.parent

"""A screen killed with SIGKILL leaves no process behind: its DataLoader workers die with it (real processes).

Without ``DieWithParent`` a worker blocked sending a finished chunk to its dead parent lived on, reparented to init.
"""

import os
import signal
import subprocess
import sys
import time

import psutil
import pytest

from equiprop.data.processes import DieWithParent


def gone(process: psutil.Process) -> bool:
    """Ended (a zombie not yet reaped by init counts as ended: it holds no memory and runs nothing)."""
    try:
        return not process.is_running() or process.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def wait_for(condition, timeout: float, step: float = 0.05) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if condition():
            return True
        time.sleep(step)
    return condition()


@pytest.mark.integration
def test_workers_of_a_killed_screen_do_not_survive(tmp_path, checkpoints):
    # 5,909 bundled structures, three times: phase 1 runs for several seconds with both workers busy
    argv = [sys.executable, "-m", "equiprop.cli", "screen", "--input", *["bundled:default"] * 3, "--phase1",
            str(checkpoints[0]), "--output", str(tmp_path / "out.csv"), "--workers", "2", "--chunk-size", "256",
            "--allow-unseen-elements"]
    screen = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=tmp_path)
    children = []
    try:
        parent = psutil.Process(screen.pid)
        assert wait_for(lambda: len(parent.children(recursive=True)) >= 2 or screen.poll() is not None, 120), \
            "the screen started no workers within 120 s"
        children = parent.children(recursive=True)
        assert screen.poll() is None and len(children) >= 2, screen.stderr.read().decode()[-2000:]
        time.sleep(0.5)  # the workers are predicting chunks (the case that used to leave one behind)
        screen.send_signal(signal.SIGKILL)
        screen.wait(10)
        assert wait_for(lambda: all(gone(c) for c in children), 5), \
            f"still alive 5 s after the screen was killed: {[c.pid for c in children if not gone(c)]}"
    finally:  # a failed run leaves nothing behind either
        for process in [*children, psutil.Process(screen.pid)] if screen.poll() is None else children:
            if not gone(process):
                process.kill()
        screen.wait(10)
        screen.stderr.close()


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

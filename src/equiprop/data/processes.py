"""Child processes that end with their parent: DataLoader workers and process pools equiprop starts.

A worker blocked on a pipe its dead parent no longer reads (a chunk's result bigger than the pipe's buffer, a pool
worker waiting for tasks) never notices the parent is gone: after ``kill -9`` of ``equiprop screen`` its worker
lived on, reparented to init, holding its memory. ``DieWithParent`` asks Linux to send the worker SIGKILL when its
parent dies (``prctl(PR_SET_PDEATHSIG, SIGKILL)``); elsewhere it does nothing (other systems have no such call).

    DataLoader(dataset, num_workers=2, worker_init_fn=DieWithParent())        # created in the parent
    multiprocessing.get_context("fork").Pool(2, initializer=DieWithParent())

Create it in the parent (it records the parent's pid) and pass it to the worker. The worker checks, after asking,
that its parent is still that pid: a parent that died before the request would otherwise never send the signal.
Linux sends the signal when the *thread* that forked the worker ends, so start workers from a thread that lives as
long as they should (the main thread; DataLoader and Pool start them in the thread that creates them).
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys

PR_SET_PDEATHSIG = 1  # linux/prctl.h


def request_parent_death_signal(sig: int = signal.SIGKILL) -> bool:
    """Ask the kernel to send ``sig`` to this process when its parent dies; False where that cannot be asked."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)  # the C library already loaded in this process
        return libc.prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0) == 0
    except (OSError, AttributeError):  # no prctl symbol (an unusual libc): stay a plain worker
        return False


class DieWithParent:
    """A ``worker_init_fn`` / pool ``initializer``: the worker is killed when the process that created this object
    dies. Wraps an optional other init function (called after, with the same arguments). Picklable (spawn)."""

    def __init__(self, then=None):
        self.parent = os.getpid()
        self.then = then

    def __call__(self, *args) -> None:
        if os.getpid() == self.parent:  # called in the parent itself (not a worker): nothing to tie to
            pass
        elif request_parent_death_signal() and os.getppid() != self.parent:
            os._exit(1)  # the parent died before the request took effect: no signal will come; end now
        if self.then is not None:
            self.then(*args)

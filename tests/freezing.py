"""Freezing a process (SIGSTOP) so that its ports stay open and nothing answers."""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Iterator
from pathlib import Path

from waiting import wait_for


def _every_thread_stopped(pid: int) -> bool:
    states = []
    for stat in Path(f"/proc/{pid}/task").glob("*/stat"):
        with contextlib.suppress(FileNotFoundError):  # a thread that ended meanwhile
            states.append(stat.read_text().rsplit(")", 1)[1].split()[0])
    return bool(states) and all(state in ("T", "t") for state in states)


@contextlib.contextmanager
def frozen(pid: int) -> Iterator[None]:
    """Stop ``pid`` for the ``with`` block, then let it go on.

    ``kill(SIGSTOP)`` returns before the target's threads have stopped; a thread still
    running could answer one more request. The block starts only once every thread of
    ``pid`` shows the stopped state in ``/proc``.
    """
    os.kill(pid, signal.SIGSTOP)
    try:
        wait_for(lambda: _every_thread_stopped(pid), f"process {pid} stopping", timeout=30, interval=0.01)
        yield
    finally:
        os.kill(pid, signal.SIGCONT)

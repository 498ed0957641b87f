"""Child processes that cannot outlive this process, and killing a process with its descendants."""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

from ..etcd_process import popen_owned


def spawn(command: Sequence[str], *, env: Mapping[str, str], log: Path, cwd: Path | None = None) -> subprocess.Popen:
    """Start ``command`` in its own process group, output to ``log``, killed (Linux
    parent-death signal) when this process ends -- however it ends.

    The child is forked by the long-lived spawner thread of :mod:`rdzv.etcd_process`
    (the parent-death signal fires when the *thread* that forked the child ends, so
    a short-lived caller thread, a notebook callback say, must not fork it).
    """
    with open(log, "ab") as out:
        return popen_owned(
            list(command), env=dict(env), cwd=cwd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT
        )


def descendants(pid: int) -> list[int]:
    """The pids of every living descendant of ``pid`` (children first), read from /proc."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir() if Path("/proc").is_dir() else ():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, ValueError, IndexError):
            stat = (entry / "stat").read_text()
            parent = int(stat[stat.rindex(")") + 2:].split()[1])
            children.setdefault(parent, []).append(int(entry.name))
    found: list[int] = []
    queue = [pid]
    while queue:
        for child in children.get(queue.pop(0), ()):
            found.append(child)
            queue.append(child)
    return found


def signal_tree(process: subprocess.Popen, sig: int) -> None:
    """Send ``sig`` to the process's group and to every descendant's group (torchrun
    starts each worker in a session of its own, so the agent's group alone misses them)."""
    pids = [process.pid, *descendants(process.pid)]
    groups: list[int] = []
    own_group = os.getpgrp()
    for pid in pids:
        with contextlib.suppress(OSError):
            group = os.getpgid(pid)
            if group != own_group and group not in groups:
                groups.append(group)
    for group in groups:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(group, sig)
    for pid in pids:  # in case one left its group
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)

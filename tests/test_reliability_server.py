"""EtcdServer under repetition: 100 start/stop cycles leave no process and no directory.
(The SIGKILLed parent, busy port and missing binary cases are in test_server.py, marked
``reliability`` too.)"""

from __future__ import annotations

import os
import subprocess
import time

import pytest

from rdzv.etcd_process import RUN_DIR_PREFIX, pid_alive
from rdzv.server import EtcdServer

pytestmark = [pytest.mark.reliability, pytest.mark.timeout(300)]


def etcd_children() -> list[str]:
    """The etcd processes whose parent is this test process."""
    found = subprocess.run(["pgrep", "-P", str(os.getpid()), "-x", "etcd"], capture_output=True, text=True)
    return found.stdout.split()


def test_a_hundred_start_stop_cycles_leave_nothing_behind(tmp_path):
    before = set(etcd_children())
    pids = []
    took = []
    for cycle in range(100):
        began = time.monotonic()
        server = EtcdServer(data_dir=tmp_path, enable_v2=cycle % 2 == 0)
        server.start()
        took.append(time.monotonic() - began)
        with server.kv("v3") as kv:
            kv.put("/cycle", str(cycle))
            assert kv.get("/cycle").value == str(cycle)
        pids.append(server.pid)
        server.stop()
        assert not pid_alive(server.pid), f"cycle {cycle}: etcd {server.pid} still runs after stop()"
    assert len(set(pids)) == 100
    assert set(etcd_children()) == before
    assert list(tmp_path.iterdir()) == [], [p.name for p in tmp_path.iterdir()]
    took.sort()
    print(f"start-to-ready over 100 cycles: median {took[50] * 1000:.0f} ms, max {took[-1] * 1000:.0f} ms")


def test_a_hundred_context_managed_cycles_with_an_exception_leave_nothing(tmp_path):
    for cycle in range(100):
        with pytest.raises(RuntimeError, match="the body failed"):
            with EtcdServer(data_dir=tmp_path) as server:
                pid = server.pid
                raise RuntimeError("the body failed")
        assert not pid_alive(pid), f"cycle {cycle}: etcd survived the exception"
    assert not list(tmp_path.glob(RUN_DIR_PREFIX + "*"))

"""The session's leak check (conftest ``no_leftovers``) counts exactly what this run started:
its own etcd processes, even once orphaned, and never an unrelated etcd on the same machine."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from conftest import ORIGINAL_TMP, SESSION_TMP, free_port, leftovers, our_etcd_processes, our_run_dirs

from rdzv.etcd_binary import find_etcd_binary
from rdzv.etcd_process import pid_alive
from rdzv.server import EtcdServer

pytestmark = pytest.mark.timeout(60)


def wait_for(condition, what: str, timeout: float = 30):
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)
    return value


def start_detached_etcd(data_dir: Path) -> int:
    """An etcd that is not a descendant of this process (double fork: its shell parent exits
    at once, so it is re-parented), as another program's etcd would be; returns its pid."""
    client, peer = free_port(), free_port()
    command = (
        f"'{find_etcd_binary()}' --name=detached --data-dir='{data_dir}/etcd.data' "
        f"--listen-client-urls=http://127.0.0.1:{client} --advertise-client-urls=http://127.0.0.1:{client} "
        f"--listen-peer-urls=http://127.0.0.1:{peer} --initial-advertise-peer-urls=http://127.0.0.1:{peer} "
        f"--initial-cluster=detached=http://127.0.0.1:{peer} >'{data_dir}/log' 2>&1 & echo $!"
    )
    shell = subprocess.run(["sh", "-c", command], capture_output=True, text=True, timeout=30,
                           start_new_session=True, check=True)
    pid = int(shell.stdout.strip())
    wait_for(lambda: pid_alive(pid) and Path(f"/proc/{pid}/comm").read_text().strip() == "etcd",
             "the detached etcd to run")
    return pid


def kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return
    wait_for(lambda: not pid_alive(pid), f"etcd {pid} to die")


def test_the_run_has_a_temp_dir_of_its_own_inherited_by_children():
    assert SESSION_TMP.parent == ORIGINAL_TMP.resolve() and SESSION_TMP.is_dir()
    assert Path(tempfile.gettempdir()).resolve() == SESSION_TMP
    assert os.environ["TMPDIR"] == str(SESSION_TMP)


def test_an_etcd_of_ours_is_found_while_it_runs_and_its_run_dir_too():
    with EtcdServer() as server:
        pid, run_dir = server.pid, server.run_dir
        assert pid in our_etcd_processes()
        assert run_dir in our_run_dirs()
        processes, dirs = leftovers(grace=0)
        assert pid in processes and run_dir in dirs
    assert pid not in our_etcd_processes()
    assert run_dir not in our_run_dirs()


def test_an_orphaned_etcd_of_ours_is_still_found_by_its_data_dir():
    data_dir = Path(tempfile.mkdtemp(prefix="orphan-", dir=SESSION_TMP))
    pid = start_detached_etcd(data_dir)
    try:
        assert pid in our_etcd_processes(), "an etcd with its data in this run's temp dir was not counted"
        assert pid in leftovers(grace=0)[0]
    finally:
        kill(pid)
        shutil.rmtree(data_dir, ignore_errors=True)
    assert pid not in our_etcd_processes()


def test_an_unrelated_etcd_on_another_port_is_not_ours():
    elsewhere = Path(tempfile.mkdtemp(prefix="rdzv-unrelated-", dir=ORIGINAL_TMP))  # not this run's temp dir
    pid = start_detached_etcd(elsewhere)
    try:
        assert pid not in our_etcd_processes()
        assert pid not in leftovers(grace=0)[0]
        with EtcdServer() as ours:  # while it runs, ours are still told apart
            assert set(our_etcd_processes()) >= {ours.pid} and pid not in our_etcd_processes()
    finally:
        kill(pid)
        shutil.rmtree(elsewhere, ignore_errors=True)


def test_an_etcd_of_a_child_process_is_ours_wherever_its_data_is(tmp_path):
    """A descendant is ours even with its data outside the temp dir (here in pytest's tmp_path
    given to a child, which must be passed as a root to be found once orphaned)."""
    child = subprocess.Popen(
        [sys.executable, "-c", "import sys, rdzv.server; s = rdzv.server.EtcdServer(data_dir=sys.argv[1]); s.start(); "
                         "print(s.pid, flush=True); sys.stdin.read()", str(tmp_path)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)},
    )
    try:
        pid = int(child.stdout.readline())
        assert pid in our_etcd_processes()
    finally:
        child.stdin.close()
        child.wait(timeout=30)
    wait_for(lambda: pid not in our_etcd_processes([SESSION_TMP, tmp_path]), "the child's etcd to stop")

"""Every notebook in notebooks/ runs top to bottom in a fresh kernel and leaves no process behind;
the Lab behind them cleans up on close(), on a new start(), and when its process is killed."""

from __future__ import annotations

import json
import os
import sys
import threading
import time
import uuid
from pathlib import Path

import nbformat
import pytest
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import KernelManager
from nbclient import NotebookClient

import rdzv.notebook
from rdzv.etcd_process import pid_alive

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
KERNEL_NAME = "rdzv-tests"
CELL_TIMEOUT = 180


def test_the_notebooks_are_there_and_committed_without_outputs():
    assert [path.name for path in NOTEBOOKS] == [
        "01_quickstart.ipynb",
        "02_teaching_elastic_rendezvous.ipynb",
        "03_store_and_backend_api.ipynb",
        "04_torchrun_elastic_job.ipynb",
    ]
    for path in NOTEBOOKS:
        nb = nbformat.read(path, as_version=4)
        nbformat.validate(nb)
        for cell in nb.cells:
            if cell.cell_type == "code":
                assert cell.outputs == [] and cell.execution_count is None, f"{path.name} has outputs"
        assert "lab.close()" in nb.cells[-1].source, f"{path.name} must end by closing what it started"


@pytest.mark.timeout(90)
def test_a_lab_shows_the_decoded_state_and_cleans_up_after_itself():
    before = set(threading.enumerate())
    lab = rdzv.notebook.start(nodes=2, min_nodes=2, max_nodes=3, last_call_timeout=1)
    snapshot = lab.wait_for_state(lambda s: s.complete and len(s.participants) == 2)
    table = lab.state_table(snapshot)
    assert list(table["node"]) == ["node-1", "node-2"]
    assert list(table["rank"]) == [0, 1] and set(table["membership"]) == {"participant"}
    assert table.attrs["summary"] == f"round {snapshot.round}, complete"
    etcd_pid = lab.server.pid
    replacement = rdzv.notebook.start(cluster=False)  # starting a new lab closes the previous one
    assert repr(lab) == "Lab(closed)" and lab.cluster.closed
    assert not pid_alive(etcd_pid)
    assert replacement.state() is None
    replacement.close()
    replacement.close()
    time.sleep(0.2)
    assert [t.name for t in set(threading.enumerate()) - before if t.name != "rdzv-etcd-spawner"] == []
    with pytest.raises(RuntimeError, match="closed"):
        lab.kv("v2")


KILLED_KERNEL = """
import sys, rdzv.notebook
lab = rdzv.notebook.start(nodes=1)
job = lab.torchrun("killed-kernel", steps=1000)
agent = job.start_agent()
print(lab.server.pid, agent.pid, job.workdir, flush=True)
sys.stdin.read()
"""


@pytest.mark.timeout(90)
def test_what_a_lab_started_dies_with_a_killed_kernel():
    import subprocess

    from conftest import subprocess_env

    from rdzv.demo.torchrun import sweep_stale_workdirs

    kernel = subprocess.Popen([sys.executable, "-c", KILLED_KERNEL], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              text=True, env=subprocess_env())
    try:
        etcd_pid, agent_pid, workdir = kernel.stdout.readline().split()
        pids = [int(etcd_pid), int(agent_pid)]
        assert all(pid_alive(pid) for pid in pids)
    finally:
        kernel.kill()
        kernel.wait()
    deadline = time.monotonic() + 15
    while any(pid_alive(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert [pid for pid in pids if pid_alive(pid)] == [], "etcd or a torchrun agent outlived the killed kernel"
    assert Path(workdir).is_dir()  # nobody could close the job: the next one sweeps its directory
    assert Path(workdir) in sweep_stale_workdirs()
    assert not Path(workdir).exists()


@pytest.fixture
def kernel_manager(tmp_path) -> KernelManager:
    """A kernel on this very interpreter, whatever kernelspecs the machine has installed."""
    spec_dir = tmp_path / "kernels" / KERNEL_NAME
    spec_dir.mkdir(parents=True)
    (spec_dir / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "rdzv tests",
        "language": "python",
    }))
    specs = KernelSpecManager(kernel_dirs=[str(tmp_path / "kernels")])
    return KernelManager(kernel_name=KERNEL_NAME, kernel_spec_manager=specs)


def _processes_marked(marker: str) -> list[str]:
    """Living processes (not zombies) whose environment carries ``marker``: what the kernel started."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if marker.encode() not in (entry / "environ").read_bytes():
                continue
            stat = (entry / "stat").read_text()
            if stat[stat.rindex(")") + 2] == "Z":
                continue
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            found.append(f"{entry.name} {command[:120]}")
        except OSError:
            continue
    return found


@pytest.mark.notebook
@pytest.mark.timeout(420)
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda path: path.stem)
def test_notebook_runs_top_to_bottom(path, kernel_manager, monkeypatch, capsys):
    marker = f"RDZV_NOTEBOOK_TEST={uuid.uuid4().hex}"
    name, value = marker.split("=")
    monkeypatch.setenv(name, value)  # inherited by the kernel and everything it starts
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(
        nb, km=kernel_manager, timeout=CELL_TIMEOUT, allow_errors=False,
        resources={"metadata": {"path": str(path.parent)}},
    )
    started = time.monotonic()
    try:
        client.execute()
    finally:
        elapsed = time.monotonic() - started
        if kernel_manager.has_kernel:  # given a kernel manager, nbclient leaves the kernel running
            kernel_manager.shutdown_kernel(now=False)
    with capsys.disabled():
        print(f"\n{path.name}: executed in {elapsed:.1f} s")
    deadline = time.monotonic() + 10
    while (survivors := _processes_marked(marker)) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert survivors == [], f"{path.name} left processes behind"

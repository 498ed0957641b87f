"""Every notebook in notebooks/ runs top to bottom in a fresh kernel and leaves no process behind;
the Lab behind them cleans up on close(), on a new start(), and when its process is killed."""

from __future__ import annotations

import json
import os
import re
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
        "05_record_and_replay.ipynb",
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
    assert list(table["rank"]) == [0, 1] and set(table["list"]) == {"participant"}
    assert table.attrs["summary"] == f"round {snapshot.round}, complete"
    etcd_pid = lab.server.pid
    replacement = rdzv.notebook.start(cluster=False)  # starting a new lab closes the previous one
    assert repr(lab) == "Lab(closed)" and lab.cluster.closed
    assert not pid_alive(etcd_pid)
    assert replacement.state() is None
    replacement.close()
    replacement.close()

    def new_threads() -> list[str]:
        return [t.name for t in set(threading.enumerate()) - before if t.name != "rdzv-etcd-spawner"]

    deadline = time.monotonic() + 10  # close() has told them to end; they may be finishing a request
    while new_threads() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert new_threads() == []
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


# What each notebook must have shown (the notebooks assert their own steps too): regular
# expressions searched in the text of its outputs (printed text, text/plain and text/markdown).
KEY_OUTPUTS = {
    "01_quickstart": [
        r"round \d+: complete, 3 participants with ranks \[0, 1, 2\]",
    ],
    "02_teaching_elastic_rendezvous": [
        r"\*\*One participant, waiting for min_nodes\*\*: round 0, not complete, 1 participant, 0 waiting",
        r"\*\*Two participants, last call running\*\*: round 0, not complete, 2 participants, 0 waiting, "
        r"the last call ends in",
        r"\*\*Round complete: ranks assigned\*\*: round 0, complete, 2 participants with ranks \[0, 1\]",
        r"\*\*node-3 on the wait list\*\*: round \d+, .*, [123] waiting",
        r"\*\*Round 1: three participants\*\*: round \d+, complete, 3 participants with ranks \[0, 1, 2\], 0 waiting",
        r"\*\*node-3 silent for over 3 s, still listed\*\*: round \d+, complete, 3 participants",
        r"\*\*The next round, without node-3\*\*: round \d+, complete, 2 participants with ranks \[0, 1\]",
        r"\*\*Closed\*\*: round \d+, .*closed",
        r"\[forming\] 1 of 2 nodes has joined round 0; 1 more is needed",
        r"\[last-call\] 2 nodes have joined round 0",
        r"\[stale-heartbeat\] Node node-3_\d+_\d+ has sent no keep-alive",
        r"\[closed\] ",
        r"node-3 was removed at revision \d+",
    ],
    "03_store_and_backend_api": [
        r"A, with the token it read: True",
        r"B, with the same \(now stale\) token: False",
        r"v3 sees: None",
        r"we add to torch's counter: 6",
        r"Error - .*never-set",
        r"torch's backend: rank [01] of 2",
        r"12 writers, every update kept; lost compare-and-swaps: (?P<with>\d+) with turns, (?P<without>\d+) without",
        r"closed: True",
    ],
    "05_record_and_replay": [
        r"node-\d was removed by the survivor's write",
        r"\d+ revisions recorded to .*incident\.rdzv",
        r"Replaying .*incident\.rdzv: \d+ recorded revisions of etcd at",
        r"node-\d left at revision \d+",
        r"before: \['node-1', 'node-2'\]\nafter:  \['node-1'\]",
    ],
    "04_torchrun_elastic_job": [
        r"ProgressRecord\(event='step', agent=0, rank=0, world_size=1, .*restart_count=[1-9]",
        r"agent 0 carries on in a world of 2 with restart count [1-9]\d*, unchanged",
        r"closed: True",
    ],
}


DASHBOARD_MIME = "application/vnd.holoviews_exec.v0+json"
"""What an inline Panel dashboard displays as."""
SHOW_A_DASHBOARD = {"01_quickstart", "02_teaching_elastic_rendezvous", "04_torchrun_elastic_job",
                    "05_record_and_replay"}


def output_mimes(nb) -> set[str]:
    return {mime for cell in nb.cells for output in cell.get("outputs", []) for mime in output.get("data", {})}


def output_text(nb) -> str:
    """Everything the executed notebook showed as text. A stream's consecutive outputs are one
    text, as Jupyter shows them: a busy kernel may send one ``print`` in several messages."""
    parts = []
    for cell in nb.cells:
        stream = None
        for output in cell.get("outputs", []):
            if output.get("output_type") == "stream":
                if stream == output.get("name"):
                    parts[-1] += output.get("text", "")
                else:
                    parts.append(output.get("text", ""))
                stream = output.get("name")
                continue
            stream = None
            for mime in ("text/plain", "text/markdown"):
                value = output.get("data", {}).get(mime)
                if value:
                    parts.append(value if isinstance(value, str) else "".join(value))
    return "\n".join(parts)


def test_every_notebook_has_key_outputs_to_check():
    assert sorted(KEY_OUTPUTS) == [path.stem for path in NOTEBOOKS]


@pytest.mark.notebook
@pytest.mark.timeout(420)
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda path: path.stem)
def test_notebook_runs_top_to_bottom(path, kernel_manager, monkeypatch, capsys, tmp_path):
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

    text = output_text(nb)
    executed = tmp_path / path.name
    nbformat.write(nb, executed)  # to read after a failure
    for pattern in KEY_OUTPUTS[path.stem]:
        found = re.search(pattern, text)
        assert found, f"{path.name} never showed /{pattern}/ (the executed notebook: {executed})"
        if "with" in found.groupdict():
            assert int(found["with"]) < int(found["without"]), found.group(0)
    if path.stem in SHOW_A_DASHBOARD:
        assert DASHBOARD_MIME in output_mimes(nb), f"{path.name} displayed no dashboard"

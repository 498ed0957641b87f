"""Real jobs: torchrun agents on the rdzv plugins, and gloo process groups on EtcdStore."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import subprocess_env

SCRIPTS = Path(__file__).parent / "scripts"


def run_all(commands: list[list[str]], timeout: float, **env: str) -> list[subprocess.CompletedProcess]:
    procs = [
        subprocess.Popen(cmd, env={**subprocess_env(), **env}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for cmd in commands
    ]
    results = []
    try:
        for proc in procs:
            out, _ = proc.communicate(timeout=timeout)
            results.append(subprocess.CompletedProcess(proc.args, proc.returncode, out))
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    return results


@pytest.mark.timeout(240)
@pytest.mark.parametrize("plugin", ["rdzv-etcd-v2", "rdzv-etcd-v3"])
def test_two_agent_torchrun_job_on_the_plugin(etcd_server, unique, tmp_path, plugin):
    agent = [
        sys.executable, "-m", "torch.distributed.run",
        "--nnodes=2", "--nproc-per-node=1", "--max-restarts=0", "--monitor-interval=0.5",
        f"--rdzv-backend={plugin}", f"--rdzv-endpoint={etcd_server.get_endpoint()}", f"--rdzv-id={unique}",
        "--rdzv-conf=last_call_timeout=1,read_timeout=10", "--local-addr=127.0.0.1",
        str(SCRIPTS / "allreduce_worker.py"),
    ]
    for result in run_all([agent, agent], timeout=200, RESULT_DIR=str(tmp_path)):
        assert result.returncode == 0, result.stdout[-3000:]
    seen = [json.loads((tmp_path / f"{rank}.json").read_text()) for rank in (0, 1)]
    assert [s["sum"] for s in seen] == [3.0, 3.0]
    assert {s["world_size"] for s in seen} == {2}
    api = plugin.rsplit("-", 1)[1]
    state = etcd_server.kv(api).get(f"/torch/elastic/rendezvous/{unique}")
    assert state is not None, f"the job left no state in the {api} keyspace"


@pytest.mark.timeout(180)
@pytest.mark.parametrize("api", ["v2", "v3"])
def test_gloo_process_group_over_etcd_store(etcd_server, unique, tmp_path, api):
    commands = [
        [sys.executable, str(SCRIPTS / "store_worker.py"), etcd_server.get_endpoint(), f"/{unique}/pg",
         str(rank), api, str(tmp_path / f"{rank}.json")]
        for rank in (0, 1)
    ]
    for result in run_all(commands, timeout=150):
        assert result.returncode == 0, result.stdout[-3000:]
    outs = [json.loads((tmp_path / f"{rank}.json").read_text()) for rank in (0, 1)]
    assert [o["sum"] for o in outs] == [30.0, 30.0]
    assert outs[0]["gathered"] == [{"rank": 0}, {"rank": 1}]

"""The whole path on an etcd that serves only the v3 API, as etcd 3.6 does (etcd 3.5 started
without ``--enable-v2``): EtcdStore, the backend, real torch rendezvous handlers, the demo
cluster, the ``rdzv-etcd-v3`` plugin under a real 2-agent ``torchrun`` job, and ``rdzv status``."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import threading
import time
from datetime import timedelta

import pytest
import torch.distributed as dist
import urllib3
from conftest import subprocess_env
from rendezvous_helpers import params, rdzv_handler, rendezvous_all
from test_torch_jobs import SCRIPTS, run_all

from rdzv.backend import DEFAULT_TTL, RENDEZVOUS_PREFIX, STORE_PREFIX, EtcdRendezvousBackend, create_backend
from rdzv.demo import DemoCluster
from rdzv.kv import KVError
from rdzv.server import EtcdServer
from rdzv.state import decode_state_b64
from rdzv.store import EtcdStore

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def v3_server():
    """etcd with the v2 API off: nothing below may fall back to v2."""
    with EtcdServer(enable_v2=False) as server:
        yield server


@pytest.fixture
def v3_kv(v3_server):
    with v3_server.kv("v3") as kv:
        yield kv


@pytest.fixture(autouse=True)
def _use_the_rendezvous_store(monkeypatch):
    # Handlers bootstrap through the rendezvous store (our EtcdStore on v3), not a side TCPStore.
    monkeypatch.setenv("TORCH_DISABLE_SHARE_RDZV_TCP_STORE", "1")


def v3_request(endpoint: str, path: str, body: dict) -> dict:
    response = urllib3.request("POST", f"http://{endpoint}{path}", body=json.dumps(body).encode(), timeout=10)
    assert response.status == 200, response.data
    return json.loads(response.data)


def rdzv_command(*argv: str) -> subprocess.CompletedProcess:
    """``python -m rdzv ...`` in a child process, as a user would run it."""
    return subprocess.run([sys.executable, "-m", "rdzv", *argv], capture_output=True, text=True, timeout=60,
                          env=subprocess_env())


def shut_down(handlers) -> None:
    for handler in handlers:
        handler.shutdown()


def test_the_server_really_has_no_v2_api(v3_server):
    endpoint = v3_server.get_endpoint()
    assert urllib3.request("GET", f"http://{endpoint}/v2/keys/", timeout=10).status == 404
    with v3_server.kv("v2") as v2, pytest.raises(KVError):
        v2.get("/anything")


def test_etcd_store_on_v3_only(v3_kv, unique):
    store = EtcdStore(v3_kv, f"/{unique}/store", timeout=timedelta(seconds=10))
    store.set("text", "héllo")
    assert store.get("text") == "héllo".encode()
    assert store.add("n", 5) == 5 and store.add("n", -2) == 3
    assert store.compare_set("cas", "", "first") == b"first"
    assert store.compare_set("cas", "first", "second") == b"second"
    threading.Timer(0.2, store.set, args=("late", "here")).start()
    store.wait(["late"])
    assert store.multi_get(["text", "late"]) == ["héllo".encode(), b"here"]
    assert sorted(store.list_keys()) == ["cas", "late", "n", "text"] and store.num_keys() == 4
    assert store.delete_key("late") is True and store.num_keys() == 3
    wrapped = dist.PrefixStore("torch.rendezvous.run.0", store)  # what torch hands its workers
    wrapped.set("MASTER_ADDR", b"host")
    assert wrapped.get("MASTER_ADDR") == b"host" and wrapped.add("count", 2) == 2
    store.set_timeout(timedelta(milliseconds=200))
    with pytest.raises(LookupError, match="'never'"):
        store.get("never")


def test_backend_on_v3_only(v3_server, v3_kv, unique):
    backend, store = create_backend(params(v3_server.get_endpoint(), unique), api="v3")
    assert backend.name == "rdzv-etcd-v3" and backend.kv.api == "v3"
    assert isinstance(store, EtcdStore) and store.prefix == STORE_PREFIX + "/"
    assert backend.get_state() is None
    _, token, written = backend.set_state(b"first")
    assert written and backend.get_state() == (b"first", token)
    assert backend.set_state(b"stale", token - 1 if isinstance(token, int) else "0") == (b"first", token, False)
    state, new_token, written = backend.set_state(b"second", token)
    assert (state, written) == (b"second", True) and new_token != token
    # the state lives DEFAULT_TTL (2 h) after its last write, as a lease
    key = base64.b64encode(f"{RENDEZVOUS_PREFIX}/{unique}".encode()).decode()
    lease = v3_request(v3_server.get_endpoint(), "/v3/kv/range", {"key": key})["kvs"][0]["lease"]
    assert int(v3_request(v3_server.get_endpoint(), "/v3/lease/timetolive", {"ID": lease})["TTL"]) >= DEFAULT_TTL
    # the same through the etcd_api parameter, and a backend built on a KV client
    via_param, _ = create_backend(params(v3_server.get_endpoint(), unique, etcd_api="v3"))
    assert via_param.get_state() == (b"second", new_token)
    assert EtcdRendezvousBackend(v3_kv, unique, key_prefix=RENDEZVOUS_PREFIX).get_state() == (b"second", new_token)


def test_real_handlers_rendezvous_and_rdzv_status_shows_the_run(v3_server, unique):
    endpoint = v3_server.get_endpoint()
    p = params(endpoint, unique, min_nodes=3, max_nodes=4)
    handlers = [rdzv_handler(p, "v3") for _ in range(3)]
    try:
        infos = rendezvous_all(handlers)
        assert sorted(info.rank for info in infos) == [0, 1, 2]
        assert {info.world_size for info in infos} == {3}
        infos[0].store.set("hello", b"world")
        assert infos[2].store.get("hello") == b"world"

        listing = rdzv_command("status", "--endpoint", endpoint, "--json")
        assert listing.returncode == 0, listing.stderr
        runs = {run["run_id"]: run for run in json.loads(listing.stdout)["runs"]}
        assert runs[unique]["api"] == "v3" and runs[unique]["state"] == "complete"

        table = rdzv_command("status", "--endpoint", endpoint)
        assert table.returncode == 0, table.stderr
        assert any(line.split()[:3] == [unique, "v3", "complete"] for line in table.stdout.splitlines()), table.stdout

        detail = rdzv_command("status", "--endpoint", endpoint, "--run-id", unique, "--json")
        assert detail.returncode == 0, detail.stderr
        data = json.loads(detail.stdout)
        assert data["api"] == "v3" and data["state"] == "complete"
        assert sorted(node["rank"] for node in data["snapshot"]["participants"]) == [0, 1, 2]
        assert {node["pid"] for node in data["snapshot"]["participants"]} == {os.getpid()}
    finally:
        shut_down(handlers)


def test_a_late_joiner_is_let_in_by_the_next_round(v3_server, unique):
    p = params(v3_server.get_endpoint(), unique, min_nodes=2, max_nodes=3)
    handlers = [rdzv_handler(p, "v3") for _ in range(2)]
    late = rdzv_handler(p, "v3")
    try:
        assert sorted(info.rank for info in rendezvous_all(handlers)) == [0, 1]
        with v3_server.kv("v3") as kv:
            key = f"{RENDEZVOUS_PREFIX}/{unique}"
            outcome: list[object] = []
            joiner = threading.Thread(target=lambda: outcome.append(late.next_rendezvous()), daemon=True)
            joiner.start()
            revision = kv.get(key).revision
            while not (snapshot := decode_state_b64(kv.get(key).value)).wait_list:  # waits on etcd, not a clock
                kv.watch(key, revision + 1, timeout=30)
                revision = kv.get(key).revision
            assert len(snapshot.wait_list) == 1 and snapshot.round == 0
            # what a torchrun agent polls to decide to re-rendezvous (its view is cached up to 1 s)
            deadline = time.monotonic() + 30
            while not all(handler.num_nodes_waiting() == 1 for handler in handlers):
                assert time.monotonic() < deadline, "the participants never saw the waiting node"
                time.sleep(0.1)
            infos = rendezvous_all(handlers)
            joiner.join(90)
            assert not joiner.is_alive() and len(outcome) == 1, "the late joiner never got its rank"
            infos.append(outcome[0])
            assert sorted(info.rank for info in infos) == [0, 1, 2]
            assert {info.world_size for info in infos} == {3}
            final = decode_state_b64(kv.get(key).value)
            assert final.round == 1 and final.complete and sorted(final.participants.values()) == [0, 1, 2]
    finally:
        shut_down([*handlers, late])


def test_the_demo_cluster_on_v3_only(v3_server, unique):
    with DemoCluster(v3_server.get_endpoint(), unique, backend="rdzv-etcd-v3", min_nodes=2, max_nodes=3,
                     last_call_timeout=1) as cluster:
        assert cluster.api == "v3"
        cluster.add_node()
        cluster.add_node()
        assert cluster.wait_until(lambda c: len(c.running()) == 2, 60), cluster.views()
        ranks = sorted(view.rank for view in cluster.running())
        assert ranks == [0, 1]
        with v3_server.kv("v3") as kv:
            assert decode_state_b64(kv.get(f"{RENDEZVOUS_PREFIX}/{unique}").value).complete


@pytest.mark.timeout(240)
def test_two_agent_torchrun_job_on_the_v3_plugin(v3_server, unique, tmp_path):
    endpoint = v3_server.get_endpoint()
    agent = [
        sys.executable, "-m", "torch.distributed.run",
        "--nnodes=2", "--nproc-per-node=1", "--max-restarts=0", "--monitor-interval=0.5",
        "--rdzv-backend=rdzv-etcd-v3", f"--rdzv-endpoint={endpoint}", f"--rdzv-id={unique}",
        "--rdzv-conf=last_call_timeout=1,read_timeout=10", "--local-addr=127.0.0.1",
        str(SCRIPTS / "allreduce_worker.py"),
    ]
    for result in run_all([agent, agent], timeout=200, RESULT_DIR=str(tmp_path)):
        assert result.returncode == 0, result.stdout[-3000:]
    seen = [json.loads((tmp_path / f"{rank}.json").read_text()) for rank in (0, 1)]
    assert [s["rank"] for s in seen] == [0, 1] and [s["sum"] for s in seen] == [3.0, 3.0]
    assert {s["world_size"] for s in seen} == {2}
    with v3_server.kv("v3") as kv:
        state = kv.get(f"{RENDEZVOUS_PREFIX}/{unique}")
    assert state is not None, "the job left no state in the v3 keyspace"
    snapshot = decode_state_b64(state.value)
    assert snapshot.closed and snapshot.round == 0, snapshot  # the agents closed the run when done

    status = rdzv_command("status", "--endpoint", endpoint, "--run-id", unique, "--json")
    assert status.returncode == 0, status.stderr
    data = json.loads(status.stdout)
    assert data["api"] == "v3" and data["state"] == "closed"

"""rdzv.demo on a real etcd: simulated nodes (real torch handlers in threads) and real torchrun agents."""

from __future__ import annotations

import threading
import time

import pytest

from rdzv.demo import DemoCluster, TorchrunCluster, autopilot
from rdzv.etcd_process import pid_alive
from rdzv.state import decode_state_b64

FINAL = {"left", "crashed", "closed", "error"}


@pytest.fixture(autouse=True)
def _no_thread_tracebacks(no_thread_tracebacks):
    """Every test here fails if a thread ended with an unhandled exception."""


@pytest.fixture
def make_cluster(etcd_server, unique):
    clusters: list[DemoCluster] = []

    def make(**settings) -> DemoCluster:
        settings.setdefault("min_nodes", 2)
        settings.setdefault("max_nodes", 3)
        settings.setdefault("last_call_timeout", 1)
        cluster = DemoCluster(etcd_server.get_endpoint(), f"{unique}-{len(clusters)}", **settings)
        clusters.append(cluster)
        return cluster

    yield make
    for cluster in clusters:
        cluster.close()


def state_of(etcd_server, cluster: DemoCluster):
    current = etcd_server.kv(cluster.api).get(f"/torch/elastic/rendezvous/{cluster.run_id}")
    assert current is not None, "the run has no state in etcd"
    return decode_state_b64(current.value)


def running(cluster: DemoCluster, count: int, *, after_round: int = -1):
    """A predicate: exactly ``count`` nodes run, all in the same round, later than ``after_round``."""

    def check(c: DemoCluster) -> bool:
        views = c.running()
        return (
            len(views) == count
            and len({v.round for v in views}) == 1
            and views[0].round > after_round
            and all(v.world_size == count for v in views)
        )

    return check


@pytest.mark.timeout(60)
@pytest.mark.parametrize("backend", ["rdzv-etcd-v2", "rdzv-etcd-v3", "etcd-v2"])
def test_cluster_forms_with_min_nodes_and_ranks(etcd_server, make_cluster, backend):
    cluster = make_cluster(backend=backend)
    first, second = cluster.add_node(), cluster.add_node()
    assert cluster.wait_until(running(cluster, 2), 30), cluster.views()
    assert sorted(v.rank for v in cluster.running()) == [0, 1]
    state = state_of(etcd_server, cluster)
    assert state.complete and not state.closed
    assert {str(node) for node in state.participants} == {first.node_id, second.node_id}
    assert sorted(state.participants.values()) == [0, 1]
    assert {node.addr for node in state.participants} == {"node-1", "node-2"}


@pytest.mark.timeout(60)
def test_late_joiner_waits_then_joins_the_next_round(etcd_server, make_cluster):
    cluster = make_cluster()
    cluster.scale_to(2)
    assert cluster.wait_until(running(cluster, 2), 30)
    first_round = cluster.running()[0].round
    late = cluster.add_node()
    assert cluster.wait_until(lambda c: c.view(late).status == "waiting", 15), cluster.view(late)
    assert cluster.view(late).round == first_round + 1
    assert cluster.wait_until(running(cluster, 3, after_round=first_round), 30), cluster.views()
    assert cluster.view(late).rank is not None


@pytest.mark.timeout(60)
def test_graceful_leave_re_rendezvous_with_fewer_nodes(etcd_server, make_cluster):
    cluster = make_cluster()
    cluster.scale_to(3)
    assert cluster.wait_until(running(cluster, 3), 30)
    round_of_three = cluster.running()[0].round
    leaver = cluster.nodes[0]
    cluster.leave(leaver)
    assert cluster.view(leaver).status == "left"
    assert leaver.node_id not in {str(node) for node in state_of(etcd_server, cluster).nodes}
    assert cluster.wait_until(running(cluster, 2, after_round=round_of_three), 30), cluster.views()
    assert leaver not in cluster.nodes


@pytest.mark.timeout(240)
def test_crash_is_found_by_the_heartbeat_timeout(etcd_server, make_cluster):
    # Dead after 4 s of silence: long enough that a loaded machine's stalls do not kill live nodes.
    cluster = make_cluster(keep_alive_interval=1, keep_alive_max_attempt=4)
    cluster.scale_to(3)
    assert cluster.wait_until(running(cluster, 3), 60)
    round_of_three = cluster.running()[0].round
    victim = cluster.nodes[-1]
    cluster.crash(victim)
    assert cluster.view(victim).status == "crashed"
    # Nothing removed it: it is still a participant until its heartbeat goes stale.
    assert victim.node_id in {str(node) for node in state_of(etcd_server, cluster).participants}
    assert cluster.wait_until(running(cluster, 2, after_round=round_of_three), 90), cluster.views()
    assert victim.node_id not in {str(node) for node in state_of(etcd_server, cluster).nodes}


@pytest.mark.timeout(60)
def test_leave_while_waiting_takes_the_node_off_the_lists(etcd_server, make_cluster):
    cluster = make_cluster(max_nodes=2)
    cluster.scale_to(3)
    assert cluster.wait_until(lambda c: len(c.running()) == 2 and any(v.status == "waiting" for v in c.views()), 30)
    spare = next(node for node in cluster.nodes if node.view.status == "waiting")
    cluster.leave(spare)
    assert cluster.view(spare).status == "left"
    state = state_of(etcd_server, cluster)
    assert spare.node_id not in {str(node) for node in state.nodes}
    assert len(state.participants) == 2


@pytest.mark.timeout(90)
def test_scale_to_adds_and_removes_nodes(etcd_server, make_cluster):
    cluster = make_cluster(max_nodes=4)
    cluster.scale_to(3)
    assert len(cluster.nodes) == 3
    assert cluster.wait_until(running(cluster, 3), 30), cluster.views()
    cluster.scale_to(2)
    assert len(cluster.nodes) == 2
    assert cluster.wait_until(running(cluster, 2), 30), cluster.views()
    with pytest.raises(ValueError, match="nodes >= 0"):
        cluster.scale_to(-1)


@pytest.mark.timeout(60)
def test_close_stops_every_thread_and_closes_the_run(etcd_server, unique):
    before = set(threading.enumerate())
    cluster = DemoCluster(etcd_server.get_endpoint(), unique, min_nodes=2, max_nodes=3, last_call_timeout=1)
    cluster.scale_to(3)
    assert cluster.wait_until(running(cluster, 3), 30)
    crashed = cluster.nodes[0]
    cluster.crash(crashed)
    cluster.add_node()
    cluster.close()
    cluster.close()  # idempotent
    leftovers = [t.name for t in set(threading.enumerate()) - before if t.is_alive()]
    assert leftovers == []
    assert {v.status for v in cluster.views(include_finished=True)} <= FINAL
    assert cluster.nodes == []
    assert state_of(etcd_server, cluster).closed
    with pytest.raises(RuntimeError, match="closed"):
        cluster.add_node()
    with pytest.raises(ValueError, match="already closed"):
        DemoCluster(etcd_server.get_endpoint(), unique)


@pytest.mark.timeout(60)
def test_a_join_that_times_out_ends_in_status_error(make_cluster):
    cluster = make_cluster(min_nodes=2, join_timeout=1)
    lonely = cluster.add_node()
    assert cluster.wait_until(lambda c: c.view(lonely).status == "error", 20), cluster.view(lonely)
    assert "did not complete within join_timeout=1 s" in cluster.view(lonely).error
    assert not lonely.thread_alive


def test_bad_settings_are_refused_in_one_sentence(etcd_server, unique):
    endpoint = etcd_server.get_endpoint()
    with pytest.raises(ValueError, match="Unknown demo backend 'zk'"):
        DemoCluster(endpoint, unique, backend="zk")
    with pytest.raises(ValueError, match=r"max_nodes \(1\) must be at least min_nodes \(2\)"):
        DemoCluster(endpoint, unique, min_nodes=2, max_nodes=1)
    with pytest.raises(ValueError, match="keep_alive_interval must be a positive"):
        DemoCluster(endpoint, unique, keep_alive_interval=0)
    with pytest.raises(ConnectionError, match="did not answer"):
        DemoCluster("127.0.0.1:9", unique)
    with pytest.raises(ValueError, match="nnodes must be"):
        TorchrunCluster(endpoint, unique, nnodes="two")


@pytest.mark.timeout(60)
def test_autopilot_keeps_the_cluster_changing_within_bounds(make_cluster):
    cluster = make_cluster(min_nodes=1, max_nodes=3)
    cluster.add_node()
    stop = threading.Event()
    pilot = autopilot(cluster, stop, period=0.4, seed=3)
    sizes = []
    deadline = time.monotonic() + 45  # a safety net: it takes a few seconds
    try:
        while not (len(cluster.all_nodes) > 3 and any(node.finished for node in cluster.all_nodes)):
            assert time.monotonic() < deadline, (
                f"in 45 s the autopilot added {len(cluster.all_nodes) - 1} nodes and removed "
                f"{sum(node.finished for node in cluster.all_nodes)}")
            sizes.append(len(cluster.nodes))
            time.sleep(0.1)
    finally:
        stop.set()
        pilot.join(30)
    assert not pilot.is_alive()
    sizes.append(len(cluster.nodes))
    assert max(sizes) <= 3


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_torchrun_job_survives_a_killed_agent_resumes_and_scales_up(etcd_server, unique):
    with TorchrunCluster(etcd_server.get_endpoint(), unique, nnodes="1:2", steps=400, step_time=0.2) as job:
        job.start_agent()
        job.start_agent()
        before = job.wait_for_progress(lambda r: r.world_size == 2 and r.event == "step", step=3, timeout=90)
        worker_pids = {r.pid for r in job.progress()}
        job.kill_agent(1)
        assert job.agent(1).status == "killed"
        after = job.wait_for_progress(
            lambda r: r.event == "step" and r.world_size == 1 and r.restart_count >= 1, agent=0, timeout=90
        )
        restart = next(r for r in job.progress(0) if r.event == "start" and r.restart_count >= 1)
        assert restart.resumed_from >= before.step - 1 > 0, "the survivor did not resume from the checkpoint"
        assert after.step > restart.resumed_from
        assert job.agent(0).status == "running"
        job.start_agent()  # scaling back up: a new agent joins a later round
        joined = job.wait_for_progress(lambda r: r.event == "step" and r.world_size == 2, agent=2, timeout=90)
        assert joined.step > after.step
        worker_pids |= {r.pid for r in job.progress()}
        workdir, pids = job.workdir, [a.pid for a in job.agents] + sorted(worker_pids)
    assert not workdir.exists()
    deadline = time.monotonic() + 15  # close() has killed them; a zombie's parent may still be reaping it
    while any(pid_alive(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert [pid for pid in pids if pid_alive(pid)] == [], "an agent or worker survived close()"

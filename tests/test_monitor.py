"""rdzv.monitor against real etcd and real torch DynamicRendezvousHandlers (rdzv's backend on
v2 and v3, and torch's own etcd-v2 backend)."""

from __future__ import annotations

import base64
import csv
import io
import json
import os
import pickle
import socket
import threading
import time
from collections.abc import Callable
from datetime import datetime, timedelta, timezone

import pytest
import urllib3

from rdzv.diff import ChangeKind
from rdzv.monitor import ConnectionStatus, FrameReader, Monitor, Revision, RunView, StoreItem, get_monitor
from rdzv.cluster import EtcdCluster
from rdzv.server import EtcdServer
from rdzv.state import Node, UndecodableStateError, decode_state_b64
from rdzv.store import EtcdStore

pytestmark = pytest.mark.timeout(90)

RUNS = "/torch/elastic/rendezvous"


# -- helpers --------------------------------------------------------------------------


def wait_until(monitor: Monitor, condition: Callable[[], object], timeout: float = 20, what: str = "") -> object:
    """Wait (on the monitor's version) until ``condition()`` is truthy; return its value."""
    deadline = time.monotonic() + timeout
    while True:
        version = monitor.version
        value = condition()
        if value:
            return value
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AssertionError(f"timed out waiting for {what or condition}; connection: {monitor.connection}")
        monitor.wait_for_version(version, min(remaining, 1))


def changes_of(history: list[Revision]) -> list[tuple[str, Node | None]]:
    return [(str(change.kind), change.node) for entry in history for change in entry.changes]


def node_of(handler) -> Node:
    desc = handler._this_node
    return Node(desc.addr, desc.pid, desc.local_id)


def state_b64(participants: dict[str, int], waiting: tuple[str, ...] = (), beat: int = 0, round: int = 1) -> str:
    """base64 of a pickled torch _RendezvousState with these nodes (heartbeats at ``beat`` seconds)."""
    from torch.distributed.elastic.rendezvous.dynamic_rendezvous import _NodeDesc, _RendezvousState

    state = _RendezvousState()
    state.round = round
    state.complete = bool(participants)
    when = datetime(2030, 1, 1, tzinfo=timezone.utc) + timedelta(seconds=beat)
    for addr, rank in participants.items():
        node = _NodeDesc(addr, 100, 0)
        state.participants[node] = rank
        state.last_heartbeats[node] = when
    for addr in waiting:
        node = _NodeDesc(addr, 100, 0)
        state.wait_list.add(node)
        state.last_heartbeats[node] = when
    return base64.b64encode(pickle.dumps(state)).decode()


class Space:
    """A unique prefix on the session's etcd, KV clients on it, and monitors of it."""

    def __init__(self, server, prefix: str, watch: Callable[..., Monitor]) -> None:
        self.server, self.prefix, self._watch = server, prefix, watch
        self._clients: dict[str, object] = {}

    def kv(self, api: str):
        if api not in self._clients:
            self._clients[api] = self.server.kv(api)
        return self._clients[api]

    def monitor(self, api: str | None, **options) -> Monitor:
        return self._watch(self.server.get_endpoint(), self.prefix, api=api, **options)

    def put_state(self, api: str, run_id: str, value: str, **options):
        return self.kv(api).put(f"{self.prefix}/rendezvous/{run_id}", value, **options)

    def close(self) -> None:
        for client in self._clients.values():
            client.close()


@pytest.fixture
def space(etcd_server, unique, watch):
    """A :class:`Space` below ``/<unique>``; its clients are closed and monitors stopped after the test."""
    created = Space(etcd_server, f"/{unique}", watch)
    yield created
    created.close()


@pytest.fixture
def watch(request):
    """``watch(endpoint, prefix, **options)`` -> a shared monitor, stopped after the test."""
    started: list[Monitor] = []

    def make(endpoint: str, prefix: str = "/torch/elastic", **options) -> Monitor:
        monitor = get_monitor(endpoint, prefix, **options)
        started.append(monitor)
        return monitor

    yield make
    for monitor in started:
        monitor.stop()


# -- a real rendezvous, followed from discovery to close ------------------------------------------

BACKENDS = {"rdzv-v2": ("rdzv", "v2"), "rdzv-v3": ("rdzv", "v3"), "torch-etcd-v2": ("torch", "v2")}


@pytest.mark.timeout(120)
@pytest.mark.parametrize("backend", list(BACKENDS))
def test_history_of_a_real_rendezvous_join_wait_heartbeat_crash_leave_close(etcd_server, unique, watch, backend):
    from rendezvous_helpers import params, rdzv_handler, rendezvous_all, torch_handler
    from torch.distributed.elastic.rendezvous.api import RendezvousClosedError
    from torch.distributed.elastic.rendezvous.dynamic_rendezvous import _RendezvousExitOp

    kind, api = BACKENDS[backend]
    endpoint = etcd_server.get_endpoint()
    monitor = watch(endpoint)  # auto: follows v2 and v3
    p = params(endpoint, unique, min_nodes=2, max_nodes=3, keep_alive_interval=1, keep_alive_max_attempt=3)
    make = (lambda: torch_handler(p)) if kind == "torch" else (lambda: rdzv_handler(p, api))
    first, second, late = make(), make(), make()
    late_result: list[BaseException | object] = []
    late_thread = threading.Thread(target=lambda: late_result.append(_outcome(late.next_rendezvous)), daemon=True)
    try:
        infos = rendezvous_all([first, second])

        # discovered, on the right API, complete, with the ranks the handlers got
        run = wait_until(monitor, lambda: (r := monitor.run(unique)) and r.snapshot and r.snapshot.complete and r,
                         what="the completed round")
        assert isinstance(run, RunView) and run.api == api and run.key == f"{RUNS}/{unique}"
        assert monitor.runs()[unique].api == api
        assert dict(run.snapshot.participants) == {node_of(first): infos[0].rank, node_of(second): infos[1].rank}
        assert sorted(info.rank for info in infos) == [0, 1]
        history = monitor.history(unique)
        kinds = changes_of(history)
        assert ("created", None) in kinds
        assert {("joined", node_of(first)), ("joined", node_of(second)), ("completed", None)} <= set(kinds)
        assert [entry.revision for entry in history] == sorted({entry.revision for entry in history})
        assert history[-1].revision == run.revision and all(not entry.resync for entry in history)

        # the store the handlers wrote (rank 0's MASTER_ADDR), decoded
        store = wait_until(monitor, lambda: {i.key: i for i in monitor.store_items()
                                             if i.key == f"torch.rendezvous.{unique}.0/MASTER_ADDR"},
                           what="the store keys")
        assert store[f"torch.rendezvous.{unique}.0/MASTER_ADDR"].value == b"127.0.0.1"

        # heartbeats alone are flagged
        beat = wait_until(monitor, lambda: [e for e in monitor.history(unique) if e.revision > run.revision
                                            and e.heartbeat_only], what="a heartbeat-only revision")[0]
        assert beat.changes and all(change.kind is ChangeKind.HEARTBEAT for change in beat.changes)
        assert dict(beat.snapshot.participants) == dict(run.snapshot.participants)

        # a late joiner waits for the next round
        late_thread.start()
        wait_until(monitor, lambda: node_of(late) in monitor.run(unique).snapshot.wait_list, what="the late joiner")
        assert ("waiting", node_of(late)) in changes_of(monitor.history(unique))

        # a crash: its heartbeats stop, another node's sync drops it after 3 s
        second._stop_heartbeats()
        wait_until(monitor, lambda: node_of(second) not in monitor.run(unique).snapshot.participants,
                   timeout=30, what="the crashed node to be dropped")
        assert ("left", node_of(second)) in changes_of(monitor.history(unique))

        # a graceful leave of the last participant: the round advances, the waiting node joins it
        first._stop_heartbeats()
        first._op_executor.run(_RendezvousExitOp(), time.monotonic() + 30)
        advanced = wait_until(monitor, lambda: (r := monitor.run(unique)).snapshot.round == 1 and r,
                              what="the next round")
        assert not advanced.snapshot.complete
        kinds = changes_of(monitor.history(unique))
        assert ("left", node_of(first)) in kinds and ("round_advanced", None) in kinds
        wait_until(monitor, lambda: node_of(late) in monitor.run(unique).snapshot.participants,
                   what="the waiting node to join round 1")

        # closing ends the late joiner's wait
        assert late.shutdown()
        late_thread.join(30)
        assert late_result and isinstance(late_result[0], RendezvousClosedError)
        closed = wait_until(monitor, lambda: (r := monitor.run(unique)).snapshot.closed and r, what="the close")
        assert ("closed", None) in changes_of(monitor.history(unique))
        assert closed.error is None and not closed.deleted
    finally:
        for handler in (first, second, late):
            handler._stop_heartbeats()
        if late_thread.is_alive():
            late.shutdown()
            late_thread.join(30)


def _outcome(call: Callable[[], object]) -> object:
    try:
        return call()
    except BaseException as exc:  # the test inspects what the call raised
        return exc


# -- discovery on both APIs, and on a v3-only server ---------------------------------------------


def test_auto_api_follows_both_keyspaces_and_keeps_them_apart(space):
    space.put_state("v2", "only-v2", state_b64({"a": 0}))
    space.put_state("v3", "only-v3", state_b64({"b": 0}))
    space.put_state("v2", "both", state_b64({"c": 0}))
    space.put_state("v3", "both", state_b64({"d": 0, "e": 1}))
    monitor = space.monitor(None)
    runs = wait_until(monitor, lambda: len(monitor.runs()) == 3 and monitor.runs(), what="three runs")
    assert monitor.apis == ("v2", "v3")
    assert runs["only-v2"].api == "v2" and runs["only-v3"].api == "v3"
    assert monitor.run("both", api="v2").snapshot.world_size == 1
    assert monitor.run("both", api="v3").snapshot.world_size == 2
    assert monitor.history("both", api="v3")[-1].snapshot.world_size == 2
    assert monitor.run("only-v2", api="v3") is None
    status = monitor.connection
    assert status.state == "connected" and space.server.get_endpoint() in status.message


@pytest.mark.timeout(60)
def test_auto_api_on_a_server_without_v2_follows_v3_alone(unique):
    with EtcdServer(enable_v2=False) as server:
        kv = server.kv("v3")
        kv.put(f"/{unique}/rendezvous/job", state_b64({"a": 0}))
        monitor = get_monitor(server.get_endpoint(), f"/{unique}")
        try:
            wait_until(monitor, lambda: monitor.run("job"), what="the run")
            wait_until(monitor, lambda: monitor.apis == ("v3",), what="v2 to be dropped")
            deadline = time.monotonic() + 5
            while len(monitor.threads) > 1 and time.monotonic() < deadline:
                time.sleep(0.05)  # the v2 watcher ends right after it was dropped
            assert [t.name for t in monitor.threads] == [f"rdzv-monitor v3 {server.get_endpoint()}/{unique}"]
            assert monitor.connection.state == "connected"

            # asked for v2 explicitly, it says why it cannot follow it
            explicit = get_monitor(server.get_endpoint(), f"/{unique}", api="v2")
            try:
                status = wait_until(explicit, lambda: explicit.connection.state == "unreachable"
                                    and explicit.connection, what="the refusal")
                assert status.message.startswith(f"etcd at {server.get_endpoint()} does not serve the v2 API; ")
                assert status.message.endswith(f"(since {status.since:%H:%M:%S} UTC; the monitor keeps retrying).")
            finally:
                explicit.stop()
        finally:
            monitor.stop()
            kv.close()


# -- one watcher per settings ------------------------------------------------------------------


def _watcher_threads(prefix: str) -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("rdzv-monitor") and t.name.endswith(prefix)]


def test_get_monitor_shares_one_started_monitor_and_stop_releases_it(etcd_server, unique):
    endpoint, prefix = etcd_server.get_endpoint(), f"/{unique}"
    monitors = [get_monitor(endpoint, prefix, api="v3") for _ in range(10)]
    try:
        assert all(m is monitors[0] for m in monitors)
        assert get_monitor(f"http://{endpoint}", prefix + "/", api="v3") is monitors[0]  # the same settings
        assert len(_watcher_threads(prefix)) == 1 and monitors[0].apis == ("v3",)
        auto = [get_monitor(endpoint, prefix) for _ in range(10)]
        assert all(m is auto[0] for m in auto) and auto[0] is not monitors[0]
        wait_until(auto[0], lambda: auto[0].apis == ("v2", "v3"), what="both APIs")
        assert len(_watcher_threads(prefix)) == 3
        auto[0].stop()
        assert len(_watcher_threads(prefix)) == 1
        fresh = get_monitor(endpoint, prefix)
        assert fresh is not auto[0] and fresh.running
        fresh.stop()
        fresh.stop()  # idempotent
    finally:
        monitors[0].stop()
    assert _watcher_threads(prefix) == []
    assert monitors[0].requests > 0


def test_a_private_monitor_stops_and_resumes_with_a_relist(space):
    monitor = Monitor(space.server.get_endpoint(), space.prefix, api="v3")
    try:
        assert not monitor.running and monitor.connection.state == "connecting"
        space.put_state("v3", "job", state_b64({"a": 0}))
        monitor.start()
        wait_until(monitor, lambda: monitor.run("job"), what="the run")
        monitor.stop()
        assert not monitor.running and monitor.run("job").snapshot.world_size == 1  # still readable
        space.put_state("v3", "job", state_b64({"a": 0, "b": 1}))
        assert monitor.start() is monitor
        wait_until(monitor, lambda: monitor.run("job").snapshot.world_size == 2, what="the re-list")
        history = monitor.history("job")
        assert [entry.resync for entry in history] == [False, True]
        assert changes_of(history[1:]) == [("joined", Node("b", 100, 0))]

        # a subscriber may stop the monitor from the watcher thread
        monitor.subscribe(lambda version: monitor.stop())
        space.put_state("v3", "job", state_b64({"a": 0, "b": 1}, beat=1))
        deadline = time.monotonic() + 10
        while monitor.threads and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not monitor.running and monitor.threads == ()
    finally:
        monitor.stop()


# -- versions, subscribers, ignored keys, consistency ----------------------------------------------


def test_one_version_per_change_subscribers_and_ignored_keys(space):
    monitor = space.monitor("v3")
    seen: list[int] = []
    wait_until(monitor, lambda: monitor.connection.state == "connected", what="the connection")
    unsubscribe = monitor.subscribe(seen.append)
    version = monitor.version
    space.kv("v3").put(f"{space.prefix}/elsewhere/x", "ignored")  # neither a run nor a store key
    space.put_state("v3", "job", state_b64({"a": 0}))
    wait_until(monitor, lambda: monitor.run("job") and seen, what="the run and its subscriber call")
    assert monitor.version == version + 1 and seen == [version + 1]
    assert list(monitor.runs()) == ["job"] and monitor.store_items() == []
    unsubscribe()
    space.put_state("v3", "job", state_b64({"a": 0}, beat=1))
    assert monitor.wait_for_version(version + 1, timeout=10) == version + 2
    assert seen == [version + 1]
    assert monitor.wait_for_version(version + 2, timeout=0.2) == version + 2  # nothing else: no new version


def test_a_failing_subscriber_neither_stops_the_watcher_nor_other_subscribers(space):
    monitor = space.monitor("v2")
    calls: list[int] = []

    def broken(version: int) -> None:
        raise RuntimeError("a viewer's bug")

    monitor.subscribe(broken)
    monitor.subscribe(calls.append)
    for beat in range(3):
        space.put_state("v2", "job", state_b64({"a": 0}, beat=beat))
        wait_until(monitor, lambda: len(monitor.history("job")) == beat + 1, what=f"revision {beat}")
    # Subscribers are told after the revision is readable, so wait for the third call too.
    wait_until(monitor, lambda: len(calls) >= 3, what="the good subscriber's third call")
    assert calls == sorted(set(calls)) and len(monitor.threads) == 1


def test_readers_in_other_threads_see_whole_batches(space):
    monitor = space.monitor("v3", history_limit=50)
    problems: list[str] = []
    done = threading.Event()

    def read() -> None:
        while not done.is_set():
            history = monitor.history("job")
            run = monitor.run("job")
            revisions = [entry.revision for entry in history]
            if revisions != sorted(revisions) or len(revisions) > 50:
                problems.append(f"history out of order or unbounded: {revisions}")
            if run is not None and history and run.revision < history[-1].revision:
                problems.append("a view older than the history it was read after")

    readers = [threading.Thread(target=read, daemon=True) for _ in range(3)]
    for reader in readers:
        reader.start()
    try:
        for beat in range(120):
            last = space.put_state("v3", "job", state_b64({"a": 0, "b": 1}, beat=beat)).revision
        wait_until(monitor, lambda: monitor.run("job") and monitor.run("job").revision == last, what="the last write")
    finally:
        done.set()
        for reader in readers:
            reader.join(30)
    assert not any(reader.is_alive() for reader in readers), "a reader never finished"
    assert problems == []
    history = monitor.history("job")
    assert history[-1].revision == last
    assert all(entry.heartbeat_only or ("created", None) in changes_of([entry]) for entry in history)
    # bounded by history_limit: 50 entries, fewer only if the monitor fell behind and coalesced writes
    assert len(history) == 50 or (len(history) < 50 and any(entry.skipped for entry in history))


def test_a_frame_holds_one_version_while_the_monitor_moves_on_and_readers_in_turn_share_it(space):
    monitor = space.monitor("v3", history_limit=4)
    kv = space.kv("v3")
    revisions = [space.put_state("v3", "job", state_b64({"a": 0}, beat=beat)).revision for beat in range(2)]
    kv.put(f"{space.prefix}/store/k", base64.b64encode(b"before").decode())
    wait_until(monitor, lambda: monitor.run("job") and monitor.run("job").revision == revisions[-1]
               and monitor.store_items(), what="two revisions and a store key")
    frame = monitor.frame()
    assert monitor.frame() is frame and monitor.frame(at_least=frame.version) is frame  # shared while current
    now = datetime(2030, 1, 1, tzinfo=timezone.utc)
    assert frame.diagnose("job", now=now) is frame.diagnose("job", now=now)  # one answer for every reader

    later = [space.put_state("v3", "job", state_b64({"a": 0, "b": 1}, beat=beat)).revision for beat in range(2, 5)]
    kv.put(f"{space.prefix}/store/k", base64.b64encode(b"after").decode())
    kv.put(f"{space.prefix}/store/k2", base64.b64encode(b"new").decode())
    wait_until(monitor, lambda: monitor.run("job").revision == later[-1] and len(monitor.store_items()) == 2,
               what="the later writes")
    # The frame still answers as of its version: its history (read only now, after the history
    # dropped its oldest entry) ends where it did, and its store and participants are the old ones.
    assert frame.version < monitor.version
    assert frame.run("job").revision == revisions[-1] and len(frame.run("job").snapshot.participants) == 1
    assert [entry.revision for entry in frame.history("job")] == revisions[1:]
    assert frame.revision_at("job", later[-1]).revision == revisions[-1]
    assert [item.key for item in frame.store_items()] == ["k"] and frame.store_items()[0].value == b"before"
    assert [entry.revision for entry in monitor.history("job")] == revisions[1:] + later

    newer = monitor.frame(at_least=frame.version + 1)
    assert newer is not frame and newer.version == monitor.version and newer.run("job").revision == later[-1]
    assert monitor.frame(at_least=frame.version) is newer  # the frame taken last serves older asks too
    fresh = monitor.frame(at_least=frame.version, taken_since=time.monotonic())  # ... unless it is too old
    assert fresh is not newer and fresh.version == newer.version and monitor.frame() is fresh
    reader = FrameReader(monitor)
    reader.show(frame)
    assert (reader.version, reader.run("job").revision, reader.connection) == (frame.version, revisions[-1],
                                                                               frame.connection)
    assert reader.diagnose("job", now=now) is frame.diagnose("job", now=now)
    reader.show(newer)
    assert [entry.revision for entry in reader.history("job")] == revisions[1:] + later


# -- decoding: once per value, hostile values never run ---------------------------------------------


class _Hostile:
    def __init__(self, canary: str) -> None:
        self.canary = canary

    def __reduce__(self):
        return os.system, (f"touch {self.canary}",)


@pytest.mark.reliability
def test_a_hostile_state_is_reported_not_run(space, tmp_path, api):
    canary = tmp_path / "pwned"
    monitor = space.monitor(api)
    hostile = base64.b64encode(pickle.dumps(_Hostile(str(canary)))).decode()
    space.put_state(api, "evil", hostile)
    space.put_state(api, "garbage", "not base64 at all!")
    run = wait_until(monitor, lambda: monitor.run("evil"), what="the hostile run")
    assert run.snapshot is None and not run.deleted
    with pytest.raises(UndecodableStateError) as decoding:
        decode_state_b64(hostile, run_id="evil")
    assert run.error == str(decoding.value) and "system" in run.error  # the decoder's own sentence
    entry = monitor.history("evil")[-1]
    assert entry.error == run.error and entry.snapshot is None and entry.changes == ()
    garbage = wait_until(monitor, lambda: monitor.run("garbage"), what="the garbage run")
    assert garbage.error.startswith("The rendezvous state of run 'garbage' is undecodable (")
    assert garbage.snapshot is None and not canary.exists()
    # a valid state afterwards decodes again
    space.put_state(api, "evil", state_b64({"a": 0}))
    fixed = wait_until(monitor, lambda: (r := monitor.run("evil")).snapshot and r, what="the repaired run")
    assert fixed.error is None and ("created", None) in changes_of(monitor.history("evil")[-1:])
    assert monitor.threads and not canary.exists()


def test_an_unchanged_value_is_not_decoded_again(space):
    monitor = space.monitor("v3")
    value = state_b64({"a": 0, "b": 1})
    space.put_state("v3", "job", value)
    space.put_state("v3", "job", value)
    history = wait_until(monitor, lambda: len(h := monitor.history("job")) == 2 and h, what="two revisions")
    assert history[0].revision < history[1].revision and history[1].size == len(value)
    assert history[1].snapshot is history[0].snapshot  # the same object: no second decode
    assert history[1].changes == () and not history[1].heartbeat_only


def test_a_backlog_of_writes_is_coalesced_into_its_newest_revision(space):
    monitor = space.monitor("v3")
    space.put_state("v3", "job", state_b64({"a": 0}))
    wait_until(monitor, lambda: monitor.run("job"), what="the run")
    with monitor._paused():  # the monitor falls behind by ten writes
        for beat in range(1, 11):
            last = space.put_state("v3", "job", state_b64({"a": 0}, waiting=("late",) if beat >= 5 else (), beat=beat))
    wait_until(monitor, lambda: monitor.run("job").revision == last.revision, what="the backlog")
    entries = monitor.history("job")[1:]
    assert sum(1 + entry.skipped for entry in entries) == 10  # every revision decoded or counted
    assert entries[-1].skipped > 0 and len(entries) < 10 and not any(entry.resync for entry in entries)
    assert ("waiting", Node("late", 100, 0)) in changes_of(entries)  # summed up across the skipped ones
    assert monitor.run("job").snapshot.wait_list == {Node("late", 100, 0)}


# -- deletions and expiry -----------------------------------------------------------------------


def test_deleted_and_expired_runs_are_marked_deleted(space, api):
    monitor = space.monitor(api)
    space.put_state(api, "gone", state_b64({"a": 0}))
    space.put_state(api, "expiring", state_b64({"a": 0}), ttl=1)
    wait_until(monitor, lambda: monitor.run("gone") and monitor.run("expiring"), what="both runs")
    space.kv(api).delete(f"{space.prefix}/rendezvous/gone")
    gone = wait_until(monitor, lambda: (r := monitor.run("gone")).deleted and r, what="the deletion")
    assert gone.snapshot is None and gone.error is None
    assert monitor.history("gone")[-1].deleted and monitor.history("gone")[-1].revision == gone.revision
    wait_until(monitor, lambda: monitor.run("expiring").deleted, timeout=15, what="the expiry")


# -- the store -----------------------------------------------------------------------------------


def test_store_keys_and_values_appear_decoded(space, api):
    store = EtcdStore(space.kv(api), f"{space.prefix}/store")
    monitor = space.monitor(api)
    store.set("torch.rendezvous.job.0/MASTER_ADDR", "10.0.0.1")
    store.set("ünïcode key", b"\x00\xffbinary")
    store.add("counter", 41)
    store.add("counter", 1)
    space.kv(api).put(f"{space.prefix}/store/not-base64!", "raw value?")
    items = wait_until(monitor, lambda: len(i := monitor.store_items()) == 4
                       and any(x.key == "counter" and x.value == b"42" for x in i) and i, what="four store keys")
    assert [item.key for item in items] == sorted(item.key for item in items)
    by_key = {item.key: item for item in items}
    assert by_key["torch.rendezvous.job.0/MASTER_ADDR"].value == b"10.0.0.1"
    assert by_key["ünïcode key"].value == b"\x00\xffbinary"
    assert by_key["not-base64!"].value == b"raw value?"
    assert all(isinstance(item, StoreItem) and item.api == api for item in items)
    store.delete_key("counter")
    wait_until(monitor, lambda: "counter" not in {i.key for i in monitor.store_items()}, what="the deletion")


# -- missed events: compaction (v3), the 1,000-event window (v2) -----------------------------------


def _compact(endpoint: str, revision: int) -> None:
    response = urllib3.request("POST", f"http://{endpoint}/v3/kv/compaction",
                               body=json.dumps({"revision": str(revision), "physical": True}).encode(), timeout=10)
    assert response.status == 200, response.data


@pytest.mark.timeout(60)
def test_v3_compaction_is_resynced_by_a_relist(unique):
    with EtcdServer() as server:
        kv = server.kv("v3")
        prefix = f"/{unique}"
        monitor = get_monitor(server.get_endpoint(), prefix, api="v3")
        try:
            kv.put(f"{prefix}/rendezvous/job", state_b64({"a": 0}))
            wait_until(monitor, lambda: monitor.run("job"), what="the run")
            with monitor._paused():
                kv.put(f"{prefix}/rendezvous/job", state_b64({"a": 0}, waiting=("late",)))
                kv.put(f"{prefix}/rendezvous/job", state_b64({"a": 0}, waiting=("late",), beat=1))
                kv.put(f"{prefix}/rendezvous/other", state_b64({"b": 0}))
                kv.delete(f"{prefix}/rendezvous/other")
                latest = kv.put(f"{prefix}/unrelated", "x").revision
                _compact(server.get_endpoint(), latest)
            last = kv.get(f"{prefix}/rendezvous/job").revision
            job = wait_until(monitor, lambda: (r := monitor.run("job")).revision == last and r, what="the resync")
            entry = monitor.history("job")[-1]
            assert entry.resync and entry.revision == last and len(monitor.history("job")) == 2
            assert ("waiting", Node("late", 100, 0)) in changes_of([entry])
            assert job.snapshot.wait_list == {Node("late", 100, 0)}
            assert monitor.run("other") is None  # born and gone inside the gap: never seen
            assert monitor.connection.state == "connected"
            kv.put(f"{prefix}/rendezvous/job", state_b64({"a": 0}, beat=2))
            wait_until(monitor, lambda: not monitor.history("job")[-1].resync, what="watching again")
        finally:
            monitor.stop()
            kv.close()


@pytest.mark.timeout(60)
def test_v2_events_past_its_1000_event_window_are_resynced(space):
    monitor = space.monitor("v2")
    kv = space.kv("v2")
    space.put_state("v2", "job", state_b64({"a": 0}))
    space.put_state("v2", "dropped", state_b64({"b": 0}))
    wait_until(monitor, lambda: monitor.run("job") and monitor.run("dropped"), what="the runs")
    with monitor._paused():
        last = space.put_state("v2", "job", state_b64({"a": 0, "b": 1})).revision
        kv.delete(f"{space.prefix}/rendezvous/dropped")
        for index in range(1100):
            kv.put(f"{space.prefix}-noise/key", str(index))
    job = wait_until(monitor, lambda: (r := monitor.run("job")).revision == last and r, timeout=30, what="the resync")
    entry = monitor.history("job")[-1]
    assert entry.resync and ("joined", Node("b", 100, 0)) in changes_of([entry])
    assert job.snapshot.world_size == 2
    assert monitor.run("dropped").deleted and monitor.history("dropped")[-1].resync


# -- etcd unreachable, then back ------------------------------------------------------------------


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.reliability
@pytest.mark.timeout(30)
@pytest.mark.parametrize("api", [None, "v2", "v3"])
def test_a_closed_port_is_reported_unreachable(watch, api):
    port = _closed_port()
    began = datetime.now(timezone.utc)
    monitor = watch(f"localhost:{port}", "/torch/elastic", api=api, read_timeout=2)
    status = wait_until(monitor, lambda: monitor.connection.state == "unreachable" and monitor.connection,
                        what="unreachable")
    assert isinstance(status, ConnectionStatus)
    assert began - timedelta(seconds=1) <= status.since <= datetime.now(timezone.utc)
    assert status.message.startswith(f"etcd at localhost:{port} is unreachable since {status.since:%H:%M:%S} UTC (")
    assert "connection refused" in status.message
    tries = monitor.requests
    deadline = time.monotonic() + 20
    while monitor.requests < tries + 4:  # retries...
        assert time.monotonic() < deadline, f"the monitor stopped retrying after {monitor.requests} requests"
        time.sleep(0.05)
    assert monitor.connection.since == status.since and monitor.threads  # ...keep the outage's start
    assert monitor.runs() == {}


@pytest.mark.reliability
@pytest.mark.timeout(90)
def test_an_outage_keeps_the_last_state_then_recovers_and_resyncs(unique):
    prefix = f"/{unique}"
    with EtcdCluster(size=1, enable_v2=True) as cluster:
        with cluster.kv("v3") as kv:
            kv.put(f"{prefix}/rendezvous/job", state_b64({"a": 0}))
        monitor = get_monitor(cluster.endpoints, prefix, read_timeout=2)
        try:
            wait_until(monitor, lambda: monitor.apis == ("v2", "v3") and monitor.run("job"), what="the run")
            cluster.kill_member(0)
            down = wait_until(monitor, lambda: monitor.connection.state == "unreachable" and monitor.connection,
                              what="the outage")
            assert f"etcd at {cluster.endpoints} is unreachable since" in down.message
            assert monitor.run("job").snapshot.world_size == 1  # the last state stays visible
            with monitor._paused():  # etcd comes back and changes before the monitor's next attempt
                cluster.restart_member(0)
                with cluster.kv("v3") as kv:
                    kv.put(f"{prefix}/rendezvous/job", state_b64({"a": 0, "b": 1}))
            up = wait_until(monitor, lambda: monitor.connection.state == "recovered" and monitor.connection,
                            what="the recovery")
            assert up.since >= down.since and "reachable again" in up.message
            entry = monitor.history("job")[-1]
            assert entry.resync and monitor.run("job").snapshot.world_size == 2
            assert ("joined", Node("b", 100, 0)) in changes_of([entry])
            with cluster.kv("v3") as kv:
                kv.put(f"{prefix}/rendezvous/job", state_b64({"a": 0, "b": 1}, beat=1))
            wait_until(monitor, lambda: monitor.connection.state == "connected", what="connected after a change")
        finally:
            monitor.stop()


# -- export -------------------------------------------------------------------------------------


def test_export_history_as_csv_and_json(space):
    monitor = space.monitor("v2")
    space.put_state("v2", "=cmd", state_b64({"a": 0}))
    space.put_state("v2", "=cmd", state_b64({"a": 0}, waiting=("b",)))
    space.kv("v2").delete(f"{space.prefix}/rendezvous/=cmd")
    wait_until(monitor, lambda: len(monitor.history("=cmd")) == 3, what="three revisions")
    rows = list(csv.DictReader(io.StringIO(monitor.export_history("=cmd", "csv"))))
    assert [row["revision"] for row in rows] == [str(e.revision) for e in monitor.history("=cmd")]
    assert rows[0]["run_id"] == "'=cmd" and rows[0]["api"] == "v2"  # no spreadsheet formula
    assert rows[1]["waiting"] == "1" and "is waiting for the next round" in rows[1]["changes"]
    assert rows[2]["deleted"] == "True" and rows[2]["participants"] == ""
    data = json.loads(monitor.export_history("=cmd", "json"))
    assert data["run_id"] == "=cmd" and data["api"] == "v2" and len(data["revisions"]) == 3
    second = data["revisions"][1]
    assert second["snapshot"]["wait_list"] == [{"addr": "b", "pid": 100, "local_id": 0}]
    assert {"kind": "waiting", "node": "b_100_0", "detail": "",
            "sentence": "Node b_100_0 is waiting for the next round."} in second["changes"]
    assert json.loads(monitor.export_history("never-seen", "json"))["revisions"] == []
    with pytest.raises(ValueError, match="must be 'csv' or 'json', not 'xml'"):
        monitor.export_history("=cmd", "xml")


def test_bad_settings_are_refused_with_a_sentence():
    with pytest.raises(ValueError, match="API must be v2 or v3, not 'v4'"):
        get_monitor("localhost:2379", api="v4")
    with pytest.raises(ValueError, match="history limit must be a positive"):
        Monitor("localhost:2379", history_limit=0)
    with pytest.raises(ValueError, match="port number"):
        get_monitor("localhost:99999")

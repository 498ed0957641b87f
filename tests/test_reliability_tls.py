"""TLS: an etcd started with a self-signed CA and client-certificate auth (certificates made by
the test). create_backend on both APIs, a real torch handler, ``rdzv status`` and the served
dashboard connect with ca_cert / ssl_cert / ssl_cert_key; a wrong CA, a missing client
certificate and plain HTTP each fail with a sentence saying which setting is wrong."""

from __future__ import annotations

import subprocess
import sys

import pytest
from browser_helpers import WAIT_MS
from conftest import subprocess_env
from rendezvous_helpers import params, rdzv_handler
from tls_certs import make_certificates
from torch.distributed.elastic.rendezvous.api import RendezvousConnectionError

from rdzv.backend import create_backend
from rdzv.etcd_tls import EtcdTLS
from rdzv.server import EtcdServer

pytestmark = [pytest.mark.reliability, pytest.mark.timeout(180)]


@pytest.fixture(scope="module")
def certificates(tmp_path_factory):
    return make_certificates(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="module")
def tls_server(certificates):
    tls = EtcdTLS(certificates.server_cert, certificates.server_key, certificates.ca_cert,
                  certificates.client_cert, certificates.client_key)
    with EtcdServer(tls=tls) as server:
        yield server


def tls_conf(certificates, ca=None, client=True) -> dict[str, str]:
    conf = {"protocol": "https", "ca_cert": str(ca or certificates.ca_cert)}
    if client:
        conf.update(ssl_cert=str(certificates.client_cert), ssl_cert_key=str(certificates.client_key))
    return conf


def rdzv_status(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "rdzv", "status", *argv], capture_output=True, text=True,
                          timeout=60, env=subprocess_env())


def test_backend_store_and_a_real_handler_over_tls(tls_server, certificates, unique, api, monkeypatch):
    monkeypatch.setenv("TORCH_DISABLE_SHARE_RDZV_TCP_STORE", "1")
    conf = tls_conf(certificates)
    backend, store = create_backend(params(tls_server.get_endpoint(), f"{unique}-raw", **conf), api=api)
    _, token, written = backend.set_state(b"over tls")
    assert written and backend.get_state() == (b"over tls", token)
    store.set("k", "v")
    assert store.get("k") == b"v"

    handler = rdzv_handler(params(tls_server.get_endpoint(), unique, min_nodes=1, max_nodes=1, **conf), api=api)
    try:
        info = handler.next_rendezvous()
        assert (info.rank, info.world_size) == (0, 1)
    finally:
        handler.shutdown()

    status = rdzv_status("--endpoint", tls_server.get_endpoint(), "--run-id", unique, "--api", api,
                         "--protocol", "https", "--ca-cert", conf["ca_cert"], "--ssl-cert", conf["ssl_cert"],
                         "--ssl-cert-key", conf["ssl_cert_key"])
    assert status.returncode == 0, status.stderr
    assert f"Run {unique} ({api}" in status.stdout and "complete" in status.stdout


@pytest.mark.parametrize("mistake, words", [
    ("wrong CA", "not signed by the CA in ca_cert"),
    ("no client certificate", "refused the client certificate"),
    ("plain HTTP", "closed the connection"),
])
def test_wrong_tls_settings_fail_with_a_sentence_naming_the_setting(tls_server, certificates, api, mistake, words):
    if mistake == "wrong CA":
        conf = tls_conf(certificates, ca=certificates.wrong_ca_cert)
    elif mistake == "no client certificate":
        conf = tls_conf(certificates, client=False)
    else:
        conf = {}
    with pytest.raises(RendezvousConnectionError, match=words):
        create_backend(params(tls_server.get_endpoint(), "any", read_timeout=5, **conf), api=api)

    argv = ["--endpoint", tls_server.get_endpoint(), "--api", api, "--timeout", "5"]
    for name, value in conf.items():
        argv += [f"--{name.replace('_', '-')}", value]
    status = rdzv_status(*argv)
    assert status.returncode == 3
    lines = status.stderr.strip().splitlines()
    assert len(lines) == 1 and words in lines[0] and "Traceback" not in status.stderr, status.stderr


@pytest.mark.browser
def test_the_dashboard_connects_over_tls(tls_server, certificates, unique, serve, page, monkeypatch):
    from playwright.sync_api import expect

    monkeypatch.setenv("TORCH_DISABLE_SHARE_RDZV_TCP_STORE", "1")
    conf = tls_conf(certificates)
    handler = rdzv_handler(params(tls_server.get_endpoint(), unique, min_nodes=1, max_nodes=1, **conf))
    try:
        handler.next_rendezvous()
        dashboard = serve(["--endpoint", tls_server.get_endpoint(), "--run-id", unique, "--protocol", "https",
                           "--ca-cert", conf["ca_cert"], "--ssl-cert", conf["ssl_cert"],
                           "--ssl-cert-key", conf["ssl_cert_key"]])
        page.goto(dashboard.url)
        expect(page.locator(".rdzv-banner")).to_have_attribute("data-state", "connected", timeout=WAIT_MS)
        expect(page.get_by_text("participant", exact=True)).to_have_count(1, timeout=WAIT_MS)

        wrong = serve(["--endpoint", tls_server.get_endpoint(), "--protocol", "https",
                       "--ca-cert", str(certificates.wrong_ca_cert), "--ssl-cert", conf["ssl_cert"],
                       "--ssl-cert-key", conf["ssl_cert_key"]])
        page.goto(wrong.url)
        banner = page.locator(".rdzv-banner")
        expect(banner).to_have_attribute("data-state", "unreachable", timeout=WAIT_MS)
        expect(banner).to_contain_text("not signed by the CA in ca_cert")
    finally:
        handler.shutdown()

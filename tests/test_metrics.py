"""Prometheus metrics of a real run: ``rdzv exporter`` scraped over HTTP and parsed with
prometheus_client's own parser; the values match the state etcd holds."""

from __future__ import annotations

import base64
from email.message import Message
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest
from conftest import free_port, subprocess_env
from serving_helpers import dashboard_servers
from waiting import wait_for
from prometheus_client.parser import text_string_to_metric_families

from rdzv.demo import DemoCluster
from rdzv.kv import KeyLayout
from rdzv.state import decode_state_b64


def scrape(url: str) -> dict[str, list]:
    with urllib.request.urlopen(url, timeout=10) as answer:
        text = answer.read().decode()
    return {family.name: family.samples for family in text_string_to_metric_families(text)}


def value(samples: list, **labels) -> float:
    found = [sample.value for sample in samples if all(sample.labels.get(k) == v for k, v in labels.items())]
    assert len(found) == 1, (labels, samples)
    return found[0]


@pytest.mark.timeout(180)
def test_exporter_metrics_match_a_real_run(etcd_server, unique):
    endpoint = etcd_server.get_endpoint()
    cluster = DemoCluster(endpoint, unique, backend="rdzv-etcd-v3", min_nodes=2, max_nodes=2, last_call_timeout=1,
                          keep_alive_interval=1, keep_alive_max_attempt=2)
    port = free_port()
    exporter = subprocess.Popen([sys.executable, "-m", "rdzv", "exporter", "--endpoint", endpoint, "--port", str(port)],
                                env=subprocess_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                start_new_session=True, text=True)
    try:
        cluster.add_node("m-alpha")
        cluster.add_node("<b>m-beta</b>")  # a node name a label value must carry safely
        url = f"http://127.0.0.1:{port}/metrics"
        deadline = time.monotonic() + 60
        while True:
            try:
                families = scrape(url)
                if any(s.labels.get("run_id") == unique and s.value == 1
                       for s in families.get("rdzv_run_complete", [])):
                    break
            except OSError:
                assert exporter.poll() is None, exporter.stderr.read()
            assert time.monotonic() < deadline, "the exporter never reported the run complete"
            time.sleep(0.2)
        with etcd_server.kv(api="v3") as kv:
            current = kv.get(KeyLayout().state_key(unique))
        state = decode_state_b64(current.value)
        run = dict(run_id=unique, api="v3")
        assert value(families["rdzv_run_round"], **run) == state.round
        assert value(families["rdzv_run_participants"], **run) == 2
        assert value(families["rdzv_run_waiting_nodes"], **run) == 0
        assert value(families["rdzv_run_closed"], **run) == 0
        assert value(families["rdzv_run_state_bytes"], **run) > 100
        assert value(families["rdzv_run_revisions_seen"], **run) >= 2
        assert value(families["rdzv_run_finding"], code="complete", **run) == 1
        ages = {s.labels["node"]: s.value for s in families["rdzv_node_heartbeat_age_seconds"]
                if s.labels["run_id"] == unique}
        assert {name.split("_")[0] for name in ages} == {"m-alpha", "<b>m-beta</b>"}
        assert all(0 <= age < 30 for age in ages.values())
        assert value(families["rdzv_monitor_connected"], endpoint=endpoint) == 1
        buckets = [s for s in families["rdzv_monitor_decode_seconds"] if s.name.endswith("_count")]
        assert buckets and buckets[0].value >= 1

        cluster.crash("m-alpha")  # stale in 2 s: the metrics follow the clock, not only etcd
        deadline = time.monotonic() + 30
        while True:
            families = scrape(url)
            stale = {s.labels["node"].split("_")[0]: s.value for s in families["rdzv_node_stale"]
                     if s.labels["run_id"] == unique}
            findings = {s.labels["code"] for s in families["rdzv_run_finding"] if s.labels["run_id"] == unique}
            if stale.get("m-alpha") == 1 or "m-alpha" not in stale:
                break
            assert time.monotonic() < deadline, f"m-alpha never showed as stale: {stale}"
            time.sleep(0.2)
        assert "stale-heartbeat" in findings or "m-alpha" not in stale
    finally:
        os.killpg(exporter.pid, signal.SIGTERM)
        exporter.wait(timeout=30)
        cluster.close()
    assert exporter.returncode == 0


def scrape_as(url: str, user: str | None = None, password: str = "") -> tuple[int, str, Message]:
    """(status, body, headers) of a GET of ``url``, with HTTP Basic credentials when ``user``."""
    request = urllib.request.Request(url)
    if user is not None:
        request.add_header("Authorization", "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode())
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            return answer.status, answer.read().decode(), answer.headers
    except urllib.error.HTTPError as refused:
        return refused.code, refused.read().decode(), refused.headers


def families_of(body: str) -> dict[str, list]:
    return {family.name: family.samples for family in text_string_to_metric_families(body)}


def test_serving_metrics_count_sessions_pushes_and_their_delays():
    from prometheus_client import CollectorRegistry, generate_latest

    from rdzv.ui.serving_metrics import ServingMetrics, serving_collector

    metrics = ServingMetrics()
    metrics.session_opened()
    metrics.session_opened()
    metrics.session_closed()
    metrics.pushed(0.03, 0.002)
    metrics.pushed(3.0, 0.2)
    metrics.push_lost()
    registry = CollectorRegistry()
    registry.register(serving_collector(metrics))
    families = families_of(generate_latest(registry).decode())
    assert value(families["rdzv_dashboard_sessions"]) == 1
    assert value(families["rdzv_dashboard_lost_pushes"]) == 1
    delay = families["rdzv_dashboard_push_delay_seconds"]
    bucket = lambda le: value([s for s in delay if s.name.endswith("_bucket")], le=le)
    assert (bucket("0.025"), bucket("0.05"), bucket("2.5"), bucket("5.0"), bucket("+Inf")) == (0, 1, 1, 2, 2)
    assert value([s for s in delay if s.name.endswith("_count")]) == 2
    assert value([s for s in delay if s.name.endswith("_sum")]) == pytest.approx(3.03)
    refresh = families["rdzv_dashboard_refresh_seconds"]
    assert value([s for s in refresh if s.name.endswith("_bucket")], le="0.0025") == 1
    assert value([s for s in refresh if s.name.endswith("_sum")]) == pytest.approx(0.202)


@pytest.mark.timeout(300)
def test_the_dashboards_own_server_serves_the_metrics_behind_its_sign_in(etcd_server, unique, tmp_path):
    endpoint = etcd_server.get_endpoint()
    cluster = DemoCluster(endpoint, unique, backend="rdzv-etcd-v2", min_nodes=2, max_nodes=3, last_call_timeout=1,
                          keep_alive_interval=1, keep_alive_max_attempt=30)
    passwords = tmp_path / "users.json"
    passwords.write_text(json.dumps({"prom": "scrape-secret"}))
    passwords.chmod(0o600)
    try:
        cluster.add_node("m-one")
        cluster.add_node("m-two")
        with dashboard_servers(tmp_path) as (rdzv_dashboard, panel_serve):
            open_dashboard = rdzv_dashboard("--endpoint", endpoint, "--run-id", unique)
            signed = rdzv_dashboard("--endpoint", endpoint, "--run-id", unique, "--basic-auth", str(passwords))
            plugin = panel_serve(["--plugins", "rdzv.ui.metrics_route"], ["--endpoint", endpoint, "--run-id", unique])
            urls = {name: served.url.replace("/dashboard", "/metrics")
                    for name, served in (("rdzv dashboard", open_dashboard), ("signed in", signed),
                                         ("panel serve", plugin))}

            status, body, headers = scrape_as(urls["signed in"])
            assert status == 401 and "HTTP Basic" in body and headers.get("WWW-Authenticate", "").startswith("Basic")
            assert "rdzv_run" not in body
            assert scrape_as(urls["signed in"], "prom", "wrong")[0] == 401

            def complete(url: str, *credentials: str) -> dict[str, list] | None:
                status, body, _ = scrape_as(url, *credentials)
                assert status == 200, body
                families = families_of(body)
                run = [s for s in families.get("rdzv_run_complete", []) if s.labels["run_id"] == unique]
                return families if run and run[0].value == 1 else None

            for name, url in urls.items():
                credentials = ("prom", "scrape-secret") if name == "signed in" else ()
                families = wait_for(lambda: complete(url, *credentials), f"{name} to report the run complete")
                with etcd_server.kv(api="v2") as kv:
                    state = decode_state_b64(kv.get(KeyLayout().state_key(unique)).value)
                run = dict(run_id=unique, api="v2")
                assert value(families["rdzv_run_round"], **run) == state.round, name
                assert value(families["rdzv_run_participants"], **run) == len(state.participants) == 2, name
                nodes = {s.labels["node"].split("_")[0] for s in families["rdzv_node_heartbeat_age_seconds"]
                         if s.labels["run_id"] == unique}
                assert nodes == {"m-one", "m-two"}, name

            # Each server says how it keeps up with its pages: a page's session, opened by asking for
            # the page, is counted until it is dropped unused (nothing connected to it).
            sessions = lambda: value(families_of(scrape_as(urls["rdzv dashboard"])[1])["rdzv_dashboard_sessions"])
            assert sessions() == 0
            urllib.request.urlopen(open_dashboard.url, timeout=60).read()
            assert sessions() == 1
            wait_for(lambda: sessions() == 0, "the unused session to be dropped", timeout=60)
            families = families_of(scrape_as(urls["panel serve"])[1])
            assert {"rdzv_dashboard_push_delay_seconds", "rdzv_dashboard_refresh_seconds",
                    "rdzv_dashboard_lost_pushes"} <= set(families)

            # A third node joins: every server's metrics follow it.
            cluster.add_node("m-three")
            for name, url in urls.items():
                credentials = ("prom", "scrape-secret") if name == "signed in" else ()
                wait_for(lambda: (families := complete(url, *credentials)) and value(
                    families["rdzv_run_participants"], run_id=unique, api="v2") == 3, f"{name} to show three")
    finally:
        cluster.close()


def test_exporter_refuses_a_public_address_without_the_opt_out():
    result = subprocess.run([sys.executable, "-m", "rdzv", "exporter", "--endpoint", "127.0.0.1:2379", "--address",
                             "0.0.0.0", "--port", str(free_port())], capture_output=True, text=True, timeout=60,
                            env=subprocess_env())
    assert result.returncode == 2 and "--allow-remote-scrapes" in result.stderr and "Traceback" not in result.stderr

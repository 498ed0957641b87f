"""Prometheus metrics of a real run: ``rdzv exporter`` scraped over HTTP and parsed with
prometheus_client's own parser; the values match the state etcd holds."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request

import pytest
from conftest import free_port, subprocess_env
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


def test_exporter_refuses_a_public_address_without_the_opt_out():
    result = subprocess.run([sys.executable, "-m", "rdzv", "exporter", "--endpoint", "127.0.0.1:2379", "--address",
                             "0.0.0.0", "--port", str(free_port())], capture_output=True, text=True, timeout=60,
                            env=subprocess_env())
    assert result.returncode == 2 and "--allow-remote-scrapes" in result.stderr and "Traceback" not in result.stderr

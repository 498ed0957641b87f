"""Every entry point reads the RDZV_* variables the README lists, through the one builder, and
arguments win over them: ``rdzv status``, ``rdzv dashboard``, ``panel serve app/dashboard.py`` and
``rdzv.dashboard()``. The variables alone say where etcd is; no flag is passed."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import urllib.request

import pytest
from conftest import ROOT, free_port, subprocess_env
from rendezvous_helpers import torch_state_b64

from rdzv.kv import KeyLayout
from rdzv.options import ENVIRONMENT


@pytest.fixture
def written_run(etcd_server, unique):
    """A run with one participant, written below the prefix ``/<unique>`` on v3; yields the env
    that points every entry point at it."""
    layout = KeyLayout(f"/{unique}")
    with etcd_server.kv(api="v3") as kv:
        kv.put(layout.state_key("job"), torch_state_b64({("env-host", 7, 0): 0}))
        yield {"RDZV_ENDPOINT": etcd_server.get_endpoint(), "RDZV_PREFIX": f"/{unique}", "RDZV_API": "v3",
               "RDZV_RUN_ID": "job"}
        kv.delete(layout.state_key("job"))


def _rdzv(*argv: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    clean = {key: value for key, value in subprocess_env().items() if key not in ENVIRONMENT.values()}
    return subprocess.run([sys.executable, "-m", "rdzv", *argv], capture_output=True, text=True, timeout=60,
                          env={**clean, **env})


def test_rdzv_status_reads_every_variable(written_run):
    shown = _rdzv("status", env={**written_run, "RDZV_TIMEOUT": "5"})
    assert shown.returncode == 0, shown.stderr
    assert "Run job (v3, revision" in shown.stdout and "env-host" in shown.stdout
    assert not re.search(r"env-host.*stale", shown.stdout)

    # The run's settings from torchrun's own syntax decide "stale": 1 ms keep-alive, one attempt.
    stale = _rdzv("status", env={**written_run, "RDZV_NNODES": "1:2",
                                 "RDZV_RDZV_CONF": "keep_alive_interval=0.001,keep_alive_max_attempt=1"})
    assert re.search(r"env-host.*stale", stale.stdout), stale.stdout

    # An argument wins over its variable: another run id is looked for, and not found.
    missing = _rdzv("status", "--run-id", "other", env=written_run)
    assert missing.returncode == 4 and "'other'" in missing.stderr

    # A bad variable is named in the one sentence.
    bad = _rdzv("status", env={**written_run, "RDZV_API": "v9"})
    assert bad.returncode == 2 and "RDZV_API" in bad.stderr and "Traceback" not in bad.stderr
    listing = _rdzv("status", "--json", env={**written_run, "RDZV_RUN_ID": ""})
    assert listing.returncode == 0 and '"run_id": "job"' in listing.stdout


def _served_page(command: list[str], env: dict[str, str], url: str, page, header: str) -> None:
    """Serve with ``command`` under ``env`` only, open ``url`` in Chromium, and wait for ``header``
    and the run's node on the page."""
    from browser_helpers import WAIT_MS
    from playwright.sync_api import expect

    clean = {key: value for key, value in subprocess_env().items() if key not in ENVIRONMENT.values()}
    process = subprocess.Popen(command, cwd=ROOT, env={**clean, **env}, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(url, timeout=10).close()
                break
            except OSError:
                assert process.poll() is None, "the server exited"
                assert time.monotonic() < deadline, "the server did not answer within 60 s"
                time.sleep(0.2)
        page.goto(url)
        expect(page.get_by_text(header).first).to_be_visible(timeout=WAIT_MS)
        expect(page.get_by_text("env-host", exact=True).first).to_be_visible(timeout=WAIT_MS)
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=30)


@pytest.mark.browser
@pytest.mark.timeout(180)
def test_rdzv_dashboard_reads_the_variables(written_run, unique, page):
    port = free_port()
    _served_page([sys.executable, "-m", "rdzv", "dashboard", "--port", str(port)], written_run,
                 f"http://127.0.0.1:{port}/dashboard", page, f"etcd {written_run['RDZV_ENDPOINT']} · prefix /{unique}")

    bad = _rdzv("dashboard", "--port", str(free_port()), env={**written_run, "RDZV_PREFIX": "/x", "RDZV_API": "v9"})
    assert bad.returncode == 2 and "RDZV_API" in bad.stderr and "Traceback" not in bad.stderr


@pytest.mark.browser
@pytest.mark.timeout(180)
def test_panel_serve_reads_the_variables(written_run, unique, page):
    port = free_port()
    command = [sys.executable, "-m", "panel", "serve", str(ROOT / "app" / "dashboard.py"), "--port", str(port),
               "--address", "127.0.0.1", f"--allow-websocket-origin=127.0.0.1:{port}"]
    _served_page(command, written_run, f"http://127.0.0.1:{port}/dashboard", page,
                 f"etcd {written_run['RDZV_ENDPOINT']} · prefix /{unique}")


def test_rdzv_dashboard_in_python_reads_the_variables(written_run, unique, monkeypatch):
    import rdzv

    for name, value in written_run.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("RDZV_NNODES", "2:3")
    board = rdzv.dashboard()
    try:
        target = board.monitor.target
        assert (target.endpoint, target.prefix, target.api) == (written_run["RDZV_ENDPOINT"], f"/{unique}", "v3")
        assert board.run_id == "job" and board.settings.max_nodes == 3
        assert rdzv.dashboard(run_id="chosen").run_id == "chosen"  # the argument wins
    finally:
        board.monitor.stop()

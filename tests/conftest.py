"""Shared fixtures: one real etcd per test session (v2 and v3 APIs both on), and
KV clients on either API. Tests isolate themselves with unique key prefixes."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import pytest

from rdzv.etcd_process import RUN_DIR_PREFIX
from rdzv.server import EtcdServer

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))


def _etcd_pids() -> set[int]:
    found = subprocess.run(["pgrep", "-x", "etcd"], capture_output=True, text=True)
    return {int(pid) for pid in found.stdout.split()}


def _run_dirs() -> set[Path]:
    return set(Path(tempfile.gettempdir()).glob(RUN_DIR_PREFIX + "*"))


@pytest.fixture(scope="session", autouse=True)
def no_leftovers():
    """Fail the session if it leaves an etcd process or an etcd run directory behind
    (torn down last: every other session fixture has stopped its etcd by then)."""
    pids_before, dirs_before = _etcd_pids(), _run_dirs()
    yield
    deadline = time.monotonic() + 10  # a parent-death signal may still be on its way
    while (left := _etcd_pids() - pids_before) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not left, f"the tests left etcd processes running: {sorted(left)}"
    dirs = _run_dirs() - dirs_before
    assert not dirs, f"the tests left etcd run directories: {sorted(map(str, dirs))}"


@pytest.fixture(scope="session")
def etcd_server():
    """A throwaway etcd 3.5 serving both the v2 and v3 APIs."""
    with EtcdServer(enable_v2=True) as server:
        yield server


@pytest.fixture(params=["v2", "v3"])
def api(request) -> str:
    return request.param


@pytest.fixture
def kv(etcd_server, api):
    client = etcd_server.kv(api=api)
    yield client
    client.close()


@pytest.fixture
def unique() -> str:
    """A fresh name for keys, prefixes and run ids."""
    return "t" + uuid.uuid4().hex[:12]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def subprocess_env() -> dict[str, str]:
    """The environment for child Python processes: this checkout importable, no proxies."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH", "")]))
    env.pop("http_proxy", None)
    env.pop("HTTP_PROXY", None)
    return env


# -- the dashboard in a real headless Chromium (see browser_helpers) ----------------------


@pytest.fixture
def serve():
    """Start dashboards with ``serve(args, env=None)``; every one is stopped after the test."""
    from browser_helpers import ServedDashboard

    started: list[ServedDashboard] = []

    def start(args: list[str], env: dict[str, str] | None = None) -> ServedDashboard:
        started.append(ServedDashboard(args, env))
        return started[-1]

    yield start
    for dashboard in started:
        dashboard.stop()


@pytest.fixture(scope="module")
def browser():
    from browser_helpers import CHROMIUM, CHROMIUM_ARGS
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser):
    """A fresh page; a JavaScript dialog (alert, confirm) opened by it fails the test."""
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    tab = context.new_page()
    dialogs: list[str] = []
    tab.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    yield tab
    context.close()
    assert dialogs == [], f"the page opened dialogs: {dialogs}"

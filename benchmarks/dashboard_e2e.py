"""Dashboard end to end: from a state change in etcd to a real browser showing it.

``panel serve app/dashboard.py --args --endpoint E --run-id R`` in its own process group,
headless Chromium through Playwright. Each change writes the run's state (a torch pickle,
torch's etcd-v2 layout) with one more participant, ``bench-node-<i>``; the clock runs from
just before the write until that address is visible on the page. The median over several
changes is reported, as is the time for the first page to show the run.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .common import Bench, free_port, median, row, section, torch_state_b64, unique

TITLE = "dashboard: etcd change to browser"
ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run"]
TARGET_S = 1.0
WAIT_MS = 30_000


@contextmanager
def served_dashboard(endpoint: str, run_id: str) -> Iterator[str]:
    """The dashboard's URL while ``panel serve`` runs; the server's process group is killed after."""
    port = free_port()
    command = [sys.executable, "-m", "panel", "serve", str(ROOT / "app" / "dashboard.py"), "--port", str(port),
               "--address", "127.0.0.1", f"--allow-websocket-origin=127.0.0.1:{port}",
               "--args", "--endpoint", endpoint, "--run-id", run_id]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    for proxy in ("http_proxy", "HTTP_PROXY"):
        env.pop(proxy, None)
    process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               start_new_session=True)
    try:
        _wait_listening(process, port, timeout=60)
        yield f"http://127.0.0.1:{port}/dashboard"
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=10)
        process.stdout.close()


def _wait_listening(process: subprocess.Popen, port: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            output = process.stdout.read().decode(errors="replace")[-1500:]
            raise RuntimeError(f"panel serve exited with code {process.returncode}: {output}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.2)
    raise TimeoutError(f"panel serve did not listen on port {port} within {timeout:g} s")


def run(bench: Bench) -> dict:
    from playwright.sync_api import sync_playwright

    if not Path(CHROMIUM).exists():
        raise FileNotFoundError(f"{CHROMIUM} is missing; install Debian's chromium package")
    server = bench.require_server()
    changes = 3 if bench.quick else 10
    run_id = unique("bench-dash")
    key = f"/torch/elastic/rendezvous/{run_id}"
    kv = server.kv("v2")
    addresses = ["bench-base"]
    kv.put(key, torch_state_b64(addresses))
    latencies: list[float] = []
    try:
        with served_dashboard(bench.endpoint, run_id) as url, sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            try:
                page = browser.new_page(viewport={"width": 1400, "height": 1000})
                began = time.perf_counter()
                page.goto(url, timeout=WAIT_MS)
                page.get_by_text("bench-base", exact=True).first.wait_for(state="visible", timeout=WAIT_MS)
                first_paint = time.perf_counter() - began
                bench.log(f"  page showed the run after {first_paint:.2f} s; timing {changes} changes")
                for index in range(changes):
                    time.sleep(0.3)
                    addresses.append(f"bench-node-{index}")
                    text = torch_state_b64(addresses)
                    began = time.perf_counter()
                    kv.put(key, text)
                    page.get_by_text(addresses[-1], exact=True).first.wait_for(state="visible", timeout=WAIT_MS)
                    latencies.append(time.perf_counter() - began)
            finally:
                browser.close()
    finally:
        kv.close()
    latency = median(latencies)
    rows = [row("dashboard change-to-browser", "ms", latency * 1000, target=f"≤ {TARGET_S * 1000:g} ms median",
                met=latency <= TARGET_S,
                note=f"{changes} changes, max {max(latencies) * 1000:.0f} ms; first page {first_paint:.1f} s; "
                     "torch has no dashboard")]
    return section(TITLE, rows, {"latencies_s": latencies, "first_page_s": first_paint, "changes": changes})

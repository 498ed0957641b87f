"""Dashboard end to end: from a state change in etcd to a real browser showing it.

``panel serve app/dashboard.py --args --endpoint E --run-id R`` in its own process group,
headless Chromium through Playwright. Each change writes the run's state (a torch pickle,
torch's etcd-v2 layout) with one more participant, ``bench-node-<i>``; the clock runs from
just before the write until that address is visible on the page. The median over several
changes is reported, as is the time for the first page to show the run.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

from .common import Bench, median, row, section, torch_state_b64, unique
from .serving import DASHBOARD_APP, WAIT_MS, chromium, served_app

TITLE = "dashboard: etcd change to browser"
TARGET_S = 1.0


@contextmanager
def served_dashboard(endpoint: str, run_id: str) -> Iterator[str]:
    """The dashboard's URL while ``panel serve app/dashboard.py`` runs (see :func:`benchmarks.serving.served_app`)."""
    with served_app(DASHBOARD_APP, ["--endpoint", endpoint, "--run-id", run_id]) as served:
        yield served.url


def run(bench: Bench) -> dict:
    server = bench.require_server()
    changes = 3 if bench.quick else 10
    run_id = unique("bench-dash")
    key = f"/torch/elastic/rendezvous/{run_id}"
    kv = server.kv("v2")
    addresses = ["bench-base"]
    kv.put(key, torch_state_b64(addresses))
    latencies: list[float] = []
    try:
        with served_dashboard(bench.endpoint, run_id) as url, chromium() as browser:
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
        kv.close()
    latency = median(latencies)
    rows = [row("dashboard change-to-browser", "ms", latency * 1000, target=f"≤ {TARGET_S * 1000:g} ms median",
                met=latency <= TARGET_S,
                note=f"{changes} changes, max {max(latencies) * 1000:.0f} ms; first page {first_paint:.1f} s; "
                     "torch has no dashboard")]
    return section(TITLE, rows, {"latencies_s": latencies, "first_page_s": first_paint, "changes": changes})

"""A run's story read back from etcd (#14): backfill, the one-file report, and time travel.

Runs are written by the load generator (:mod:`rdzv.demo.load`: torch-format states through
rdzv's backend, every write a compare-and-swap, heartbeats with joins, leaves, crashes and
re-rendezvous mixed in), as fast as one writer goes, below a prefix of their own. Then:

* **backfill**: a :class:`rdzv.monitor.Monitor` started after the writes (history limit above
  the count), timed from ``start()`` until ``monitor.run(run)`` appears, which it does once
  every revision etcd still keeps was read back and decoded; and ``read_run_history`` (what
  ``rdzv history`` and ``rdzv report`` read), timed alone. Seconds and revisions per second.
  On v3 every revision is one range read at that revision. On v2 etcd keeps only the last
  1,000 events of the whole store, so at most that many revisions can be read back, whatever
  was written (the v2 runs write just past the window: writing more would change nothing).
* **report**: ``rdzv.report.render_report`` of that history: seconds, and the file's size.
* **time travel**: ``panel serve app/dashboard.py`` on the 100-node run, one Chromium page;
  each "◀ Previous change" click is timed in the page from the click to the moment the
  ``[data-role=as-of]`` text changed, and to the next animation frame (the repaint).

Sizes: 10,000 revisions of a 100-node run and 1,000 of a 1,000-node run (``--quick``: 1,000 and 200).
"""

from __future__ import annotations

import threading
import time
from datetime import datetime, timezone
from typing import Any

from .common import Bench, median, percentile, reason_of, row, section, unique

TITLE = "history: backfill from etcd, report, time travel"
TARGET_CLICK_MS = 200.0
V2_WINDOW = 1000
CHURN_PER_S = 20.0  # membership events a second while writing (joins, leaves, crashes)


def write_run(endpoint: str, api: str, prefix: str, run_id: str, nodes: int, revisions: int) -> Any:
    """Write ``revisions`` revisions of one run as fast as one writer goes; the generator's stats."""
    from rdzv.demo.load import LoadGenerator

    return LoadGenerator(endpoint, api=api, run_id=run_id, prefix=prefix, nodes=nodes, rate=float("inf"),
                         duration=3600, max_writes=revisions, churn=CHURN_PER_S, admit_after=1.0,
                         dead_after=2.0, keep_records=False, seed=len(run_id)).run()


def backfill(endpoint: str, api: str, prefix: str, run_id: str, revisions: int) -> dict[str, Any]:
    """A monitor started after the writes: seconds until it holds the run with its history read back."""
    from rdzv.monitor import Monitor

    monitor = Monitor(endpoint, prefix, api=api, history_limit=revisions + 1)
    arrived = threading.Event()
    unsubscribe = monitor.subscribe(lambda _version: monitor.run(run_id, api) is not None and arrived.set())
    began = time.perf_counter()
    monitor.start()
    try:
        if not arrived.wait(600):
            raise TimeoutError(f"the monitor did not show run {run_id} on {api} within 600 s")
        seconds = time.perf_counter() - began
        history = monitor.history(run_id, api)
    finally:
        unsubscribe()
        monitor.stop()
    read_back = [entry for entry in history if entry.read_back]
    return {"seconds": seconds, "entries": len(history), "read_back": len(read_back),
            "complete_from": history[0].complete_from if history else None,
            "estimated": sum(entry.time_estimated for entry in history)}


def read_history(endpoint: str, api: str, prefix: str, run_id: str, revisions: int) -> tuple[Any, float]:
    """``read_run_history`` of the run (what ``rdzv history`` and ``rdzv report`` read) and its seconds."""
    from rdzv.kv import Target
    from rdzv.monitor import read_run_history

    began = time.perf_counter()
    history = read_run_history(Target.of(endpoint, api=api, prefix=prefix), run_id, revisions + 1)
    return history, time.perf_counter() - began


def report(history: Any, source: str) -> tuple[float, int]:
    """Seconds to render the report of ``history``, and its size in bytes."""
    from rdzv.rendezvous_settings import RendezvousSettings
    from rdzv.report import render_report

    began = time.perf_counter()
    text = render_report(history, RendezvousSettings(), source=source, generated_at=datetime.now(timezone.utc))
    return time.perf_counter() - began, len(text.encode())


def time_travel(bench: Bench, prefix: str, run_id: str, clicks: int) -> dict[str, Any]:
    """Click "◀ Previous change" ``clicks`` times on a served page; ms per click to the changed label."""
    from .serving import CLICK_AND_WAIT_JS, DASHBOARD_APP, chromium, open_page, served_app

    args = ["--endpoint", bench.endpoint, "--run-id", run_id, "--prefix", prefix, "--api", "v3"]
    results: list[dict[str, Any]] = []
    with served_app(DASHBOARD_APP, args) as served, chromium() as browser:
        page, first_page = open_page(browser, served.url, run_id)
        # The run id shows before the monitor has listed and read back the runs (seconds for the
        # 1,000-node one); a click then has no history to step through. Wait for the run's nodes.
        page.get_by_text("participant", exact=True).first.wait_for(state="visible", timeout=120_000)
        page.wait_for_timeout(1500)  # let the first refreshes and the clock tick settle
        for _ in range(clicks):
            result = page.evaluate(CLICK_AND_WAIT_JS, ["◀ Previous change", "[data-role=as-of]", 5_000])
            if "error" in result:
                if len(results) >= 3 and result["error"] == "no change":
                    break  # the oldest change the page's history holds: nothing further back
                raise RuntimeError(f"time travel: {result['error']} after {len(results)} clicks")
            results.append(result)
            page.wait_for_timeout(150)
    changed = [result["ms"] for result in results]
    painted = [result["painted_ms"] for result in results]
    return {"ms": changed, "painted_ms": painted, "first_page_s": first_page,
            "labels": [result["after"] for result in results]}


def run(bench: Bench) -> dict:
    server = bench.require_server()
    cases = [(100, 1000), (1000, 200)] if bench.quick else [(100, 10_000), (1000, 1000)]
    clicks = 5 if bench.quick else 15
    prefix = "/" + unique("bench-history")
    rows: list[dict[str, Any]] = []
    breakdown: list[dict[str, Any]] = []
    data: dict[str, Any] = {"cases": {}, "v2_window": V2_WINDOW}
    written_keys: list[tuple[str, str]] = []
    travel_run = None
    try:
        for nodes, revisions in cases:
            for api in ("v3", "v2"):
                wanted = revisions if api == "v3" else min(revisions, V2_WINDOW)
                to_write = revisions if api == "v3" or revisions <= V2_WINDOW else V2_WINDOW + 50
                run_id = f"history-{nodes}-{api}"
                written_keys.append((api, f"{prefix}/rendezvous/{run_id}"))
                label = f"{revisions:,} revisions of a {nodes:,}-node run on {api}"
                try:
                    stats = write_run(bench.endpoint, api, prefix, run_id, nodes, to_write)
                    filled = backfill(bench.endpoint, api, prefix, run_id, wanted)
                    history, read_s = read_history(bench.endpoint, api, prefix, run_id, wanted)
                    report_s, report_bytes = report(history, f"etcd at {bench.endpoint} below {prefix}")
                except Exception as error:
                    rows.append({**row(f"backfill, {label}", "s", None), "status": "unavailable",
                                 "reason": reason_of(error)})
                    bench.log(f"  {label}: {reason_of(error)}")
                    continue
                if api == "v3" and nodes == 100:
                    travel_run = run_id
                kept = filled["entries"]
                per_s = kept / filled["seconds"]
                window = (f"; v2 keeps only the last {V2_WINDOW:,} events of the whole store: {to_write:,} written "
                          f"(writing more changes nothing), {kept:,} held, the story complete from revision "
                          f"{filled['complete_from']}") if filled["complete_from"] is not None else ""
                rows.append(row(f"backfill (Monitor started after), {label}", "s", filled["seconds"],
                                note=f"{per_s:,.0f} revisions/s; {kept:,} revisions held, {filled['read_back']:,} "
                                     f"marked read back, times estimated from the state{window}"))
                rows.append(row(f"read_run_history (rdzv history/report), {label}", "s", read_s,
                                note=f"{len(history.revisions) / read_s:,.0f} revisions/s"))
                rows.append(row(f"report (render_report), {label}", "s", report_s,
                                note=f"{report_bytes / 1e6:,.2f} MB file"))
                bench.log(f"  {label}: written at {stats.achieved_rate:.0f}/s; backfill {filled['seconds']:.2f} s "
                          f"({per_s:.0f}/s, {kept} held); read_run_history {read_s:.2f} s; report {report_s:.2f} s, "
                          f"{report_bytes / 1e6:.2f} MB")
                case = {"nodes": nodes, "api": api, "written": stats.writes, "write_rate": stats.achieved_rate,
                        "backfill_s": filled["seconds"], "backfill_per_s": per_s, "held": kept,
                        "complete_from": filled["complete_from"], "read_run_history_s": read_s,
                        "report_s": report_s, "report_mb": report_bytes / 1e6}
                data["cases"][f"{nodes}-{api}"] = case
                breakdown.append(case)
        if travel_run is None:
            rows.append({**row("time travel click to repainted page", "ms", None), "status": "unavailable",
                         "reason": "the 100-node v3 run was not written"})
        else:
            try:
                travel = time_travel(bench, prefix, travel_run, clicks)
            except Exception as error:
                rows.append({**row("time travel click to repainted page", "ms", None), "status": "unavailable",
                             "reason": reason_of(error)})
            else:
                painted = median(travel["painted_ms"])
                rows.append(row("time travel: '◀ Previous change' click to repainted page", "ms", painted,
                                target=f"≤ {TARGET_CLICK_MS:g} ms median", met=painted <= TARGET_CLICK_MS,
                                note=f"{len(travel['ms'])} clicks on the {cases[0][0]}-node run; to the changed label "
                                     f"{median(travel['ms']):.0f} ms median; p90 repainted "
                                     f"{percentile(travel['painted_ms'], 0.9):.0f} ms; first page "
                                     f"{travel['first_page_s']:.1f} s"))
                bench.log(f"  time travel: {painted:.0f} ms median click to repaint over {len(travel['ms'])} clicks")
                data["time_travel"] = travel
    finally:
        for api, key in written_keys:
            try:
                with server.kv(api) as kv:
                    kv.delete(key)
            except Exception as error:
                bench.log(f"  could not delete {key} on {api}: {reason_of(error)}")
    data["breakdown"] = breakdown
    return section(TITLE, rows, data)

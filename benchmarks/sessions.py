"""Dashboard sessions (#16 items 4 and 5): changes pushed to each session against the poll that
came before, and one server with 1, 10 and 50 sessions open on a 1,000-node load.

1. **Push vs poll**, etcd otherwise quiet: ``panel serve app/dashboard.py`` (each change of the
   monitor pushed to every session) and ``panel serve benchmarks/polling_app.py`` (the same
   page checking the monitor every 300 ms, as served pages did before), each following a run of
   its own prefix, one Chromium page each. Changes (one more participant each) alternate between
   the two, at irregular intervals; each is timed from etcd's acknowledgement of the write
   (``time.time()``) to the moment the page's Bokeh document held that revision (``Date.now()``
   in the page, recorded by a hook on the timeline's data source; painting follows within a frame).
2. **Many viewers**: one ``panel serve app/dashboard.py`` following a 1,000-node run written by
   the load generator (:mod:`rdzv.demo.load`, keep-alive 5 s: 200 writes/s asked, as many as one
   writer manages; ``--quick``: 20 writes/s) from a child process, with 1, 10 and 50 sessions
   open: one real Chromium page and lightweight sessions
   (:class:`benchmarks.serving.LightSessions`: the page's HTTP GET, then Bokeh's websocket
   protocol, pulling the document and reading every change pushed). For each count: the real
   page's change-to-browser lag p50/p99 (each write, until the page held it or a newer
   revision), the server process's CPU (``/proc/<pid>/stat``, in cores) and resident memory.
   Then, the load stopped and etcd quiet, the server's CPU with every session still open: while
   the nodes turn stale, and once every heartbeat has expired; in full mode also, once the
   lightweight sessions closed and Bokeh had time to discard them, its CPU
   with the one page left and its memory.

Each process's wait for a CPU (``/proc/<pid>/task/*/schedstat``) is recorded beside its CPU, to tell
a server that was idle from one that was starved on a busy machine.

``--quick``: fewer changes, 1 / 3 / 6 sessions, shorter windows, a lighter load.
"""

from __future__ import annotations

import os
import time
from typing import Any

from .common import (Bench, CpuMeter, cpu_seconds_of, descendants_cpu_seconds, percentile, reason_of, row, rss_mb,
                     runqueue_wait_seconds, section, unique)

TITLE = "dashboard sessions: push vs poll, many viewers on a 1,000-node load"
TARGET_PUSH_MS = 100.0  # #16: change-to-browser ≤ 100 ms median with one page
TARGET_LAG_S = 1.0
TARGET_CORES = 1.0
QUIET_TARGET_CORES = 0.05  # #16: 50 sessions, etcd quiet: the server's CPU "near zero"
LOAD_NODES = 1000
KEEP_ALIVE_S = 5.0
METRICS_PLUGIN = ["--plugins", "rdzv.ui.metrics_route"]
"""``panel serve``'s option that serves the dashboard server's own ``/metrics`` (its push delays)."""
# Bokeh discards a session unused for 15 s (--unused-session-lifetime), checking every 17 s
# (--check-unused-sessions): after this long every closed session is gone.
RELEASE_WAIT_S = 40.0
QUICK_RATE = 20.0  # --quick: writes/s of the load under the sessions (full: 200 asked, as fast as one writer goes)


def _state_text(nodes: int) -> str:
    from rdzv.demo.load import build_state, state_b64

    return state_b64(build_state(nodes, host="sessions")[0])


def push_vs_poll(bench: Bench, changes: int) -> dict[str, Any]:
    """Alternate ``changes`` changes between a pushing and a polling server; lags in seconds."""
    from contextlib import ExitStack

    from .serving import DASHBOARD_APP, POLLING_APP, chromium, open_page, served_app, take_seen, track_revisions

    kinds = {"push": DASHBOARD_APP, "poll": POLLING_APP}
    server = bench.require_server()
    kv = server.kv("v3")
    prefixes = {kind: "/" + unique(f"bench-{kind}") for kind in kinds}
    run_id = "viewed"
    keys = {kind: f"{prefix}/rendezvous/{run_id}" for kind, prefix in prefixes.items()}
    lags: dict[str, list[float]] = {kind: [] for kind in kinds}
    missed: dict[str, int] = {kind: 0 for kind in kinds}
    try:
        for key in keys.values():
            kv.put(key, _state_text(8))
        with ExitStack() as stack:
            browser = stack.enter_context(chromium())
            pages = {}
            for kind, app in kinds.items():
                served = stack.enter_context(served_app(app, ["--endpoint", bench.endpoint, "--run-id", run_id,
                                                             "--prefix", prefixes[kind], "--api", "v3"]))
                pages[kind], _ = open_page(browser, served.url, run_id)
                track_revisions(pages[kind])
            time.sleep(1.5)
            for kind in kinds:
                take_seen(pages[kind])
            for index in range(changes):
                for kind in kinds if index % 2 == 0 else reversed(list(kinds)):
                    time.sleep(0.2 + (index * 0.137) % 0.3)  # lands anywhere in a 300 ms poll period
                    written = kv.put(keys[kind], _state_text(9 + index))
                    at = time.time()
                    seen = _wait_for_revision(pages[kind], written.revision, timeout=10)
                    if seen is None:
                        missed[kind] += 1
                    else:
                        lags[kind].append(seen - at)
    finally:
        for key in keys.values():
            try:
                kv.delete(key)
            except Exception:
                pass
        kv.close()
    return {"lags_s": lags, "missed": missed}


def _wait_for_revision(page: Any, revision: int, timeout: float) -> float | None:
    """When (``time.time()``) the page's document held ``revision``, or ``None`` if not within ``timeout``."""
    from .serving import take_seen

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for seen, moment in take_seen(page):
            if seen >= revision:
                return moment
        time.sleep(0.02)
    return None


def many_viewers(bench: Bench, counts: list[int], window: float, rate: float, release_wait: float = 0.0
                 ) -> dict[str, Any]:
    """One server, one real page and lightweight sessions, on a 1,000-node load; per session count."""
    from rdzv.rendezvous_settings import RendezvousSettings
    from rdzv.ui.app import LOST_PUSH_WARNING

    from .load import ChildLoad
    from .serving import (DASHBOARD_APP, LightSessions, chromium, histogram_between, lags, open_page, served_app,
                          shown_lags, take_seen, track_revisions)

    prefix, run_id, api = "/" + unique("bench-sessions"), "crowd", "v3"
    phases: list[dict[str, Any]] = []
    args = ["--endpoint", bench.endpoint, "--run-id", run_id, "--prefix", prefix, "--api", api]
    light = None
    try:
        with served_app(DASHBOARD_APP, args, options=METRICS_PLUGIN) as served, chromium() as browser:
            load = ChildLoad(endpoint=bench.endpoint, api=api, run_id=run_id, prefix=prefix, nodes=LOAD_NODES,
                             keep_alive=KEEP_ALIVE_S, rate=rate, duration=3600, churn=0.5,
                             admit_after=2 * KEEP_ALIVE_S)
            with load:
                page, first_page = open_page(browser, served.url, run_id)
                track_revisions(page)
                light = LightSessions(served.url)
                for count in counts:
                    began, opened_before = time.monotonic(), len(light.opened)
                    light.open(count - 1 - len(light))
                    open_s = time.monotonic() - began
                    open_steps = _open_steps(light.opened[opened_before:])
                    time.sleep(1.0)
                    take_seen(page)
                    patches_before = sum(light.patches)
                    counted_before = served.serving_metrics()
                    cpu = CpuMeter(lambda: cpu_seconds_of(served.pid)).start()
                    starved = CpuMeter(lambda: runqueue_wait_seconds(served.pid)).start()
                    browser_cpu = CpuMeter(lambda: descendants_cpu_seconds(os.getpid(), "chrom")).start()
                    time.sleep(window)
                    cores, browser_cores, waited = cpu.read(), browser_cpu.read(), starved.read()
                    seen = take_seen(page)
                    counted = served.serving_metrics()
                    pushed = (sum(light.patches) - patches_before) / max(1, len(light)) / window
                    phases.append({"sessions": count, "seen": seen, "cpu_cores": cores, "browser_cores": browser_cores,
                                   "server_waited_for_cpu_s_per_s": waited,
                                   "rss_mb": rss_mb(served.pid),
                                   "open_s": open_s, "open_steps": open_steps, "light": len(light), "patches_per_light_session_per_s": pushed,
                                   "lost_pushes_so_far": served.count(LOST_PUSH_WARNING.split("%")[0]),
                                   **{f"server_{name}": histogram_between(counted_before[name], counted[name])
                                      for name in ("push_delay", "refresh")}})
                    bench.log(f"  {count} sessions: server {cores or 0:.2f} cores, {phases[-1]['rss_mb'] or 0:.0f} "
                              f"MB; {len(seen)} revisions reached the page in {window:g} s (opening took "
                              f"{open_s:.1f} s{_steps_text(open_steps)})")
                load.stop()
            # the generator has stopped: etcd is quiet from here
            stopped = time.monotonic()
            time.sleep(2.0)
            cpu = CpuMeter(lambda: cpu_seconds_of(served.pid)).start()
            time.sleep(window)
            quiet = {"sessions": counts[-1], "cpu_cores": cpu.read(), "rss_mb": rss_mb(served.pid)}
            # Then once every node's last heartbeat has expired: nothing left to change on any page.
            expiry = RendezvousSettings(keep_alive_interval=KEEP_ALIVE_S).heartbeat_expiry.total_seconds()
            time.sleep(max(0.0, stopped + expiry + 2.0 - time.monotonic()))
            cpu = CpuMeter(lambda: cpu_seconds_of(served.pid)).start()
            time.sleep(window)
            quiet["expired_cpu_cores"] = cpu.read()
            light.close()
            light = None
            if release_wait:  # Bokeh drops a closed session's document once it has been unused for a while
                time.sleep(release_wait)
                cpu = CpuMeter(lambda: cpu_seconds_of(served.pid)).start()
                time.sleep(window)
                quiet["one_session_cpu_cores"] = cpu.read()
            else:
                time.sleep(3.0)
            quiet["rss_after_light_closed_mb"] = rss_mb(served.pid)
            quiet["waited_after_close_s"] = release_wait or 3.0
            page.close()
    finally:
        if light is not None:
            light.close()
        try:
            with bench.require_server().kv(api) as kv:
                kv.delete(f"{prefix}/rendezvous/{run_id}")
        except Exception:
            pass
    for phase in phases:
        phase["lags_s"] = lags(phase["seen"], load.written)
        phase["lag_of_revisions_shown_s"] = shown_lags(phase.pop("seen"), load.written)
    return {"phases": phases, "quiet": quiet, "load": load.stats, "first_page_s": first_page}


def run(bench: Bench) -> dict:
    bench.require_server()
    rows: list[dict[str, Any]] = []
    data: dict[str, Any] = {}
    changes = 6 if bench.quick else 30
    try:
        result = push_vs_poll(bench, changes)
    except Exception as error:
        rows.append({**row("change-to-browser, push, 1 page", "ms", None), "status": "unavailable",
                     "reason": reason_of(error)})
    else:
        data["push_vs_poll"] = result
        push, poll = result["lags_s"]["push"], result["lags_s"]["poll"]
        stats = {kind: (percentile(values, 0.5), percentile(values, 0.99)) for kind, values in
                 (("push", push), ("poll", poll))}
        faster = stats["poll"][0] / stats["push"][0] if push and poll and stats["push"][0] > 0 else None
        rows.append(row("change-to-browser p50, 1 page, etcd quiet: push", "ms", _ms(stats["push"][0]),
                        target=f"≤ {TARGET_PUSH_MS:g} ms", met=stats["push"][0] is not None
                        and stats["push"][0] * 1000 <= TARGET_PUSH_MS,
                        note=f"{len(push)} changes (missed {result['missed']['push']}); poll p50 "
                             f"{_fmt(_ms(stats['poll'][0]))} ms, so push is {faster or 0:.1f}× faster"))
        rows.append(row("change-to-browser p99, 1 page, etcd quiet: push", "ms", _ms(stats["push"][1]),
                        note=f"poll p99 {_fmt(_ms(stats['poll'][1]))} ms"))
        rows.append(row("change-to-browser p50, 1 page, etcd quiet: poll every 300 ms (before push)", "ms",
                        _ms(stats["poll"][0]), note=f"{len(poll)} changes (missed {result['missed']['poll']}); "
                                                    "benchmarks/polling_app.py, side by side with push"))
        bench.log(f"  push p50 {_fmt(_ms(stats['push'][0]))} ms p99 {_fmt(_ms(stats['push'][1]))} ms; "
                  f"poll p50 {_fmt(_ms(stats['poll'][0]))} ms p99 {_fmt(_ms(stats['poll'][1]))} ms")

    counts = [1, 3, 6] if bench.quick else [1, 10, 50]
    window = 3.0 if bench.quick else 20.0
    try:
        crowd = many_viewers(bench, counts, window, rate=QUICK_RATE if bench.quick else LOAD_NODES / KEEP_ALIVE_S,
                             release_wait=0.0 if bench.quick else RELEASE_WAIT_S)
    except Exception as error:
        rows.append({**row("sessions on a 1,000-node load", "ms", None), "status": "unavailable",
                     "reason": reason_of(error)})
        return section(TITLE, rows, data)
    data["many_viewers"] = crowd
    load = crowd["load"]
    rate = load.get("achieved_rate", 0.0)
    breakdown = []
    for phase in crowd["phases"]:
        n, lag = phase["sessions"], phase["lags_s"]
        p50, p99 = percentile(lag, 0.5), percentile(lag, 0.99)
        what = f"{n} session{'s' if n > 1 else ''}, {LOAD_NODES:,}-node load"
        rows.append(row(f"change-to-browser p50, {what}", "ms", _ms(p50),
                        note=f"each write, until the real page held it or a newer revision; the page received "
                             f"{len(phase['lag_of_revisions_shown_s'])} revisions in {window:g} s; load {rate:.0f} "
                             f"writes/s; 1 Chromium page + {phase['light']} lightweight sessions"))
        rows.append(row(f"change-to-browser p99, {what}", "ms", _ms(p99), target=f"≤ {TARGET_LAG_S * 1000:g} ms",
                        met=p99 is not None and p99 <= TARGET_LAG_S))
        rows.append(row(f"dashboard server CPU, {what}", "cores", phase["cpu_cores"] or 0.0,
                        target=f"≤ {TARGET_CORES:g} core", met=phase["cpu_cores"] is not None
                        and phase["cpu_cores"] <= TARGET_CORES,
                        note=f"each lightweight session received {phase['patches_per_light_session_per_s']:.1f} "
                             f"pushed changes a second{_per_message_text(phase, n)}; the real page's Chromium used "
                             f"{phase['browser_cores'] or 0:.2f} cores; the server waited for a CPU "
                             f"{phase['server_waited_for_cpu_s_per_s'] or 0:.2f} s a second"))
        rows.append(row(f"dashboard server memory, {what}", "MB", phase["rss_mb"] or 0.0,
                        note=f"opening the sessions took {phase['open_s']:.1f} s{_steps_text(phase['open_steps'])}; "
                             "pushes lost so far (the server's "
                             f"warning: a refresh shown by the clock instead): {phase['lost_pushes_so_far']}"))
        delay, refresh = phase["server_push_delay"], phase["server_refresh"]
        rows.append(row(f"dashboard server: a refresh's wait for the loop, mean, {what}", "ms", _ms(delay["mean_s"]),
                        note=f"the server's own rdzv_dashboard_push_delay_seconds over the window ({delay['count']:.0f} "
                             f"refreshes, all sessions together): median under {_bound(delay['p50_under_s'])}, 99th "
                             f"percentile under {_bound(delay['p99_under_s'])}; a refresh itself took "
                             f"{_fmt(_ms(refresh['mean_s']))} ms on average (99th percentile under "
                             f"{_bound(refresh['p99_under_s'])}); the rest of the page's lag is the write to the page, "
                             "the browser, and the monitor's own"))
        breakdown.append({"sessions": n, "revisions_at_page": len(phase["lag_of_revisions_shown_s"]),
                          "lag_p50_ms": _ms(p50), "lag_p99_ms": _ms(p99),
                          "server_cores": phase["cpu_cores"],
                          "server_cpu_wait_s_s": phase["server_waited_for_cpu_s_per_s"],
                          "browser_cores": phase["browser_cores"],
                          "server_rss_mb": phase["rss_mb"],
                          "pushes_per_light_session_s": phase["patches_per_light_session_per_s"],
                          "server_ms_per_message": _ms_per_message(phase, n),
                          "open_s": phase["open_s"], "lost_pushes_so_far": phase["lost_pushes_so_far"],
                          "server_push_delay_mean_ms": _ms(delay["mean_s"]),
                          "server_push_delay_p99_under_ms": _ms(delay["p99_under_s"]) if delay["p99_under_s"] != float("inf")
                          else None,
                          "server_refresh_mean_ms": _ms(refresh["mean_s"])})
    quiet = crowd["quiet"]
    rows.append(row(f"dashboard server CPU, {quiet['sessions']} sessions, etcd quiet: the first {window:g} s",
                    "cores", quiet["cpu_cores"] or 0.0,
                    note=f"from 2 s after the load stopped: the sessions catch up and the {LOAD_NODES:,} nodes "
                         f"turn stale one after another (each page is sent each change); RSS "
                         f"{quiet['rss_mb'] or 0:.0f} MB; {quiet['rss_after_light_closed_mb'] or 0:.0f} MB "
                         f"{quiet['waited_after_close_s']:g} s after the lightweight sessions closed"))
    if quiet.get("expired_cpu_cores") is not None:
        rows.append(row(f"dashboard server CPU, {quiet['sessions']} sessions, etcd quiet, every heartbeat expired",
                        "cores", quiet["expired_cpu_cores"], target="≈ 0 (≤ 0.05)",
                        met=quiet["expired_cpu_cores"] <= QUIET_TARGET_CORES,
                        note="the next 20 s: nothing changes but the clock (the page counts the tables' ages and "
                             "the findings' durations and countdowns itself)"))
    if quiet.get("one_session_cpu_cores") is not None:
        closed = quiet["sessions"] - 1
        if quiet.get("expired_cpu_cores") is not None and max(
                quiet["one_session_cpu_cores"], quiet["expired_cpu_cores"]) <= QUIET_TARGET_CORES:
            meaning = (f"both this and the row above are at the floor of one monitor and one page, so they cannot "
                       f"tell whether the {closed} closed sessions let go (tests/test_push.py checks that they do)")
        else:
            meaning = (f"the drop from the row above is what the {closed} closed sessions cost while open (no drop: "
                       "their callbacks outlived them)")
        rows.append(row(f"dashboard server CPU, 1 session left, etcd quiet ({quiet['waited_after_close_s']:g} s after "
                        "the others closed)", "cores", quiet["one_session_cpu_cores"], note=meaning))
    data["breakdown"] = breakdown
    return section(TITLE, rows, data)


def _ms_per_message(phase: dict[str, Any], sessions: int) -> float | None:
    """The server's CPU per message it sent to a session (every session taken to receive as many
    as a lightweight one), in ms: what one more viewer costs the server per change."""
    messages = phase["patches_per_light_session_per_s"] * sessions
    return phase["cpu_cores"] * 1000 / messages if phase["light"] and messages and phase["cpu_cores"] else None


def _per_message_text(phase: dict[str, Any], sessions: int) -> str:
    per_message = _ms_per_message(phase, sessions)
    return "" if per_message is None else f" ({per_message:.1f} ms of server CPU per message to a session)"


def _open_steps(opened: list[dict[str, float]]) -> dict[str, tuple[float, float]]:
    """Each step of opening a session: (median, longest) seconds over the sessions ``opened``."""
    names = dict.fromkeys(name for steps in opened for name in steps)
    return {name: (percentile([steps[name] for steps in opened if name in steps], 0.5),
                   max(steps.get(name, 0.0) for steps in opened)) for name in names}


def _steps_text(steps: dict[str, tuple[float, float]]) -> str:
    if not steps:
        return ""
    return "; each one's " + ", ".join(f"{name} {p50:.1f} s (longest {longest:.1f} s)"
                                       for name, (p50, longest) in steps.items())


def _bound(seconds: float | None) -> str:
    """A histogram bucket's upper bound, as the report says it."""
    if seconds is None:
        return "(none counted)"
    return "its last bound" if seconds == float("inf") else f"{seconds * 1000:g} ms"


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else seconds * 1000


def _fmt(value: float | None) -> str:
    return "—" if value is None else f"{value:.0f}"

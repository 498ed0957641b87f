"""What watching a run costs etcd: requests per second per viewer.

etcd requests per second made by the monitor of one run while a writer heartbeats it
(10 writes/s), with 1 session and with 10 sessions (10 ``get_monitor`` calls, 10
subscribers), read from the monitor's ``requests`` counter. (What each revision costs the
monitor to decode and diff is the ``decode`` section.)
"""

from __future__ import annotations

import threading
import time
from typing import Any

from .common import Bench, etcd_requests, reason_of, row, section, torch_state_b64, unique

TITLE = "monitor: etcd requests per viewer"
SESSIONS = 10
WRITES_PER_S = 10
SHARED_TOLERANCE = 1.25  # "10 sessions cost etcd what 1 does", allowing for timing noise
_EIGHT_NODES = [f"worker-{index}" for index in range(8)]


class Heartbeater:
    """A thread rewriting one run's state ``WRITES_PER_S`` times a second, as heartbeats do."""

    def __init__(self, kv: Any, key: str) -> None:
        self.kv, self.key = kv, key
        self.writes = 0
        self._texts = [torch_state_b64(_EIGHT_NODES, heartbeat_of=i) for i in range(len(_EIGHT_NODES))]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="bench-heartbeater")

    def __enter__(self) -> Heartbeater:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        while not self._stop.wait(1 / WRITES_PER_S):
            self.kv.put(self.key, self._texts[self.writes % len(self._texts)])
            self.writes += 1


def requests_per_second(bench: Bench, sessions: int, window_s: float) -> dict[str, Any]:
    """Requests/s the monitor(s) of a fresh prefix make while one run heartbeats, with ``sessions`` viewers."""
    from rdzv.monitor import get_monitor

    server = bench.require_server()
    prefix = "/" + unique("bench-monitor")
    kv = server.kv("v2")
    key = f"{prefix}/rendezvous/bench-run"
    kv.put(key, torch_state_b64(_EIGHT_NODES))
    monitors = [get_monitor(bench.endpoint, prefix=prefix) for _ in range(sessions)]
    distinct = list({id(m): m for m in monitors}.values())
    notified = [0] * sessions
    unsubscribes = [monitor.subscribe(lambda version, i=i: notified.__setitem__(i, notified[i] + 1))
                    for i, monitor in enumerate(monitors)]
    try:
        deadline = time.monotonic() + 10
        while any(m.run("bench-run") is None for m in distinct):
            if time.monotonic() > deadline:
                raise TimeoutError("the monitor did not discover the run within 10 s")
            time.sleep(0.05)
        with Heartbeater(kv, key) as writer:
            time.sleep(1)  # settle into the watch loop
            requests_before = sum(m.requests for m in distinct)
            served_before = etcd_requests(bench.endpoint)
            writes_before = writer.writes
            began = time.perf_counter()
            time.sleep(window_s)
            requests = sum(m.requests for m in distinct) - requests_before
            served = etcd_requests(bench.endpoint) - served_before
            elapsed = time.perf_counter() - began
            writes = writer.writes - writes_before
        return {"sessions": sessions, "monitors": len(distinct), "requests_per_s": requests / elapsed,
                "etcd_served_per_s_excluding_writes": (served - writes) / elapsed,
                "writes_per_s": writes / elapsed, "requests": requests, "window_s": elapsed,
                "every_subscriber_notified": all(count > 0 for count in notified), "apis": list(distinct[0].apis)}
    finally:
        for unsubscribe in unsubscribes:
            unsubscribe()
        for monitor in distinct:
            monitor.stop()
        kv.close()


def run(bench: Bench) -> dict:
    rows: list[dict[str, Any]] = []
    data: dict[str, Any] = {}
    window = 3 if bench.quick else 10
    try:
        one = requests_per_second(bench, 1, window)
        many = requests_per_second(bench, SESSIONS, window)
    except Exception as error:
        reason = reason_of(error)
        rows.append({**row("monitor etcd requests/s, 10 sessions ÷ 1", "×", None), "status": "unavailable",
                     "reason": reason})
        data["requests_unavailable"] = reason
        return section(TITLE, rows, data)
    factor = many["requests_per_s"] / one["requests_per_s"] if one["requests_per_s"] else None
    rows.append(row("monitor etcd requests/s, 1 session", "req/s", one["requests_per_s"],
                    note=f"while the run is written {one['writes_per_s']:.1f}×/s; APIs followed: {one['apis']}; "
                         f"etcd itself counted {one['etcd_served_per_s_excluding_writes']:.1f} req/s besides the writes"))
    rows.append(row(f"monitor etcd requests/s, {SESSIONS} sessions", "req/s", many["requests_per_s"],
                    note=f"{many['monitors']} monitor(s) for {SESSIONS} get_monitor calls; every subscriber "
                         f"notified: {str(many['every_subscriber_notified']).lower()}; etcd itself counted "
                         f"{many['etcd_served_per_s_excluding_writes']:.1f} req/s besides the writes"))
    rows.append(row(f"monitor etcd cost, {SESSIONS} sessions ÷ 1", "×", factor, target="≈ 1 (≤ 1.25)",
                    met=factor is not None and factor <= SHARED_TOLERANCE and many["every_subscriber_notified"]))
    data["requests"] = {"1": one, str(SESSIONS): many}
    return section(TITLE, rows, data)

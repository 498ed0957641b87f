"""How the dashboard's server keeps up with its pages, as Prometheus metrics on its ``/metrics``.

When many people watch a busy run, one server process can fall behind: every open page is
refreshed on the server's one event loop. These metrics say whether it has, and where the time
goes, so that an operator knows when to serve from more processes (``--num-procs``):

``rdzv_dashboard_sessions``               the pages this process serves now;
``rdzv_dashboard_push_delay_seconds``     from the monitor telling a page of a change to that
                                          page's refresh starting on the loop (time spent waiting
                                          for the loop and the page's document); for a change
                                          that came after the frame of the page's last refresh,
                                          from when that frame was taken (see ``rdzv.ui.app``);
``rdzv_dashboard_refresh_seconds``        one page's refresh, its message to the page included;
``rdzv_dashboard_lost_pushes_total``      refreshes that never ran and that the page's clock did.

They are this process's own: with ``--num-procs N`` each scrape is answered by one process.
Nothing here imports Panel or prometheus_client until a scrape asks for the collector.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator

from ..monitor import Durations

__all__ = ["SERVING", "ServingMetrics", "serving_collector"]

PUSH_DELAY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
REFRESH_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class ServingMetrics:
    """The counts of one server process, told by each served page (:class:`rdzv.ui.app.Dashboard`).
    Safe from any thread; what :meth:`read` returns is a consistent copy."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._sessions = 0
        self._lost = 0
        self._push_delay = Durations(PUSH_DELAY_BUCKETS)
        self._refresh = Durations(REFRESH_BUCKETS)

    def session_opened(self) -> None:
        with self._lock:
            self._sessions += 1

    def session_closed(self) -> None:
        with self._lock:
            self._sessions -= 1

    def pushed(self, delay_seconds: float, refresh_seconds: float) -> None:
        """A page's refresh for a change ran ``delay_seconds`` after the monitor told the page,
        and took ``refresh_seconds``."""
        with self._lock:
            self._push_delay.observe(max(0.0, delay_seconds))
            self._refresh.observe(max(0.0, refresh_seconds))

    def push_lost(self) -> None:
        with self._lock:
            self._lost += 1

    def read(self) -> dict:
        """``sessions``, ``lost_pushes``, and per histogram (``push_delay``, ``refresh``) its
        cumulative ``buckets``, ``count`` and ``sum``."""
        with self._lock:
            histograms = {name: dict(zip(("buckets", "count", "sum"), durations.buckets(), strict=True))
                          for name, durations in (("push_delay", self._push_delay), ("refresh", self._refresh))}
            return {"sessions": self._sessions, "lost_pushes": self._lost, **histograms}


SERVING = ServingMetrics()
"""This process's: every served dashboard page reports here."""


def serving_collector(metrics: ServingMetrics = SERVING):
    """A ``prometheus_client`` collector of ``metrics`` (register it in a registry)."""
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
    from prometheus_client.registry import Collector

    class ServingCollector(Collector):
        def collect(self) -> Iterator:
            read = metrics.read()
            yield GaugeMetricFamily("rdzv_dashboard_sessions", "Dashboard pages this server process serves now.",
                                    value=read["sessions"])
            yield CounterMetricFamily("rdzv_dashboard_lost_pushes",
                                      "Page refreshes for a change that never ran (the page's clock showed the "
                                      "change instead).", value=read["lost_pushes"])
            for name, text in (
                    ("push_delay", "Seconds from the monitor telling a page of a change to the page's refresh "
                                   "starting on the server's event loop."),
                    ("refresh", "Seconds one page's refresh took on the server's event loop, its message to the "
                                "page included.")):
                yield HistogramMetricFamily(f"rdzv_dashboard_{name}_seconds", text,
                                            buckets=read[name]["buckets"], sum_value=read[name]["sum"])

    return ServingCollector()

"""Prometheus metrics of the runs a monitor follows, computed at each scrape from the monitor
(never from etcd): the same facts the dashboard shows, in Prometheus' conventions.

:class:`MonitorCollector` is a ``prometheus_client`` custom collector; register it in a
``CollectorRegistry`` (``rdzv exporter`` and the dashboard's ``/metrics`` do). Label values come
from etcd (run ids, node names): ``prometheus_client`` escapes them in the exposition format, so
any text is safe there.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

from .monitor import Monitor, diagnose_view, estimated_write_time
from .nodes import node_rows
from .rendezvous_settings import RendezvousSettings
from .text import utc_now

RUN = ["run_id", "api"]


class MonitorCollector(Collector):
    """The metrics of every monitor ``monitors()`` returns, read at collection time.

    ``settings`` are what the viewer was told of the runs (torchrun's flags); each run's
    published settings win (:meth:`Monitor.settings`), as in the dashboard.
    """

    def __init__(self, monitors: Callable[[], list[Monitor]], settings: RendezvousSettings | None = None) -> None:
        self._monitors = monitors
        self._settings = settings or RendezvousSettings()

    def collect(self) -> Iterator:
        now = utc_now()
        gauges = {name: GaugeMetricFamily(f"rdzv_run_{name}", text, labels=RUN) for name, text in (
            ("round", "The run's rendezvous round."),
            ("participants", "Participants of the current round."),
            ("waiting_nodes", "Nodes on the wait list (they join the next round)."),
            ("redundant_nodes", "Nodes on the redundancy list (idle: max_nodes reached)."),
            ("complete", "1 when the current round is complete."),
            ("closed", "1 when the run is closed (new agents fail with RendezvousClosedError)."),
            ("state_bytes", "Size of the stored state value (base64 text) in bytes."),
            ("deadline_seconds", "Seconds until the last-call deadline of a forming round (negative: passed)."),
        )}
        seen = CounterMetricFamily("rdzv_run_revisions_seen", "Revisions of the run's state the monitor saw.",
                                   labels=RUN)
        skipped = CounterMetricFamily("rdzv_run_revisions_skipped",
                                      "Revisions the monitor folded into a newer one without decoding them (it was "
                                      "behind).", labels=RUN)
        findings = GaugeMetricFamily("rdzv_run_finding", "1 for each diagnosis finding the run has now.",
                                     labels=[*RUN, "code", "severity"])
        age = GaugeMetricFamily("rdzv_node_heartbeat_age_seconds", "Seconds since the node's last heartbeat.",
                                labels=[*RUN, "node", "list"])
        stale = GaugeMetricFamily("rdzv_node_stale", "1 when the node's heartbeat is older than keep_alive_interval "
                                  "x keep_alive_max_attempt (torch drops it).", labels=[*RUN, "node", "list"])
        connected = GaugeMetricFamily("rdzv_monitor_connected", "1 while the monitor reaches etcd.",
                                      labels=["endpoint", "prefix"])
        lag = GaugeMetricFamily("rdzv_monitor_lag_seconds", "Seconds between a state's newest heartbeat and the "
                                "monitor seeing that state, for the newest revision of each run.", labels=RUN)
        decode = HistogramMetricFamily("rdzv_monitor_decode_seconds", "Time to decode one state revision.",
                                       labels=["endpoint", "prefix"])
        for monitor in self._monitors():
            where = [monitor.endpoint, monitor.prefix or "/"]
            connected.add_metric(where, 1.0 if monitor.connection.state in ("connected", "recovered") else 0.0)
            buckets, _count, total = monitor.decode_times.buckets()
            decode.add_metric(where, buckets, total)
            for run in monitor.runs().values():
                labels = [run.run_id, run.api]
                revisions, folded = monitor.revisions_seen(run.run_id, run.api)
                seen.add_metric(labels, revisions)
                skipped.add_metric(labels, folded)
                settings = monitor.settings(run.run_id, self._settings, run.api)
                # The run as read above, not the monitor's newest: one scrape tells one state.
                for finding in diagnose_view(run, settings, now):
                    findings.add_metric([*labels, finding.code, finding.severity], 1.0)
                history = monitor.history(run.run_id, run.api)
                if history:
                    gauges["state_bytes"].add_metric(labels, history[-1].size)
                snap = run.snapshot
                if snap is None:
                    continue
                written = estimated_write_time(snap)
                if written is not None:
                    lag.add_metric(labels, max(0.0, (run.updated_at - written).total_seconds()))
                for name, value in (("round", snap.round), ("participants", len(snap.participants)),
                                    ("waiting_nodes", len(snap.wait_list)),
                                    ("redundant_nodes", len(snap.redundancy_list)),
                                    ("complete", int(snap.complete)), ("closed", int(snap.closed))):
                    gauges[name].add_metric(labels, value)
                if snap.deadline is not None and not snap.complete:
                    gauges["deadline_seconds"].add_metric(labels, (snap.deadline - now).total_seconds())
                for row in node_rows(snap, settings, now):
                    node = [*labels, str(row.node), row.list]
                    if row.heartbeat_age is not None:
                        age.add_metric(node, row.heartbeat_age.total_seconds())
                    stale.add_metric(node, int(row.stale))
        yield from gauges.values()
        yield from (seen, skipped, findings, age, stale, connected, lag, decode)

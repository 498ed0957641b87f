"""rdzv.monitor: one shared watcher per etcd and prefix, for every viewer of its rendezvous runs.

``get_monitor(endpoint)`` returns the process's started :class:`Monitor` for those settings;
it discovers runs below ``<prefix>/rendezvous/``, keeps a bounded history of decoded
revisions with their diffs, decodes the job store below ``<prefix>/store/``, and reports
whether etcd is reachable. ``monitor.frame()`` holds what it published at one version, for
viewers that must see one state while it moves on (a :class:`FrameReader` reads the frame it was
last moved to). No torch, panel or bokeh import.
"""

from __future__ import annotations

from .describe import ESTIMATE_MARK, change_sentences, revision_kind, revision_time
from .export import export_revisions
from .history import estimated_write_time
from .stats import DECODE_BUCKETS, DecodeTimes, Durations
from .model import ConnectionStatus, Revision, RunView, StoreItem, diagnose_view, entry_at
from .frame import FrameReader, MonitorFrame
from .monitor import Monitor
from .read_history import RunHistory, RunNotFoundError, history_of, read_run_history
from .replay import ReplayMonitor, replay
from .registry import get_monitor, shared_monitors, stop_monitors

__all__ = [
    "DECODE_BUCKETS",
    "DecodeTimes",
    "Durations",
    "estimated_write_time",
    "ESTIMATE_MARK",
    "change_sentences",
    "diagnose_view",
    "entry_at",
    "revision_kind",
    "revision_time",
    "ConnectionStatus",
    "FrameReader",
    "Monitor",
    "MonitorFrame",
    "Revision",
    "ReplayMonitor",
    "replay",
    "RunHistory",
    "RunNotFoundError",
    "read_run_history",
    "history_of",
    "RunView",
    "StoreItem",
    "export_revisions",
    "get_monitor",
    "shared_monitors",
    "stop_monitors",
]

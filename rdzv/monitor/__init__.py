"""rdzv.monitor: one shared watcher per etcd and prefix, for every viewer of its rendezvous runs.

``get_monitor(endpoint)`` returns the process's started :class:`Monitor` for those settings;
it discovers runs below ``<prefix>/rendezvous/``, keeps a bounded history of decoded
revisions with their diffs, decodes the job store below ``<prefix>/store/``, and reports
whether etcd is reachable. No torch, panel or bokeh import.
"""

from __future__ import annotations

from .export import export_revisions
from .model import ConnectionStatus, Revision, RunView, StoreItem
from .monitor import Monitor
from .registry import get_monitor, shared_monitors

__all__ = [
    "ConnectionStatus",
    "Monitor",
    "Revision",
    "RunView",
    "StoreItem",
    "export_revisions",
    "get_monitor",
    "shared_monitors",
]

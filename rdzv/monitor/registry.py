"""One shared, started :class:`Monitor` per :class:`~rdzv.kv.Target` in a process."""

from __future__ import annotations

import threading
from typing import Any

from ..kv import Target
from .monitor import Monitor

_monitors: dict[Target, Monitor] = {}
_lock = threading.Lock()


def get_monitor(target: Target | str | None, prefix: str | None = None, *, history_limit: int = 500,
                **settings: Any) -> Monitor:
    """The started monitor of ``target`` (a :class:`~rdzv.kv.Target`, or an endpoint string
    with ``prefix`` and ``settings`` as :class:`Monitor` takes them), shared by every caller
    with an equal target (``api=None``: every API the server offers).

    Ten dashboard sessions calling this get one monitor and one set of watcher threads, so
    they cost etcd what one does. The first call's ``history_limit`` applies.
    :meth:`Monitor.stop` removes the monitor; the next call starts a new one.

    Raises ``ValueError`` (:class:`~rdzv.kv.TargetError`) for a bad setting or history limit.
    """
    if prefix is not None:
        settings["prefix"] = prefix
    key = Target.of(target, **settings)
    with _lock:
        monitor = _monitors.get(key)
        if monitor is None:
            monitor = Monitor(key, history_limit=history_limit)
            monitor._on_stop = lambda stopped: _forget(key, stopped)
            monitor.start()
            _monitors[key] = monitor
        return monitor


def stop_monitors(endpoint: Target | str) -> int:
    """Stop every shared monitor watching the etcd of ``endpoint`` (whatever its API or
    prefix), e.g. before that etcd is shut down; returns how many were stopped."""
    endpoints = Target.of(endpoint).endpoints
    with _lock:
        chosen = [monitor for target, monitor in _monitors.items() if target.endpoints == endpoints]
    for monitor in chosen:
        monitor.stop()
    return len(chosen)


def _forget(key: Target, monitor: Monitor) -> None:
    with _lock:
        if _monitors.get(key) is monitor:
            del _monitors[key]


def shared_monitors() -> list[Monitor]:
    """Every monitor :func:`get_monitor` handed out that is still running."""
    with _lock:
        return list(_monitors.values())

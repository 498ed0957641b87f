"""One shared, started :class:`Monitor` per etcd, prefix, API and TLS settings in a process."""

from __future__ import annotations

import threading

from ..kv import format_endpoints, parse_endpoints
from .keys import normalize_prefix
from .monitor import Monitor

_monitors: dict[tuple, Monitor] = {}
_lock = threading.Lock()


def get_monitor(
    endpoint: str,
    prefix: str = "/torch/elastic",
    *,
    api: str | None = None,
    protocol: str = "http",
    ssl_cert: str | None = None,
    ssl_cert_key: str | None = None,
    ca_cert: str | None = None,
    history_limit: int = 500,
    read_timeout: float = 5,
) -> Monitor:
    """The started monitor of ``endpoint`` below ``prefix``, shared by every caller with the same
    endpoint, prefix, ``api`` (``None``: every API the server offers) and TLS settings.

    Ten dashboard sessions calling this get one monitor and one set of watcher threads, so
    they cost etcd what one does. The first call's ``history_limit`` and ``read_timeout``
    apply. :meth:`Monitor.stop` removes the monitor; the next call starts a new one.

    Raises ``ValueError`` for a bad endpoint, API, protocol, history limit or timeout.
    """
    key = (
        format_endpoints(parse_endpoints(endpoint)), normalize_prefix(prefix), api,
        (protocol or "http").strip().lower(), ssl_cert, ssl_cert_key, ca_cert,
    )
    with _lock:
        monitor = _monitors.get(key)
        if monitor is None:
            monitor = Monitor(
                endpoint, prefix, api=api, protocol=protocol, ssl_cert=ssl_cert, ssl_cert_key=ssl_cert_key,
                ca_cert=ca_cert, history_limit=history_limit, read_timeout=read_timeout,
            )
            monitor._on_stop = lambda stopped: _forget(key, stopped)
            monitor.start()
            _monitors[key] = monitor
        return monitor


def _forget(key: tuple, monitor: Monitor) -> None:
    with _lock:
        if _monitors.get(key) is monitor:
            del _monitors[key]


def shared_monitors() -> list[Monitor]:
    """Every monitor :func:`get_monitor` handed out that is still running."""
    with _lock:
        return list(_monitors.values())

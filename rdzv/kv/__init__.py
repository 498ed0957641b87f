"""The key-value layer: one protocol (:class:`KV`), one implementation per etcd API.

Nothing else in rdzv talks to etcd. A :class:`Target` says where etcd is, which API,
prefix, protocol, TLS files and timeout to use, and connects; :func:`connect` is the
shortcut from an endpoint string. :class:`KeyLayout` says where runs and store keys live.
"""

from __future__ import annotations

from .base import KV, Event, KeyValue, KVCompactedError, KVError, KVUnavailableError, Listing, ReadBack, join_key
from .endpoints import DEFAULT_PORT, format_endpoints, parse_endpoints
from .layout import DEFAULT_PREFIX, KeyLayout, normalize_prefix
from .target import API_VERSIONS, DEFAULT_READ_TIMEOUT, Target, TargetError

__all__ = [
    "KV",
    "API_VERSIONS",
    "DEFAULT_PORT",
    "DEFAULT_PREFIX",
    "DEFAULT_READ_TIMEOUT",
    "KeyLayout",
    "Target",
    "TargetError",
    "normalize_prefix",
    "Event",
    "KeyValue",
    "KVCompactedError",
    "KVError",
    "KVUnavailableError",
    "Listing",
    "ReadBack",
    "as_kv",
    "connect",
    "format_endpoints",
    "join_key",
    "parse_endpoints",
]

def connect(
    endpoint: str | Target | None,
    api: str | None = None,
    *,
    read_timeout: float | None = None,
    protocol: str = "http",
    ssl_cert: str | None = None,
    ssl_cert_key: str | None = None,
    ca_cert: str | None = None,
) -> KV:
    """A :class:`KV` for ``endpoint`` (``"h1:2379,h2:2379"`` or a :class:`Target`) on etcd's
    ``api`` (``"v2"``, the default for a string, or ``"v3"``); sends no request.

    The settings are checked by :class:`Target`, the one place that knows their rules.

    Raises:
        TargetError: a bad endpoint, API, protocol, certificate file or timeout; the message says which.
    """
    if isinstance(endpoint, Target):
        return endpoint.connect(api, read_timeout=read_timeout)
    target = Target.of(endpoint, api=api or "v2", protocol=protocol, ssl_cert=ssl_cert,
                       ssl_cert_key=ssl_cert_key, ca_cert=ca_cert, read_timeout=read_timeout)
    return target.connect()


def as_kv(client: object) -> KV:
    """Accept either a :class:`KV` or a python-etcd ``etcd.Client`` (torch's drop-in case)."""
    if isinstance(client, KV):
        return client
    import etcd

    if isinstance(client, etcd.Client):
        from .v2 import EtcdV2

        return EtcdV2(client)
    raise TypeError(f"Expected an rdzv.kv.KV or an etcd.Client, got {type(client).__name__}.")

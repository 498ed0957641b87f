"""The key-value layer: one protocol (:class:`KV`), one implementation per etcd API.

Nothing else in rdzv talks to etcd. :func:`connect` builds a client from an
endpoint list and TLS settings; it sends no request.
"""

from __future__ import annotations

from .base import KV, Event, KeyValue, KVCompactedError, KVError, KVUnavailableError, Listing, join_key
from .endpoints import DEFAULT_PORT, format_endpoints, parse_endpoints

__all__ = [
    "KV",
    "API_VERSIONS",
    "DEFAULT_PORT",
    "Event",
    "KeyValue",
    "KVCompactedError",
    "KVError",
    "KVUnavailableError",
    "Listing",
    "as_kv",
    "connect",
    "format_endpoints",
    "join_key",
    "parse_endpoints",
]

API_VERSIONS = ("v2", "v3")


def connect(
    endpoint: str | None,
    api: str = "v2",
    *,
    read_timeout: float = 60,
    protocol: str = "http",
    ssl_cert: str | None = None,
    ssl_cert_key: str | None = None,
    ca_cert: str | None = None,
) -> KV:
    """A :class:`KV` for ``endpoint`` (``"h1:2379,h2:2379"``) on etcd's ``api`` (``"v2"`` or ``"v3"``).

    Raises:
        ValueError: a bad endpoint, API, protocol or timeout; the message says which.
    """
    endpoints = parse_endpoints(endpoint)
    if api not in API_VERSIONS:
        raise ValueError(f"The etcd API must be 'v2' or 'v3', not {api!r}.")
    protocol = (protocol or "http").strip().lower()
    if protocol not in ("http", "https"):
        raise ValueError("The protocol must be HTTP or HTTPS.")
    if read_timeout <= 0:
        raise ValueError("The read timeout must be a positive integer.")
    options = dict(
        read_timeout=read_timeout, protocol=protocol, ssl_cert=ssl_cert, ssl_cert_key=ssl_cert_key, ca_cert=ca_cert
    )
    if api == "v2":
        from .v2 import EtcdV2

        return EtcdV2.connect(endpoints, **options)
    from .v3 import EtcdV3

    return EtcdV3(endpoints=endpoints, **options)


def as_kv(client: object) -> KV:
    """Accept either a :class:`KV` or a python-etcd ``etcd.Client`` (torch's drop-in case)."""
    if isinstance(client, KV):
        return client
    import etcd

    if isinstance(client, etcd.Client):
        from .v2 import EtcdV2

        return EtcdV2(client)
    raise TypeError(f"Expected an rdzv.kv.KV or an etcd.Client, got {type(client).__name__}.")

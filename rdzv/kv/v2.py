"""The :class:`~rdzv.kv.base.KV` protocol on etcd's v2 API, over python-etcd.

One python-etcd client per etcd member; a request that cannot reach the
current member moves on to the next, and :class:`KVUnavailableError` is raised
only when every member has failed. Creating an :class:`EtcdV2` sends nothing.
"""

from __future__ import annotations

import http.client
import re
import socket
import threading
from collections.abc import Callable, Mapping, Sequence
from urllib.parse import quote_plus
from typing import TypeVar

import etcd
import urllib3
import urllib3.exceptions

from .base import KV, Event, KeyValue, KVCompactedError, KVError, KVUnavailableError, Listing
from .endpoints import format_endpoints
from .failures import ADVICE, describe_transport_failure
from .target import check_transport

_T = TypeVar("_T")

_DELETE_ACTIONS = frozenset({"delete", "expire", "compareAndDelete"})

# etcd answers the methods below handle themselves; any other error answer becomes a KVError.
_EXPECTED = (etcd.EtcdKeyNotFound, etcd.EtcdAlreadyExist, etcd.EtcdCompareFailed, etcd.EtcdEventIndexCleared)

# Failures that mean "this member did not answer"; python-etcd wraps most of them
# in EtcdConnectionFailed, but not every urllib3/http.client error on every path.
_UNREACHABLE = (
    etcd.EtcdConnectionFailed,
    urllib3.exceptions.HTTPError,
    http.client.HTTPException,
    socket.error,
)


class EtcdV2(KV):
    """etcd's v2 API. Build it from python-etcd clients (one per member, tried in order).

    ``EtcdV2(client)`` wraps an existing ``etcd.Client`` (torch's drop-in case);
    :meth:`connect` builds the clients from endpoints and TLS settings.
    """

    api = "v2"

    def __init__(self, clients: etcd.Client | Sequence[etcd.Client]) -> None:
        self._clients = [clients] if isinstance(clients, etcd.Client) else list(clients)
        if not self._clients:
            raise ValueError("EtcdV2 needs at least one etcd client.")
        self._current = 0
        self._lock = threading.Lock()
        self.endpoint = format_endpoints([(c.host, c.port) for c in self._clients])

    @classmethod
    def connect(
        cls,
        endpoints: Sequence[tuple[str, int]],
        *,
        read_timeout: float = 60,
        protocol: str = "http",
        ssl_cert: str | None = None,
        ssl_cert_key: str | None = None,
        ca_cert: str | None = None,
    ) -> EtcdV2:
        """Clients for each ``(host, port)`` member; no request is sent yet.

        Raises :class:`~rdzv.kv.target.TargetError` for settings that cannot work."""
        protocol = check_transport(protocol, read_timeout, ssl_cert, ssl_cert_key, ca_cert)
        cert: str | tuple[str, str] | None = (ssl_cert, ssl_cert_key) if ssl_cert and ssl_cert_key else ssl_cert
        clients = [
            etcd.Client(
                host=host,
                port=port,
                protocol=protocol,
                read_timeout=read_timeout,
                cert=cert,
                ca_cert=ca_cert,
                allow_reconnect=False,
            )
            for host, port in endpoints
        ]
        for client in clients:
            # urllib3 would otherwise retry three times, turning one read timeout into four and
            # delaying failover; moving to the next member is our retry.
            client.http.connection_pool_kw["retries"] = False
            _encode_forms_quickly(client.http)
        return cls(clients)

    @property
    def client(self) -> etcd.Client:
        """The python-etcd client of the member currently in use."""
        return self._clients[self._current]

    def _call(self, operation: Callable[[etcd.Client], _T]) -> _T:
        first = self._current
        last_error: BaseException | None = None
        for step in range(len(self._clients)):
            index = (first + step) % len(self._clients)
            try:
                result = operation(self._clients[index])
            except etcd.EtcdWatchTimedOut:
                raise
            except _UNREACHABLE as exc:
                last_error = exc
                continue
            except etcd.EtcdException as exc:
                if _is_not_found_page(exc):
                    raise KVError(
                        f"etcd at {self._clients[index].host}:{self._clients[index].port} does not serve the v2 API; "
                        "start it with --enable-v2 or use the v3 API (api='v3')."
                    ) from exc
                if isinstance(exc, _EXPECTED):
                    raise
                raise KVError(f"etcd at {self.endpoint} refused the request: {exc}.") from exc
            if index != self._current:
                with self._lock:
                    self._current = index
            return result
        reason = describe_transport_failure(last_error)
        raise KVUnavailableError(
            f"etcd at {self.endpoint} could not be reached ({reason}); {ADVICE}.",
            endpoint=self.endpoint, reason=reason, members={self.endpoint: reason},
        ) from last_error

    def get(self, key: str) -> KeyValue | None:
        found = self.get_or_revision(key)
        return found if isinstance(found, KeyValue) else None

    def get_or_revision(self, key: str) -> KeyValue | int:
        try:
            result = self._call(lambda c: c.read(key))
        except etcd.EtcdKeyNotFound as exc:
            return _error_index(exc)
        if result.dir:
            raise KVError(f"The etcd key '{key}' is a directory, not a value.")
        return _to_kv(result)

    def create(self, key: str, value: str, ttl: int | None = None) -> tuple[bool, KeyValue]:
        while True:
            try:
                return True, _to_kv(self._call(lambda c: c.write(key, value, ttl=ttl, prevExist=False)))
            except etcd.EtcdAlreadyExist:
                current = self.get(key)
                if current is not None:
                    return False, current

    def compare_and_swap(
        self, key: str, value: str, revision: int, ttl: int | None = None
    ) -> tuple[bool, KeyValue | None]:
        try:
            return True, _to_kv(self._call(lambda c: c.write(key, value, ttl=ttl, prevIndex=revision)))
        except etcd.EtcdCompareFailed:
            return False, self.get(key)
        except etcd.EtcdKeyNotFound:
            return False, None

    def put(self, key: str, value: str, ttl: int | None = None) -> KeyValue:
        return _to_kv(self._call(lambda c: c.write(key, value, ttl=ttl)))

    def delete(self, key: str) -> bool:
        try:
            self._call(lambda c: c.delete(key))
        except etcd.EtcdKeyNotFound:
            return False
        return True

    def list(self, prefix: str) -> Listing:
        directory = prefix.rstrip("/") or "/"
        try:
            result = self._call(lambda c: c.read(directory, recursive=True))
        except etcd.EtcdKeyNotFound as exc:
            return Listing((), _error_index(exc))
        below = directory.rstrip("/") + "/"
        items = tuple(
            _to_kv(node) for node in result.leaves if not node.dir and node.key.startswith(below)
        )
        return Listing(items, int(result.etcd_index))

    def watch(self, prefix: str, start_revision: int, timeout: float) -> list[Event]:
        key = prefix.rstrip("/") or "/"
        try:
            result = self._call(
                lambda c: c.watch(key, index=start_revision, timeout=max(timeout, 0.001), recursive=True)
            )
        except etcd.EtcdWatchTimedOut:
            return []
        except etcd.EtcdEventIndexCleared as exc:
            raise KVCompactedError(
                f"etcd at {self.endpoint} no longer keeps index {start_revision} (v2 keeps its last 1,000 events).",
                current_revision=_error_index(exc), oldest_revision=_oldest_index(exc),
            ) from exc
        if result.action in _DELETE_ACTIONS:
            return [Event("delete", result.key, None, int(result.modifiedIndex))]
        return [Event("put", result.key, result.value, int(result.modifiedIndex), created=result.action == "create")]

    def ping(self) -> str:
        return self._call(lambda c: c.api_execute("/version", c._MGET).data.decode())

    def close(self) -> None:
        for client in self._clients:
            client.http.clear()


_BASE64_TEXT = re.compile(r"[A-Za-z0-9+/=]*")


def form_body(fields: Mapping[str, object]) -> str:
    """``urllib.parse.urlencode(fields)``, exactly, in a fraction of its time for the values
    rdzv writes: base64 text (states, store values) needs only ``+``, ``/`` and ``=`` escaped,
    where ``urlencode`` looks up every character of a state of hundreds of kilobytes."""
    parts = []
    for name, value in fields.items():
        text = value if isinstance(value, str) else str(value)
        if _BASE64_TEXT.fullmatch(text):
            encoded = text.replace("+", "%2B").replace("/", "%2F").replace("=", "%3D")
        else:
            encoded = quote_plus(text)
        parts.append(f"{quote_plus(str(name))}={encoded}")
    return "&".join(parts)


def _encode_forms_quickly(pool: urllib3.PoolManager) -> None:
    """Make python-etcd's writes (``api_execute``: ``request_encode_body`` with
    ``encode_multipart=False``) encode their form body with :func:`form_body`."""
    encode = pool.request_encode_body

    def request_encode_body(method, url, fields=None, headers=None, encode_multipart=True, **kw):
        if encode_multipart or not fields:
            return encode(method, url, fields=fields, headers=headers, encode_multipart=encode_multipart, **kw)
        headers = dict(headers if headers is not None else pool.headers)
        headers["Content-Type"] = "application/x-www-form-urlencoded"
        return pool.urlopen(method, url, body=form_body(fields), headers=headers, **kw)

    pool.request_encode_body = request_encode_body


def _to_kv(result: etcd.EtcdResult) -> KeyValue:
    return KeyValue(result.key, result.value if result.value is not None else "", int(result.modifiedIndex))


def _error_index(exc: etcd.EtcdException) -> int:
    payload = exc.payload if isinstance(exc.payload, dict) else {}
    return int(payload.get("index", 0))


def _oldest_index(exc: etcd.EtcdException) -> int | None:
    """The oldest index etcd still keeps, from its "history has been cleared [oldest/asked]" cause."""
    payload = exc.payload if isinstance(exc.payload, dict) else {}
    found = re.search(r"\[(\d+)/\d+\]", str(payload.get("cause", "")))
    return int(found.group(1)) if found else None


def _is_not_found_page(exc: etcd.EtcdException) -> bool:
    payload = exc.payload if isinstance(exc.payload, dict) else {}
    return "errorCode" not in payload and "404 page not found" in str(payload.get("cause", ""))

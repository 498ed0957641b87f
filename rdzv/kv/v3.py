"""The :class:`~rdzv.kv.base.KV` protocol on etcd's v3 API, over its JSON gateway.

Every operation is one HTTP request to ``/v3/...`` on a pooled keep-alive
connection (see :mod:`rdzv.kv.v3_gateway`): create and compare-and-swap are a
single transaction whose failure branch reads the key, so a loser learns the
current value in the same round trip. TTLs are leases (see
:mod:`rdzv.kv.v3_lease`). A watch is one streaming request that is closed as
soon as it has events or its timeout passes.

Keys and values are text; bytes that are not UTF-8 (written by another
client) are carried through losslessly as surrogate escapes.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Callable, Sequence
from typing import Any

from .base import KV, Event, KeyValue, KVCompactedError, KVError, Listing, ReadBack
from .endpoints import parse_endpoints
from .v3_gateway import GRPC_NOT_FOUND, Gateway, GatewayError, Stream, StreamBroken
from .v3_lease import LeaseCache

#: etcd sends a watch's past events (and its "compacted" notice) from a loop that
#: runs every 100 ms, so a watch that starts in the past waits at least this long
#: for them, whatever its own timeout.
CATCH_UP_WAIT = 0.5


class EtcdV3(KV):
    """etcd's v3 API on one cluster, reached through any of its members.

    ``endpoints`` is a list of ``(host, port)`` members (or a ``"h1:2379,h2:2379"``
    string). Requests go to one member and move on to the next when it fails;
    :class:`~rdzv.kv.base.KVUnavailableError` is raised when none answered within
    ``read_timeout`` seconds. ``protocol="https"`` uses TLS, verified against
    ``ca_cert`` (or the system's CAs), with the client certificate
    ``ssl_cert``/``ssl_cert_key`` when given. Creating an ``EtcdV3`` sends nothing.
    """

    api = "v3"

    def __init__(
        self,
        endpoints: Sequence[tuple[str, int]] | str,
        *,
        read_timeout: float = 60,
        protocol: str = "http",
        ssl_cert: str | None = None,
        ssl_cert_key: str | None = None,
        ca_cert: str | None = None,
    ) -> None:
        if isinstance(endpoints, str):
            endpoints = parse_endpoints(endpoints)
        self._gateway = Gateway(
            endpoints,
            read_timeout=read_timeout,
            protocol=protocol,
            ssl_cert=ssl_cert,
            ssl_cert_key=ssl_cert_key,
            ca_cert=ca_cert,
        )
        self.endpoint = self._gateway.endpoint
        self.read_timeout = self._gateway.read_timeout
        self._leases = LeaseCache(self._grant_lease)

    # -- reads ----------------------------------------------------------------

    def get(self, key: str) -> KeyValue | None:
        found = self.get_or_revision(key)
        return found if isinstance(found, KeyValue) else None

    def get_or_revision(self, key: str) -> KeyValue | int:
        answer = self._gateway.post("/v3/kv/range", {"key": _encode(_key_bytes(key))})
        kvs = answer.get("kvs")
        return _to_kv(kvs[0]) if kvs else _revision(answer)

    def list(self, prefix: str) -> Listing:
        below = _directory(prefix)
        answer = self._gateway.post(
            "/v3/kv/range", {"key": _encode(below), "range_end": _encode(_range_end(below))}
        )
        return Listing(tuple(_to_kv(item) for item in answer.get("kvs", ())), _revision(answer))

    def read_back(self, key: str, before_revision: int, limit: int) -> ReadBack:
        """Walk back through the key's revisions, one range read at a past revision each, until
        the key did not exist (its history starts there), etcd compacted the revision away, or
        ``limit`` revisions are read. A deletion in between ends the walk like a creation does."""
        key_b = _key_bytes(key)
        found: list[Event] = []
        at, complete_from = before_revision - 1, None
        while at >= 1 and len(found) < limit:
            try:
                answer = self._gateway.post("/v3/kv/range", {"key": _encode(key_b), "revision": str(at)})
            except GatewayError as exc:
                if "compacted" not in exc.etcd_message:
                    raise
                complete_from = found[-1].revision if found else before_revision
                break
            kvs = answer.get("kvs")
            if not kvs:
                break
            item = _to_kv(kvs[0])
            found.append(Event("put", key, item.value, item.revision, created=int(kvs[0].get("version", 0)) == 1))
            if found[-1].created:
                break
            at = item.revision - 1
        found.reverse()
        limited = len(found) == limit and at >= 1 and not found[0].created and complete_from is None
        return ReadBack(tuple(found), complete_from, limited)

    def ping(self) -> str:
        version = self._gateway.get("/version").get("etcdserver")
        if not version:
            raise KVError(f"etcd at {self.endpoint} did not report its version; is this endpoint an etcd server?")
        return str(version)

    # -- writes ---------------------------------------------------------------

    def put(self, key: str, value: str, ttl: int | None = None) -> KeyValue:
        key_b = _key_bytes(key)
        answer = self._write(ttl, lambda lease: self._gateway.post("/v3/kv/put", _put(key_b, value, lease)))
        return KeyValue(key, value, _revision(answer))

    def create(self, key: str, value: str, ttl: int | None = None) -> tuple[bool, KeyValue]:
        key_b = _key_bytes(key)
        compare = {"target": "CREATE", "result": "EQUAL", "key": _encode(key_b), "create_revision": "0"}
        swapped, current = self._swap(key, key_b, value, compare, ttl)
        if current is None:
            raise KVError(f"etcd at {self.endpoint} neither created '{key}' nor returned its value.")
        return swapped, current

    def compare_and_swap(
        self, key: str, value: str, revision: int, ttl: int | None = None
    ) -> tuple[bool, KeyValue | None]:
        key_b = _key_bytes(key)
        compare = {"target": "MOD", "result": "EQUAL", "key": _encode(key_b), "mod_revision": str(int(revision))}
        return self._swap(key, key_b, value, compare, ttl)

    def delete(self, key: str) -> bool:
        answer = self._gateway.post("/v3/kv/deleterange", {"key": _encode(_key_bytes(key))})
        return int(answer.get("deleted", 0)) > 0

    # -- watch ----------------------------------------------------------------

    def watch(self, prefix: str, start_revision: int, timeout: float) -> list[Event]:
        if int(start_revision) < 1:
            raise ValueError(f"A watch starts at revision 1 or later, not {start_revision}.")
        deadline = time.monotonic() + max(0.0, timeout)
        key = prefix.rstrip("/").encode("utf-8", "surrogateescape") or b"/"
        below = _directory(prefix)
        request = {
            "create_request": {
                "key": _encode(key),
                # The key, everything below it, and the few siblings that sort
                # between the two (such as key + "-x"), which are filtered out here.
                "range_end": _encode(_range_end(below)),
                "start_revision": str(int(start_revision)),
            }
        }
        broken: StreamBroken | None = None
        for _ in range(len(self._gateway.endpoints)):
            stream, first = self._gateway.open_stream("/v3/watch", request)
            try:
                return self._read_events(stream, first, key, below, int(start_revision), deadline)
            except StreamBroken as exc:
                broken = exc
                self._gateway.skip_member(exc.member_index)
            finally:
                stream.close()
        assert broken is not None
        raise broken

    def close(self) -> None:
        self._gateway.close()

    # -- internals ------------------------------------------------------------

    def _swap(
        self, key: str, key_b: bytes, value: str, compare: dict[str, str], ttl: int | None
    ) -> tuple[bool, KeyValue | None]:
        """One transaction: if ``compare`` holds, put the value; otherwise read the key."""

        def transaction(lease: int) -> dict[str, Any]:
            return self._gateway.post(
                "/v3/kv/txn",
                {
                    "compare": [compare],
                    "success": [{"request_put": _put(key_b, value, lease)}],
                    "failure": [{"request_range": {"key": _encode(key_b)}}],
                },
            )

        answer = self._write(ttl, transaction)
        if answer.get("succeeded"):
            return True, KeyValue(key, value, _revision(answer))
        for response in answer.get("responses", ()):
            kvs = response.get("response_range", {}).get("kvs")
            if kvs:
                return False, _to_kv(kvs[0])
        return False, None

    def _write(self, ttl: int | None, send: Callable[[int], dict[str, Any]]) -> dict[str, Any]:
        """``send(lease_id)`` with a lease for ``ttl`` (0: none), granting a new one if etcd lost the old."""
        if ttl is None:
            return send(0)
        seconds = _ttl_seconds(ttl)
        lease = self._leases.lease_for(seconds)
        try:
            return send(lease)
        except GatewayError as exc:
            if exc.code != GRPC_NOT_FOUND or "lease" not in exc.etcd_message:
                raise
            self._leases.forget(lease)
            return send(self._leases.lease_for(seconds))

    def _grant_lease(self, seconds: int) -> int:
        return int(self._gateway.post("/v3/lease/grant", {"TTL": str(seconds)})["ID"])

    def _read_events(
        self, stream: Stream, message: dict[str, Any], key: bytes, below: bytes, start_revision: int, deadline: float
    ) -> list[Event]:
        current_revision: int | None = None
        events: list[Event] = []
        while True:
            result = message.get("result")
            if not isinstance(result, dict):
                raise KVError(f"etcd at {stream.member} refused the watch: {_stream_error(message)}.")
            if result.get("created"):
                current_revision = int(result.get("header", {}).get("revision", 0)) or None
                if current_revision is not None and start_revision <= current_revision:
                    deadline = max(deadline, time.monotonic() + CATCH_UP_WAIT)
            if int(result.get("compact_revision", 0)):
                raise KVCompactedError(
                    f"etcd at {stream.member} no longer keeps revision {start_revision} "
                    f"(compacted up to {result['compact_revision']}); re-list and watch from the listing's revision.",
                    current_revision=current_revision, oldest_revision=int(result["compact_revision"]),
                )
            if result.get("canceled"):
                reason = result.get("cancel_reason") or "no reason given"
                raise KVError(f"etcd at {stream.member} cancelled the watch: {reason}.")
            events.extend(_relevant_events(result.get("events", ()), key, below))
            if events and not stream.has_buffered_message():
                return events
            next_message = stream.next_message(deadline)
            if next_message is None:
                return events
            message = next_message


def _relevant_events(raw_events: Sequence[dict[str, Any]], key: bytes, below: bytes) -> list[Event]:
    events = []
    for raw in raw_events:
        kv = raw["kv"]
        raw_key = base64.b64decode(kv["key"])
        if raw_key != key and not raw_key.startswith(below):
            continue
        text_key = raw_key.decode("utf-8", "surrogateescape")
        revision = int(kv["mod_revision"])
        if raw.get("type") == "DELETE":
            events.append(Event("delete", text_key, None, revision))
        else:
            events.append(Event("put", text_key, _decode(kv.get("value", "")), revision,
                                created=int(kv.get("version", 0)) == 1))
    return events


def _put(key_b: bytes, value: str, lease: int) -> dict[str, str]:
    if not isinstance(value, str):
        raise TypeError(f"etcd values are text (str), not {type(value).__name__}; encode the value first.")
    request = {"key": _encode(key_b), "value": _encode(value.encode("utf-8", "surrogateescape"))}
    if lease:
        request["lease"] = str(lease)
    return request


def _to_kv(raw: dict[str, Any]) -> KeyValue:
    return KeyValue(_decode(raw["key"]), _decode(raw.get("value", "")), int(raw["mod_revision"]))


def _revision(answer: dict[str, Any]) -> int:
    return int(answer["header"]["revision"])


def _key_bytes(key: str) -> bytes:
    if not isinstance(key, str) or not key:
        raise ValueError(f"An etcd key must be a non-empty string, not {key!r}.")
    return key.encode("utf-8", "surrogateescape")


def _directory(prefix: str) -> bytes:
    """``prefix`` as a directory: ``"/a/b"`` and ``"/a/b/"`` both give ``b"/a/b/"``."""
    return prefix.rstrip("/").encode("utf-8", "surrogateescape") + b"/"


def _range_end(prefix: bytes) -> bytes:
    """The first key after every key that starts with ``prefix`` (etcd's ``range_end``)."""
    stripped = prefix.rstrip(b"\xff")
    if not stripped:
        return b"\0"
    return stripped[:-1] + bytes([stripped[-1] + 1])


def _ttl_seconds(ttl: float) -> int:
    if isinstance(ttl, bool) or not isinstance(ttl, (int, float)) or ttl <= 0:
        raise ValueError(f"A TTL must be a positive number of seconds (or None for no expiry), not {ttl!r}.")
    return max(1, int(-(-ttl // 1)))


def _stream_error(message: dict[str, Any]) -> str:
    error = message.get("error")
    if isinstance(error, dict):
        return str(error.get("message") or error)
    return str(error or message)[:200]


def _encode(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


def _decode(text: str) -> str:
    return base64.b64decode(text).decode("utf-8", "surrogateescape")

"""HTTP transport to etcd's v3 JSON gateway (``/v3/...``), with member failover.

Per etcd member, keep-alive connections for request/response calls
(:mod:`rdzv.kv.http_unary`) and a urllib3 pool for streams (watches). A request goes to the member
that answered last; when that member refuses, does not answer or says it is
unavailable, the request moves on to the next member (round robin). Each
request, failover included, has ``read_timeout`` seconds in total, every member
tried getting a fair share of what is left; then it raises
:class:`~rdzv.kv.base.KVUnavailableError`.

A request that reached a member but got no answer is sent again to the next
member. That is safe for rdzv: reads and puts are idempotent; a create or
compare-and-swap that did land the first time fails its comparison the second
time and returns the value it wrote as "current"; a delete that did land
reports that the key was already gone.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator, Sequence
from typing import Any

import urllib3
import urllib3.exceptions

from .base import KVError, KVUnavailableError
from .endpoints import format_endpoints
from .failures import ADVICE, describe_transport_failure
from .http_unary import UnaryConnections
from .target import TargetError, check_transport
from .tls import client_ssl_context

_JSON_HEADERS = {"Content-Type": "application/json", "Accept": "application/json"}

# gRPC status codes the gateway forwards (https://grpc.io/docs/guides/status-codes/).
GRPC_NOT_FOUND = 5
_GRPC_DEADLINE_EXCEEDED = 4
_GRPC_UNAVAILABLE = 14
_MEMBER_DOWN_CODES = frozenset({_GRPC_DEADLINE_EXCEEDED, _GRPC_UNAVAILABLE})
# etcd's words for "up, but cannot serve now", whatever code the gateway gives them.
_MEMBER_DOWN_MESSAGES = ("no leader", "leader changed", "timed out", "deadline exceeded", "server stopped", "too many requests")

# Pause before asking every member again when all are up but none can serve (no leader yet).
_BUSY_RETRY_PAUSE = 0.25

# Transport failures: the member did not give an HTTP answer.
_TRANSPORT_ERRORS = (urllib3.exceptions.HTTPError, OSError)


class GatewayError(KVError):
    """etcd answered a request with an error (a gRPC status code and etcd's message)."""

    def __init__(self, message: str, *, code: int | None, etcd_message: str) -> None:
        super().__init__(message)
        self.code = code
        self.etcd_message = etcd_message


class StreamBroken(KVUnavailableError):
    """An open stream ended or its connection broke; ``member_index`` names the member."""

    def __init__(self, message: str, *, member_index: int, reason: str) -> None:
        super().__init__(message)
        self.member_index = member_index
        self.reason = reason


class _MemberDown(Exception):
    """One member failed a request; the caller moves on to the next one.

    ``answered``: the member is up but said it cannot serve now (no leader, timed out).
    """

    def __init__(self, reason: str, *, answered: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.answered = answered


class _Failures:
    """Why each member failed one request, and whether any is up but busy (worth a retry)."""

    def __init__(self) -> None:
        self.reasons: dict[int, str] = {}
        self.busy = False

    def note(self, index: int, reason: str, *, busy: bool = False) -> None:
        self.reasons[index] = reason
        self.busy = self.busy or busy


class Gateway:
    """JSON requests to the v3 gateway of any member of one etcd cluster.

    Thread-safe. Creating a gateway opens no connection.
    """

    def __init__(
        self,
        endpoints: Sequence[tuple[str, int]],
        *,
        read_timeout: float,
        protocol: str = "http",
        ssl_cert: str | None = None,
        ssl_cert_key: str | None = None,
        ca_cert: str | None = None,
        pool_size: int = 16,
    ) -> None:
        if not endpoints:
            raise TargetError("The etcd v3 client needs at least one (host, port) endpoint.", "endpoint")
        protocol = check_transport(protocol, read_timeout, ssl_cert, ssl_cert_key, ca_cert)
        self.read_timeout = float(read_timeout)
        self.endpoints = [(str(host), int(port)) for host, port in endpoints]
        self.endpoint = format_endpoints(self.endpoints)
        self._pools = [
            _make_pool(host, port, protocol, ssl_cert, ssl_cert_key, ca_cert, pool_size) for host, port in self.endpoints
        ]
        context = client_ssl_context(ca_cert, ssl_cert, ssl_cert_key) if protocol == "https" else None
        self._unary = [UnaryConnections(host, port, context, pool_size) for host, port in self.endpoints]
        self._current = 0

    def post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """POST ``body`` as JSON to ``path`` (e.g. ``/v3/kv/range``) and return the decoded answer.

        Raises:
            KVUnavailableError: no member answered within the read timeout.
            GatewayError: etcd answered with an error.
        """
        return self._request("POST", path, json.dumps(body).encode())

    def get(self, path: str) -> dict[str, Any]:
        """GET ``path`` (e.g. ``/version``) and return the decoded JSON answer."""
        return self._request("GET", path, None)

    def open_stream(self, path: str, body: dict[str, Any]) -> tuple[Stream, dict[str, Any]]:
        """Open a streaming POST (``/v3/watch``) and wait for its first message.

        Returns the open stream and that first message; the caller must close the stream.
        """
        encoded = json.dumps(body).encode()
        failures = _Failures()
        for index, timeout in self._attempts(failures):
            try:
                response = self._pools[index].urlopen(
                    "POST",
                    path,
                    body=encoded,
                    headers=_JSON_HEADERS,
                    timeout=timeout,
                    retries=False,
                    redirect=False,
                    preload_content=False,
                    release_conn=False,
                )
            except _TRANSPORT_ERRORS as exc:
                failures.note(index, describe_transport_failure(exc))
                continue
            stream = Stream(response, index, self._member_name(index))
            try:
                if response.status != 200:
                    _raise_for_answer(response.status, response.read(), self._member_name(index))
                first = stream.next_message(time.monotonic() + timeout.read_timeout)
                if first is None:
                    raise _MemberDown("timed out")
            except (_MemberDown, StreamBroken) as exc:
                stream.close()
                failures.note(index, exc.reason, busy=getattr(exc, "answered", False))
                continue
            except BaseException:
                stream.close()
                raise
            self._current = index
            return stream, first
        raise self._unavailable(failures)

    def skip_member(self, index: int) -> None:
        """Send the next requests to the member after ``index`` (it just failed)."""
        if self._current == index:
            self._current = (index + 1) % len(self._pools)

    def close(self) -> None:
        """Close every pooled connection."""
        for pool in self._pools:
            pool.close()
        for connections in self._unary:
            connections.close()

    def _request(self, method: str, path: str, body: bytes | None) -> dict[str, Any]:
        failures = _Failures()
        for index, timeout in self._attempts(failures):
            try:
                status, data = self._unary[index].request(
                    method, path, body, connect_timeout=timeout.connect_timeout, read_timeout=timeout.read_timeout
                )
                answer = _raise_for_answer(status, data, self._member_name(index))
            except _TRANSPORT_ERRORS as exc:
                failures.note(index, describe_transport_failure(exc))
                continue
            except _MemberDown as exc:
                failures.note(index, exc.reason, busy=exc.answered)
                continue
            self._current = index
            return answer
        raise self._unavailable(failures)

    def _attempts(self, failures: _Failures) -> Iterator[tuple[int, urllib3.Timeout]]:
        """Each member in turn, starting at the current one, all within one read-timeout budget.

        A member may use only its fair share of the remaining budget, so one
        black-holed or hung member cannot use up the others' time. When every
        member failed but one of them answered that it cannot serve yet (a
        cluster electing a leader), the round is tried again after a short pause.
        """
        deadline = time.monotonic() + self.read_timeout
        count = len(self._pools)
        while True:
            failures.busy = False
            first = self._current
            for step in range(count):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return
                share = remaining / (count - step)
                yield (first + step) % count, urllib3.Timeout(connect=share, read=share)
            pause = min(_BUSY_RETRY_PAUSE, deadline - time.monotonic())
            if not failures.busy or pause <= 0:
                return
            time.sleep(pause)

    def _unavailable(self, failures: _Failures) -> KVUnavailableError:
        members = {self._member_name(i): reason for i, reason in failures.reasons.items()}
        tried = "; ".join(f"{member}: {reason}" for member, reason in members.items())
        reason = tried or f"no answer within {self.read_timeout:g} s"
        return KVUnavailableError(
            f"etcd at {self.endpoint} could not be reached ({reason}); {ADVICE}.",
            endpoint=self.endpoint, reason=reason, members=members,
        )

    def _member_name(self, index: int) -> str:
        return format_endpoints([self.endpoints[index]])


class Stream:
    """Newline-delimited JSON messages of one open streaming response."""

    def __init__(self, response: urllib3.HTTPResponse, member_index: int, member: str) -> None:
        self.member_index = member_index
        self.member = member
        self._response = response
        self._buffer = b""
        self._chunks: Iterator[bytes] | None = None
        self.closed = False

    def next_message(self, deadline: float) -> dict[str, Any] | None:
        """The next message, or ``None`` when ``deadline`` (``time.monotonic()``) passes first.

        Raises:
            StreamBroken: the member ended the stream or the connection broke.
        """
        while True:
            line = self._pop_line()
            if line is not None:
                return _decode_json(line, self.member)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            try:
                self._set_read_timeout(remaining)
                chunk = next(self._chunk_iterator(), b"")
            except (urllib3.exceptions.ReadTimeoutError, socket.timeout):
                return None
            except _TRANSPORT_ERRORS as exc:
                raise self._broken(describe_transport_failure(exc)) from exc
            if not chunk:
                raise self._broken("closed the stream")
            self._buffer += chunk

    def has_buffered_message(self) -> bool:
        """Whether a complete message has already arrived, so reading it will not wait."""
        return any(line.strip() for line in self._buffer.split(b"\n")[:-1])

    def close(self) -> None:
        """Drop the connection: a watch stream never ends by itself, and closing it cancels the watch."""
        if self.closed:
            return
        self.closed = True
        self._response.close()
        self._response.release_conn()

    def _pop_line(self) -> bytes | None:
        while b"\n" in self._buffer:
            line, _, self._buffer = self._buffer.partition(b"\n")
            if line.strip():
                return line
        return None

    def _broken(self, reason: str) -> StreamBroken:
        return StreamBroken(
            f"etcd at {self.member} broke off a watch ({reason}).", member_index=self.member_index, reason=reason
        )

    def _chunk_iterator(self) -> Iterator[bytes]:
        if self._chunks is None:
            if self._response.chunked:
                self._chunks = self._response.read_chunked(decode_content=True)
            else:
                self._chunks = iter(lambda: self._response.read1(65536), b"")
        return self._chunks

    def _set_read_timeout(self, seconds: float) -> None:
        connection = getattr(self._response, "connection", None) or getattr(self._response, "_connection", None)
        sock = getattr(connection, "sock", None)
        if sock is not None:
            sock.settimeout(seconds)


def _make_pool(
    host: str,
    port: int,
    protocol: str,
    ssl_cert: str | None,
    ssl_cert_key: str | None,
    ca_cert: str | None,
    pool_size: int,
) -> urllib3.HTTPConnectionPool:
    if protocol == "https":
        return urllib3.HTTPSConnectionPool(
            host,
            port,
            maxsize=pool_size,
            block=False,
            cert_reqs="CERT_REQUIRED",
            ca_certs=ca_cert,
            cert_file=ssl_cert,
            key_file=ssl_cert_key,
        )
    return urllib3.HTTPConnectionPool(host, port, maxsize=pool_size, block=False)


def _raise_for_answer(status: int, data: bytes, member: str) -> dict[str, Any]:
    """The decoded answer of a 200; an error answer raises (_MemberDown when the member cannot serve)."""
    if status == 200:
        return _decode_json(data, member)
    try:
        error = json.loads(data)
    except ValueError:
        error = None
    if not isinstance(error, dict) or "code" not in error:
        if status == 404:
            raise GatewayError(
                f"etcd at {member} has no v3 gateway (HTTP 404); use etcd 3.4 or newer, or the v2 API (api='v2').",
                code=None,
                etcd_message="404 page not found",
            )
        error = {}
    code = error.get("code")
    message = str(error.get("message") or error.get("error") or data[:200].decode(errors="replace")).strip()
    if code in _MEMBER_DOWN_CODES or status in (502, 503, 504) or any(m in message for m in _MEMBER_DOWN_MESSAGES):
        raise _MemberDown(message or f"HTTP {status}", answered=True)
    raise GatewayError(f"etcd at {member} refused the request: {message}.", code=code, etcd_message=message)


def _decode_json(data: bytes, member: str) -> dict[str, Any]:
    try:
        decoded = json.loads(data)
    except ValueError as exc:
        raise KVError(f"etcd at {member} sent a reply that is not JSON; is this endpoint an etcd server?") from exc
    if not isinstance(decoded, dict):
        raise KVError(f"etcd at {member} sent an unexpected reply; is this endpoint an etcd server?")
    return decoded

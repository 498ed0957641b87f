"""Keep-alive HTTP/1.1 request/response calls to one etcd member, on plain sockets.

etcd's v3 gateway answers a small JSON request in about 0.2 ms; urllib3's general
machinery (pools, header objects, the email-based header parser) roughly doubles
that. The gateway's unary calls need none of it: one request, one JSON answer with a
Content-Length or chunked body. Streams (watches) stay on urllib3.

Failures are raised as ``OSError`` subclasses (socket, TLS and timeout errors as they
come; a malformed or missing answer as ``ConnectionError``), so callers treat them as
"this member did not answer".
"""

from __future__ import annotations

import socket
import ssl
import threading

_MAX_HEADER_LINE = 65536


class _NoAnswer(ConnectionError):
    """The connection ended before the first byte of the answer."""


class UnaryConnections:
    """Idle keep-alive connections to ``host:port`` and the requests sent over them.

    Thread-safe: a request takes an idle connection (or opens one) and gives it back
    when the answer has been read in full.
    """

    def __init__(self, host: str, port: int, ssl_context: ssl.SSLContext | None = None, max_idle: int = 16) -> None:
        self.host = host
        self.port = port
        self._ssl_context = ssl_context
        self._max_idle = max_idle
        self._idle: list[_Connection] = []
        self._lock = threading.Lock()
        self._host_header = f"{host}:{port}".encode()

    def request(
        self, method: str, path: str, body: bytes | None, *, connect_timeout: float, read_timeout: float
    ) -> tuple[int, bytes]:
        """Send one request; return ``(status, body)``. Raises ``OSError`` when the member does not answer.

        An idle connection the server closed fails before any answer arrives; the request
        was then never read, and is sent again once on a new connection."""
        request = self._encode(method, path, body)
        connection = self._take()
        try:
            if connection is None:
                connection = _Connection.open(self.host, self.port, self._ssl_context, connect_timeout)
                status, data, keep = connection.exchange(request, read_timeout)
            else:
                try:
                    status, data, keep = connection.exchange(request, read_timeout)
                except _NoAnswer:
                    connection.close()
                    connection = _Connection.open(self.host, self.port, self._ssl_context, connect_timeout)
                    status, data, keep = connection.exchange(request, read_timeout)
        except BaseException:
            if connection is not None:
                connection.close()
            raise
        if keep:
            self._give_back(connection)
        else:
            connection.close()
        return status, data

    def close(self) -> None:
        """Close every idle connection."""
        with self._lock:
            idle, self._idle = self._idle, []
        for connection in idle:
            connection.close()

    def _encode(self, method: str, path: str, body: bytes | None) -> bytes:
        body = body or b""
        return b"".join((
            method.encode(), b" ", path.encode(), b" HTTP/1.1\r\nHost: ", self._host_header,
            b"\r\nContent-Type: application/json\r\nAccept: application/json\r\nContent-Length: ",
            str(len(body)).encode(), b"\r\n\r\n", body,
        ))

    def _take(self) -> _Connection | None:
        with self._lock:
            return self._idle.pop() if self._idle else None

    def _give_back(self, connection: _Connection) -> None:
        with self._lock:
            if len(self._idle) < self._max_idle:
                self._idle.append(connection)
                return
        connection.close()


class _Connection:
    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.reader = sock.makefile("rb")

    @classmethod
    def open(cls, host: str, port: int, ssl_context: ssl.SSLContext | None, timeout: float) -> _Connection:
        sock = socket.create_connection((host, port), timeout=timeout)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if ssl_context is not None:
                sock = ssl_context.wrap_socket(sock, server_hostname=host)
        except BaseException:
            sock.close()
            raise
        return cls(sock)

    def exchange(self, request: bytes, timeout: float) -> tuple[int, bytes, bool]:
        """Send ``request``; return the answer's status, body and whether the connection may be reused."""
        self.sock.settimeout(timeout)
        try:
            self.sock.sendall(request)
            status_line = self._line()
        except (BrokenPipeError, ConnectionResetError) as exc:
            raise _NoAnswer(f"Remote end closed connection without response ({exc})") from exc
        if not status_line:
            raise _NoAnswer("Remote end closed connection without response")
        parts = status_line.split(None, 2)
        if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or not parts[1].isdigit():
            raise ConnectionError(f"not an HTTP answer: {status_line[:80]!r}")
        status = int(parts[1])
        length: int | None = None
        chunked = False
        keep = parts[0] == b"HTTP/1.1"
        while True:
            line = self._line()
            if line in (b"\r\n", b"\n"):
                break
            if not line:
                raise ConnectionError("Remote end closed connection in the middle of the headers")
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            value = value.strip()
            if name == b"content-length":
                length = int(value)
            elif name == b"transfer-encoding":
                chunked = b"chunked" in value.lower()
            elif name == b"connection":
                keep = value.lower() == b"keep-alive" or (keep and value.lower() != b"close")
        if chunked:
            body = self._chunked_body()
        elif length is not None:
            body = self._exactly(length)
        else:  # the answer ends when the server closes the connection
            body, keep = self.reader.read(), False
        return status, body, keep

    def close(self) -> None:
        try:
            self.reader.close()
        finally:
            self.sock.close()

    def _line(self) -> bytes:
        line = self.reader.readline(_MAX_HEADER_LINE)
        if len(line) >= _MAX_HEADER_LINE:
            raise ConnectionError("an HTTP header line is too long")
        return line

    def _exactly(self, count: int) -> bytes:
        data = self.reader.read(count)
        if len(data) != count:
            raise ConnectionError("Remote end closed connection in the middle of the answer")
        return data

    def _chunked_body(self) -> bytes:
        pieces = []
        while True:
            size_line = self._line()
            try:
                size = int(size_line.split(b";", 1)[0].strip(), 16)
            except ValueError:
                raise ConnectionError(f"bad chunk size {size_line[:40]!r}") from None
            if size == 0:
                while self._line() not in (b"\r\n", b"\n", b""):
                    pass  # trailers
                return b"".join(pieces)
            pieces.append(self._exactly(size))
            self._exactly(2)  # the CRLF after each chunk

"""rdzv.kv.http_unary: the plain-socket HTTP/1.1 client of the v3 gateway, against real etcd
(large chunked answers) and a real local HTTP server (connection handling corner cases)."""

from __future__ import annotations

import base64
import http.server
import json
import threading

import pytest

from rdzv.kv.http_unary import UnaryConnections


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def test_a_large_listing_arrives_whole_through_a_chunked_answer(etcd_server, unique):
    with etcd_server.kv("v3") as kv:
        for index in range(1500):
            kv.put(f"/{unique}/k{index:05d}", "v" * 300)
        connections = UnaryConnections("localhost", etcd_server.get_port())
        status, body = connections.request(
            "POST", "/v3/kv/range", json.dumps({"key": b64(f"/{unique}/"), "range_end": b64(f"/{unique}0")}).encode(),
            connect_timeout=5, read_timeout=10,
        )
        connections.close()
        assert status == 200 and len(body) > 600_000
        assert len(json.loads(body)["kvs"]) == 1500
        assert len(kv.list(f"/{unique}").items) == 1500


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    mode = "keep-alive"
    connections: list[int] = []

    def do_POST(self):  # noqa: N802 - http.server's naming
        length = int(self.headers["Content-Length"])
        echoed = self.rfile.read(length)
        type(self).connections.append(self.client_address)
        self.send_response(201)
        if self.mode == "close-delimited":
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(echoed)
            self.close_connection = True
            return
        self.send_header("Content-Length", str(len(echoed)))
        if self.mode == "close":
            self.send_header("Connection", "close")
            self.close_connection = True
        if self.mode == "closes-silently":  # says keep-alive, then closes: a stale idle connection
            self.close_connection = True
        self.end_headers()
        self.wfile.write(echoed)

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    _Handler.connections = []
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()


@pytest.mark.parametrize("mode, reused", [
    ("keep-alive", True), ("close", False), ("close-delimited", False), ("closes-silently", False),
])
def test_answers_are_read_and_connections_reused_only_when_the_server_keeps_them(server, mode, reused):
    _Handler.mode = mode
    connections = UnaryConnections("127.0.0.1", server.server_address[1])
    try:
        for index in range(3):
            body = json.dumps({"n": index}).encode()
            assert connections.request("POST", "/echo", body, connect_timeout=5, read_timeout=5) == (201, body)
    finally:
        connections.close()
    assert (len(set(_Handler.connections)) == 1) is reused


def test_a_dead_member_is_an_os_error(server):
    port = server.server_address[1]
    server.shutdown()
    server.server_close()
    connections = UnaryConnections("127.0.0.1", port)
    with pytest.raises(OSError):
        connections.request("POST", "/x", b"{}", connect_timeout=2, read_timeout=2)

"""Parsing of etcd endpoint lists such as ``"h1:2379,h2:2379,[::1]:2379"``."""

from __future__ import annotations

import re

DEFAULT_PORT = 2379

_HOST = re.compile(r"^[\w.:-]+$")


def parse_endpoints(endpoint: str | None, default_port: int = DEFAULT_PORT) -> list[tuple[str, int]]:
    """Split a comma-separated endpoint list into ``(host, port)`` pairs.

    Each member is ``host``, ``host:port``, ``[ipv6]`` or ``[ipv6]:port``; an
    ``http://`` or ``https://`` prefix is accepted and dropped (the protocol is a
    separate setting). An empty or missing endpoint means ``localhost``.

    Raises:
        ValueError: a member has an invalid host or port; the message names it.
    """
    text = (endpoint or "").strip()
    if not text:
        return [("localhost", default_port)]
    members = [part.strip() for part in text.split(",")]
    if any(not part for part in members):
        raise ValueError(f"The etcd endpoint '{endpoint}' has an empty member; separate members with single commas, as in 'h1:2379,h2:2379'.")
    return [_parse_member(part, default_port) for part in members]


def _parse_member(member: str, default_port: int) -> tuple[str, int]:
    text = re.sub(r"^https?://", "", member).rstrip("/")
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            raise ValueError(f"The etcd endpoint '{member}' is not a valid [IPv6]:port address.")
        port_text = rest[1:] if rest else ""
    elif text.count(":") == 1:
        host, port_text = text.split(":")
    else:
        host, port_text = text, ""
    if not host or not _HOST.match(host):
        raise ValueError(f"The etcd endpoint '{member}' has an invalid host name.")
    if not port_text:
        return host, default_port
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ValueError(
            f"The port number of the etcd endpoint '{member}' must be an integer between 1 and 65535."
        )
    return host, int(port_text)


def format_endpoints(endpoints: list[tuple[str, int]]) -> str:
    """The inverse of :func:`parse_endpoints`: ``"h1:2379,h2:2379"``."""
    return ",".join(f"[{h}]:{p}" if ":" in h else f"{h}:{p}" for h, p in endpoints)

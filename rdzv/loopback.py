"""Whether an address is this machine only: the one rule for what may be served without
sign-in (the dashboard), scraped without credentials (its /metrics) or bound without
``--allow-remote-scrapes`` (``rdzv exporter``)."""

from __future__ import annotations

import ipaddress
import socket

__all__ = ["is_loopback_address", "is_loopback_ip", "is_wildcard"]

_WILDCARDS = {"", "0.0.0.0", "::", "[::]", "*"}


def is_wildcard(address: str | None) -> bool:
    """Whether binding to ``address`` listens on every interface (``0.0.0.0``, ``::``, empty)."""
    return (address or "").strip() in _WILDCARDS


def is_loopback_ip(text: str | None) -> bool:
    """Whether ``text`` is a loopback IP address (127.0.0.0/8, ::1, or ::ffff:127.x.y.z); names
    and anything unreadable are not."""
    try:
        address = ipaddress.ip_address((text or "").strip().strip("[]").split("%", 1)[0])
    except ValueError:
        return False
    mapped = getattr(address, "ipv4_mapped", None)
    return (mapped or address).is_loopback


def is_loopback_address(address: str | None) -> bool:
    """Whether binding to ``address`` serves loopback only: a loopback IP, or a name whose every
    local resolution (``/etc/hosts``, as the server would bind) is one. The wildcards
    (``0.0.0.0``, ``::``, empty) are not."""
    text = (address or "").strip()
    if is_wildcard(text):
        return False
    if is_loopback_ip(text):
        return True
    try:
        ipaddress.ip_address(text.strip("[]"))
        return False  # an IP, and not a loopback one
    except ValueError:
        pass
    try:
        found = socket.getaddrinfo(text, None, proto=socket.IPPROTO_TCP)
    except OSError:
        return False
    return bool(found) and all(is_loopback_ip(info[4][0]) for info in found)

"""Where etcd is and how to reach it: one frozen value, validated once, that every entry point builds.

A :class:`Target` holds the endpoint list, the API (``None``: every API the server offers, for
viewers), the key prefix, the protocol, the TLS files and the read timeout. It knows its
:class:`~rdzv.kv.layout.KeyLayout` and how to :meth:`~Target.connect`. It is hashable, so the
monitor registry keys on it. Every rule about these settings, and its sentence, is here.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Union

from .endpoints import format_endpoints, parse_endpoints
from .layout import DEFAULT_PREFIX, KeyLayout, normalize_prefix

if TYPE_CHECKING:
    from .base import KV

__all__ = ["API_VERSIONS", "DEFAULT_READ_TIMEOUT", "Target", "TargetError", "check_transport"]

API_VERSIONS = ("v2", "v3")

DEFAULT_READ_TIMEOUT = 60.0
"""torch's ``read_timeout`` default for its etcd backend; viewers pass shorter ones."""

Endpoints = Union[str, Sequence[tuple[str, int]], None]


class TargetError(ValueError):
    """A connection setting that cannot work. ``setting`` names it (``"endpoint"``, ``"api"``,
    ``"prefix"``, ``"protocol"``, ``"ca_cert"``, ``"ssl_cert"``, ``"ssl_cert_key"``,
    ``"read_timeout"``); the message is one sentence saying what is wrong and what to do."""

    def __init__(self, message: str, setting: str) -> None:
        super().__init__(message)
        self.setting = setting


def check_transport(
    protocol: str | None,
    read_timeout: float,
    ssl_cert: str | None = None,
    ssl_cert_key: str | None = None,
    ca_cert: str | None = None,
) -> str:
    """Check how a client reaches etcd (both APIs follow these rules); return the protocol
    in lower case. A client certificate file may hold its key too (``ssl_cert`` alone), as
    python-etcd accepts; a key without its certificate is refused.

    Raises:
        TargetError: the first setting that cannot work.
    """
    protocol = (protocol or "http").strip().lower()
    if protocol not in ("http", "https"):
        raise TargetError(f"The protocol must be http or https, not {protocol!r}.", "protocol")
    if isinstance(read_timeout, bool) or not isinstance(read_timeout, (int, float)) \
            or not math.isfinite(read_timeout) or read_timeout <= 0:
        raise TargetError(f"The read timeout must be a positive number of seconds, not {read_timeout!r}.",
                          "read_timeout")
    if ssl_cert_key and not ssl_cert:
        raise TargetError("A client key (ssl_cert_key) needs its certificate too; pass ssl_cert as well.",
                          "ssl_cert_key")
    if (ca_cert or ssl_cert or ssl_cert_key) and protocol != "https":
        setting = "ca_cert" if ca_cert else "ssl_cert"
        raise TargetError("TLS certificate files were given for a plain-HTTP endpoint; use protocol https.", setting)
    for setting, path in (("ca_cert", ca_cert), ("ssl_cert", ssl_cert), ("ssl_cert_key", ssl_cert_key)):
        if path is not None and not os.path.isfile(path):
            raise TargetError(f"The TLS file {path!r} given as {setting} does not exist; pass the path of a "
                              "readable file.", setting)
    return protocol


@dataclass(frozen=True)
class Target:
    """An etcd cluster, the API to use on it, and the prefix its runs live under.

    Build one with :meth:`of` (from an endpoint string) or the constructor (from
    ``(host, port)`` pairs); either validates every field and normalizes it, so equal
    settings give equal, equally hashed targets. ``read_timeout=None`` lets each
    consumer use its own default (:data:`DEFAULT_READ_TIMEOUT` for :meth:`connect`).

    Raises:
        TargetError: a setting that cannot work, named in ``setting``.
    """

    endpoints: tuple[tuple[str, int], ...]
    api: str | None = None
    prefix: str = DEFAULT_PREFIX
    protocol: str = "http"
    ca_cert: str | None = None
    ssl_cert: str | None = None
    ssl_cert_key: str | None = None
    read_timeout: float | None = None

    def __post_init__(self) -> None:
        endpoints = self.endpoints
        if isinstance(endpoints, str) or endpoints is None:
            endpoints = _parse(endpoints)
        endpoints = tuple((str(host), int(port)) for host, port in endpoints)
        if not endpoints:
            raise TargetError("The etcd endpoint list is empty; give HOST:PORT[,HOST:PORT].", "endpoint")
        object.__setattr__(self, "endpoints", endpoints)
        api = self.api.strip().lower() if isinstance(self.api, str) and self.api.strip() else None
        if api not in (None, *API_VERSIONS):
            raise TargetError(f"The etcd API must be v2 or v3, not {self.api!r}.", "api")
        object.__setattr__(self, "api", api)
        try:
            object.__setattr__(self, "prefix", normalize_prefix(self.prefix))
        except TypeError as exc:
            raise TargetError(str(exc), "prefix") from None
        for name in ("ca_cert", "ssl_cert", "ssl_cert_key"):
            value = getattr(self, name)
            object.__setattr__(self, name, os.fspath(value) if value else None)
        protocol = check_transport(self.protocol, 1.0 if self.read_timeout is None else self.read_timeout,
                                   self.ssl_cert, self.ssl_cert_key, self.ca_cert)
        object.__setattr__(self, "protocol", protocol)
        if self.read_timeout is not None:
            object.__setattr__(self, "read_timeout", float(self.read_timeout))

    @classmethod
    def of(cls, endpoint: Endpoints | Target = None, **settings: object) -> Target:
        """A target from an endpoint string (``"h1:2379,h2:2379"``; none means
        ``localhost:2379``) or pairs, and any other field; a :class:`Target` given as
        ``endpoint`` is returned with ``settings`` applied."""
        if isinstance(endpoint, Target):
            return endpoint.but(**settings) if settings else endpoint
        return cls(endpoints=_parse(endpoint) if isinstance(endpoint, str) or endpoint is None else endpoint,
                   **settings)  # type: ignore[arg-type]

    def but(self, **changes: object) -> Target:
        """This target with ``changes`` applied (validated again)."""
        return replace(self, **changes)  # type: ignore[arg-type]

    @property
    def endpoint(self) -> str:
        """The endpoints as one string, ``"h1:2379,h2:2379"``."""
        return format_endpoints(list(self.endpoints))

    @property
    def layout(self) -> KeyLayout:
        return KeyLayout(self.prefix)

    @property
    def apis(self) -> tuple[str, ...]:
        """The APIs to read: the chosen one, or both."""
        return (self.api,) if self.api else API_VERSIONS

    def connect(self, api: str | None = None, *, read_timeout: float | None = None) -> KV:
        """A :class:`~rdzv.kv.KV` on ``api`` (default: the target's; one must be chosen);
        ``read_timeout`` overrides the target's, which overrides :data:`DEFAULT_READ_TIMEOUT`.
        Sends no request."""
        api = api or self.api
        if api not in API_VERSIONS:
            raise TargetError(f"Choose the etcd API to connect with: v2 or v3, not {api!r}.", "api")
        options = dict(
            read_timeout=read_timeout or self.read_timeout or DEFAULT_READ_TIMEOUT, protocol=self.protocol,
            ssl_cert=self.ssl_cert, ssl_cert_key=self.ssl_cert_key, ca_cert=self.ca_cert,
        )
        if api == "v2":
            from .v2 import EtcdV2

            return EtcdV2.connect(self.endpoints, **options)
        from .v3 import EtcdV3

        return EtcdV3(endpoints=self.endpoints, **options)

    def __str__(self) -> str:
        return f"etcd at {self.endpoint}"


def _parse(endpoint: str | None) -> list[tuple[str, int]]:
    try:
        return parse_endpoints(endpoint)
    except ValueError as exc:
        raise TargetError(f"{str(exc).rstrip('.')}; give HOST:PORT[,HOST:PORT].", "endpoint") from None

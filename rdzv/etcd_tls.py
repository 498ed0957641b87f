"""HTTPS (and optionally client-certificate auth) on the client port of a throwaway etcd."""

from __future__ import annotations

import os
import ssl
from dataclasses import dataclass

from .kv.tls import client_ssl_context


@dataclass(frozen=True)
class EtcdTLS:
    """Certificates for :class:`rdzv.EtcdServer` / :class:`rdzv.EtcdCluster` to serve HTTPS.

    Args:
        cert_file, key_file: the server certificate (it must name ``localhost``) and its key.
        ca_file: the CA certificate that signed ``cert_file``; rdzv's own clients of the
            server (its readiness probe, ``kv()``, ``get_client()``) trust it.
        client_cert_file, client_key_file: a client certificate signed by ``ca_file`` and its
            key. When given, etcd demands a certificate signed by ``ca_file`` from every client
            (``--client-cert-auth``) and rdzv's own clients present this one.

    Raises ``ValueError`` (one sentence) when a file is missing or only half of the client
    pair is given. Peer traffic between members stays plain HTTP on loopback.
    """

    cert_file: str | os.PathLike
    key_file: str | os.PathLike
    ca_file: str | os.PathLike
    client_cert_file: str | os.PathLike | None = None
    client_key_file: str | os.PathLike | None = None

    def __post_init__(self) -> None:
        if (self.client_cert_file is None) != (self.client_key_file is None):
            raise ValueError("Give both client_cert_file and client_key_file, or neither.")
        for name in ("cert_file", "key_file", "ca_file", "client_cert_file", "client_key_file"):
            path = getattr(self, name)
            if path is not None and not os.path.isfile(path):
                raise ValueError(f"The TLS {name} {os.fspath(path)!r} does not exist or is not a file.")

    @property
    def client_cert_auth(self) -> bool:
        """Whether etcd demands a client certificate."""
        return self.client_cert_file is not None

    def etcd_flags(self) -> list[str]:
        """The etcd command-line flags serving the client port over HTTPS."""
        flags = [f"--cert-file={os.fspath(self.cert_file)}", f"--key-file={os.fspath(self.key_file)}"]
        if self.client_cert_auth:
            flags += [f"--trusted-ca-file={os.fspath(self.ca_file)}", "--client-cert-auth"]
        return flags

    def client_options(self) -> dict[str, str | None]:
        """The keyword arguments of :func:`rdzv.kv.connect` (and of ``create_backend``'s
        parameters, the monitor and the dashboard) that reach this server."""
        return {
            "protocol": "https",
            "ca_cert": os.fspath(self.ca_file),
            "ssl_cert": None if self.client_cert_file is None else os.fspath(self.client_cert_file),
            "ssl_cert_key": None if self.client_key_file is None else os.fspath(self.client_key_file),
        }

    def ssl_context(self) -> ssl.SSLContext:
        """A client-side context trusting ``ca_file`` and presenting the client certificate."""
        options = self.client_options()
        return client_ssl_context(options["ca_cert"], options["ssl_cert"], options["ssl_cert_key"])


PLAIN_HTTP: dict[str, str | None] = {"protocol": "http", "ca_cert": None, "ssl_cert": None, "ssl_cert_key": None}
"""The :meth:`EtcdTLS.client_options` of a server without TLS."""

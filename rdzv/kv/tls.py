"""The client-side TLS context of every plain-socket connection rdzv makes to etcd."""

from __future__ import annotations

import ssl


def client_ssl_context(ca_cert: str | None, ssl_cert: str | None, ssl_cert_key: str | None) -> ssl.SSLContext:
    """Verify the server against ``ca_cert`` (default: the system's CAs) and present the client
    certificate ``ssl_cert``/``ssl_cert_key`` when given.

    Raises ``ValueError`` (one sentence) when a file cannot be loaded.
    """
    try:
        context = ssl.create_default_context(cafile=ca_cert)
        if ssl_cert:
            context.load_cert_chain(ssl_cert, ssl_cert_key)
    except (OSError, ssl.SSLError) as exc:
        raise ValueError(
            f"The TLS files could not be loaded ({exc.strerror or exc}); check ca_cert, ssl_cert and ssl_cert_key."
        ) from None
    return context

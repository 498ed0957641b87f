"""Why a request did not reach etcd, in words a person can act on (shared by both APIs)."""

from __future__ import annotations

ADVICE = "check that etcd is running there and that the endpoint, protocol and certificates are right"


def describe_transport_failure(error: BaseException | None) -> str:
    """A short reason for a failed connection: ``"connection refused"``, ``"timed out"``, or
    what went wrong with TLS and which setting to look at."""
    if error is None:
        return "no answer"
    cause: BaseException = getattr(error, "reason", None) or getattr(error, "cause", None) or error
    text = str(cause)
    lower = text.lower().replace("_", " ")
    if "refused" in lower:
        return "connection refused"
    if "certificate verify failed" in lower:
        return "its TLS certificate is not signed by the CA in ca_cert, or does not name this host"
    if "bad certificate" in lower or "certificate required" in lower or "unknown ca" in lower:
        return "it refused the client certificate; give ssl_cert and ssl_cert_key signed by its CA"
    if "wrong version number" in lower or "record layer failure" in lower or "http_request" in lower:
        return "it does not speak TLS; use protocol http"
    if "remote end closed connection" in lower or "connection aborted" in lower or "connection reset" in lower:
        return "it closed the connection (if it serves HTTPS, use protocol https)"
    if "timed out" in lower or "timeout" in lower:
        return "timed out"
    if "name or service not known" in lower or "nodename nor servname" in lower or "resolution" in lower:
        return "unknown host name"
    if "ssl" in lower or "tls" in lower:
        return f"TLS failed ({text.splitlines()[0][:160]})"
    return (text.splitlines() or [type(cause).__name__])[0][:200] or type(cause).__name__

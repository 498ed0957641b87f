"""The dashboard's settings, from ``panel serve app/dashboard.py --args ...`` and RDZV_* variables.

Command-line arguments win over environment variables. Every mistake raises
:class:`ConfigError` with one sentence saying what is wrong and what to do.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DEFAULT_PREFIX = "/torch/elastic"
DEFAULT_POLL_MS = 300

ENVIRONMENT = {  # setting -> variable
    "endpoint": "RDZV_ENDPOINT",
    "run_id": "RDZV_RUN_ID",
    "prefix": "RDZV_PREFIX",
    "api": "RDZV_API",
    "protocol": "RDZV_PROTOCOL",
    "ca_cert": "RDZV_CA_CERT",
    "ssl_cert": "RDZV_SSL_CERT",
    "ssl_cert_key": "RDZV_SSL_CERT_KEY",
}


class ConfigError(ValueError):
    """A bad dashboard setting; the message is one sentence for the person who started it."""


@dataclass(frozen=True)
class DashboardConfig:
    """Where the dashboard looks and what it may do. ``endpoint=None`` means the demo."""

    endpoint: str | None = None
    run_id: str | None = None
    prefix: str = DEFAULT_PREFIX
    api: str | None = None
    protocol: str = "http"
    ca_cert: str | None = None
    ssl_cert: str | None = None
    ssl_cert_key: str | None = None
    allow_writes: bool = False
    poll_ms: int = DEFAULT_POLL_MS
    heartbeat_expiry: float = 15.0
    tls: dict[str, Any] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "tls", {
            "protocol": self.protocol, "ca_cert": self.ca_cert, "ssl_cert": self.ssl_cert,
            "ssl_cert_key": self.ssl_cert_key,
        })

    @property
    def demo(self) -> bool:
        return self.endpoint is None


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one sentence instead of usage text and an exit
        raise ConfigError(f"The dashboard arguments are wrong: {message}; see `--help` for the accepted arguments.")

    def exit(self, status: int = 0, message: str | None = None) -> None:
        raise ConfigError(message.strip() if message else "The dashboard printed its help; start it without --help.")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="panel serve app/dashboard.py --args", add_help=True,
                     description="Live view of PyTorch elastic rendezvous runs on etcd.")
    parser.add_argument("--endpoint", help="etcd endpoint(s) HOST:PORT[,HOST:PORT]; none starts the demo")
    parser.add_argument("--run-id", help="the run to show first (default: the first run found)")
    parser.add_argument("--prefix", help=f"key prefix of runs and store (default {DEFAULT_PREFIX})")
    parser.add_argument("--api", choices=("v2", "v3"), help="etcd API to follow (default: every API offered)")
    parser.add_argument("--protocol", choices=("http", "https"), type=str.lower)
    parser.add_argument("--ca-cert", help="CA certificate file (https)")
    parser.add_argument("--ssl-cert", help="client certificate file (https)")
    parser.add_argument("--ssl-cert-key", help="client certificate key file (https)")
    parser.add_argument("--allow-writes", action="store_true", help="offer write actions (behind a confirmation)")
    parser.add_argument("--poll-ms", type=int, default=DEFAULT_POLL_MS, help="how often a page checks for changes")
    parser.add_argument("--heartbeat-expiry", type=float, default=15.0,
                        help="seconds without a heartbeat before a node is flagged stale (default 15 = 5 s x 3)")
    return parser


def parse_config(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> DashboardConfig:
    """The settings from ``argv`` (without the program name) and ``environ`` (default: os.environ)."""
    environ = os.environ if environ is None else environ
    args = build_parser().parse_args(list(argv or []))
    values = {name: getattr(args, name) for name in ENVIRONMENT}
    for name, variable in ENVIRONMENT.items():
        if values[name] is None and environ.get(variable, "").strip():
            values[name] = environ[variable].strip()
    config = DashboardConfig(
        endpoint=values["endpoint"] or None,
        run_id=values["run_id"] or None,
        prefix=values["prefix"] or DEFAULT_PREFIX,
        api=values["api"].lower() if values["api"] else None,
        protocol=(values["protocol"] or "http").lower(),
        ca_cert=values["ca_cert"],
        ssl_cert=values["ssl_cert"],
        ssl_cert_key=values["ssl_cert_key"],
        allow_writes=args.allow_writes,
        poll_ms=args.poll_ms,
        heartbeat_expiry=args.heartbeat_expiry,
    )
    check_config(config)
    return config


def check_config(config: DashboardConfig) -> None:
    """Raise :class:`ConfigError` for a setting the dashboard cannot work with."""
    from ..kv.endpoints import parse_endpoints

    if config.endpoint is not None:
        try:
            parse_endpoints(config.endpoint)
        except ValueError as exc:
            raise ConfigError(f"{str(exc).rstrip('.')} (from --endpoint or RDZV_ENDPOINT); "
                              "pass HOST:PORT[,HOST:PORT].") from None
    if config.api not in (None, "v2", "v3"):
        raise ConfigError(f"The etcd API must be v2 or v3, not {config.api!r}; fix --api or RDZV_API.")
    if config.protocol not in ("http", "https"):
        raise ConfigError(f"The protocol must be http or https, not {config.protocol!r}; fix --protocol or RDZV_PROTOCOL.")
    if not config.prefix.startswith("/"):
        raise ConfigError(f"The key prefix {config.prefix!r} must start with '/', as in /torch/elastic.")
    for option, path in (("--ca-cert", config.ca_cert), ("--ssl-cert", config.ssl_cert),
                         ("--ssl-cert-key", config.ssl_cert_key)):
        if path is not None and not Path(path).is_file():
            raise ConfigError(f"The file {path!r} given to {option} does not exist; pass the path of a readable file.")
    if (config.ca_cert or config.ssl_cert or config.ssl_cert_key) and config.protocol != "https":
        raise ConfigError("Certificate files were given but the protocol is http; add --protocol https.")
    if bool(config.ssl_cert) != bool(config.ssl_cert_key):
        raise ConfigError("A client certificate needs both --ssl-cert and --ssl-cert-key; pass both or neither.")
    if not 50 <= config.poll_ms <= 10_000:
        raise ConfigError(f"--poll-ms must be between 50 and 10000 milliseconds, not {config.poll_ms}.")
    if config.heartbeat_expiry <= 0:
        raise ConfigError(f"--heartbeat-expiry must be a positive number of seconds, not {config.heartbeat_expiry:g}.")

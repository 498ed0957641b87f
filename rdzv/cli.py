"""The ``rdzv`` command: ``rdzv status``, ``rdzv server``, ``rdzv dashboard``.

Every failure a person can cause or meet (unreachable etcd, unknown run,
undecodable state, bad arguments) ends in one sentence on stderr and a
non-zero exit code, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading
from collections.abc import Sequence

EXIT_OK = 0
EXIT_USAGE = 2
EXIT_UNREACHABLE = 3
EXIT_NOT_FOUND = 4
EXIT_UNDECODABLE = 5


class CommandError(Exception):
    """A failure to report as one sentence, with the exit code to use."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one sentence instead of usage + message
        raise CommandError(f"{message}; see `{self.prog} --help`.", EXIT_USAGE)


def endpoint_argument(text: str) -> str:
    """``--endpoint`` as given, once it parses as ``HOST:PORT[,HOST:PORT...]``."""
    from .kv import parse_endpoints

    if not text.strip():
        raise argparse.ArgumentTypeError("the endpoint is empty; give HOST:PORT[,HOST:PORT...]")
    try:
        parse_endpoints(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc).rstrip(".")) from None
    return text


def add_connection_arguments(parser: argparse.ArgumentParser, *, endpoint_required: bool) -> None:
    """The endpoint, prefix and TLS options shared by every command that talks to etcd."""
    parser.add_argument("--endpoint", type=endpoint_argument, required=endpoint_required, help="etcd endpoint(s): HOST:PORT[,HOST:PORT...]")
    parser.add_argument("--prefix", default="/torch/elastic", help="key prefix of the runs and store (default: /torch/elastic)")
    parser.add_argument("--api", choices=("v2", "v3"), default=None, help="etcd API to read (default: every API the server offers)")
    parser.add_argument("--protocol", choices=("http", "https"), default="http")
    parser.add_argument("--ca-cert", default=None, help="CA certificate file for https")
    parser.add_argument("--ssl-cert", default=None, help="client certificate file")
    parser.add_argument("--ssl-cert-key", default=None, help="client certificate key file")


def connection_options(args: argparse.Namespace) -> dict:
    return dict(
        api=args.api, protocol=args.protocol, ca_cert=args.ca_cert, ssl_cert=args.ssl_cert, ssl_cert_key=args.ssl_cert_key
    )


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="rdzv", description="PyTorch elastic rendezvous on etcd, made visible.")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    status = commands.add_parser("status", help="print the runs, or one run's round and participants")
    add_connection_arguments(status, endpoint_required=True)
    status.add_argument("--run-id", default=None, help="show this run in detail")
    status.add_argument("--json", action="store_true", help="print JSON instead of a table")
    status.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for etcd (default 10)")

    server = commands.add_parser("server", help="run a throwaway etcd until Ctrl-C")
    server.add_argument("--no-v2", action="store_true", help="start etcd without its v2 API, as etcd 3.6 is")
    server.add_argument("--data-dir", default=None, help="keep etcd's data here instead of a temp dir")

    dashboard = commands.add_parser("dashboard", help="serve the live dashboard")
    add_connection_arguments(dashboard, endpoint_required=False)
    dashboard.add_argument("--run-id", default=None)
    dashboard.add_argument("--port", type=int, default=5006)
    dashboard.add_argument("--address", default="127.0.0.1")
    dashboard.add_argument("--show", action="store_true", help="open a browser")
    dashboard.add_argument("--allow-writes", action="store_true", help="enable write actions (behind a confirmation)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    # python-etcd logs every failed request at ERROR; the command reports failures itself.
    logging.getLogger("etcd.client").setLevel(logging.CRITICAL)
    try:
        args = build_parser().parse_args(argv)
        if args.command == "status":
            from .status_command import run_status

            return run_status(args)
        if args.command == "server":
            return _run_server(args)
        return _run_dashboard(args)
    except CommandError as exc:
        print(f"rdzv: {exc}", file=sys.stderr)
        return exc.code
    except KeyboardInterrupt:
        return 130


def _run_server(args: argparse.Namespace) -> int:
    from .server import EtcdServer

    server = EtcdServer(data_dir=args.data_dir, enable_v2=not args.no_v2)
    try:
        server.start()
    except Exception as exc:  # noqa: BLE001 - reported as one sentence
        raise CommandError(f"etcd did not start: {exc}", EXIT_UNREACHABLE) from None
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, lambda *_: stop.set())
    apis = "v3" if args.no_v2 else "v2 and v3"
    print(f"etcd is serving the {apis} APIs at {server.get_endpoint()}", flush=True)
    print(f"  try: rdzv status --endpoint {server.get_endpoint()}", flush=True)
    print("Press Ctrl-C to stop it (its data is deleted).", flush=True)
    try:
        while not stop.wait(0.5):
            if not server.is_running():
                raise CommandError(f"etcd at {server.get_endpoint()} exited; its log is {server.log_path}.", EXIT_UNREACHABLE)
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
    print("etcd stopped.", flush=True)
    return EXIT_OK


def _run_dashboard(args: argparse.Namespace) -> int:
    from .ui.serve import serve_dashboard

    return serve_dashboard(args)


def print_json(data: object) -> None:
    json.dump(data, sys.stdout, indent=2, default=str)
    sys.stdout.write("\n")


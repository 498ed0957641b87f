"""The ``rdzv`` command: ``rdzv status``, ``rdzv history``, ``rdzv server``, ``rdzv dashboard``.

Every failure a person can cause or meet (unreachable etcd, unknown run,
undecodable state, bad arguments) ends in one sentence on stderr and a
non-zero exit code, never a traceback.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from collections.abc import Sequence

from .command_line import EXIT_OK, EXIT_UNREACHABLE, EXIT_USAGE, CommandError
from .exporter_command import add_exporter_arguments
from .history_command import add_history_arguments
from .record_command import add_record_arguments
from .options import add_dashboard_arguments, add_target_arguments
from .report_command import add_report_arguments


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one sentence instead of usage + message
        raise CommandError(f"{message}; see `{self.prog} --help`.", EXIT_USAGE)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="rdzv", description="PyTorch elastic rendezvous on etcd, made visible.")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    status = commands.add_parser("status", help="print the runs, or one run's round and participants")
    add_target_arguments(status)
    status.add_argument("--json", action="store_true", help="print JSON instead of a table")

    for name, summary, add_own_arguments in (
        ("history", "every revision of one run etcd still keeps, or its state at one", add_history_arguments),
        ("report", "one run's story as one self-contained HTML file", add_report_arguments),
        ("exporter", "serve Prometheus metrics of every run at /metrics", add_exporter_arguments),
        ("record", "append every revision of the runs to a recording file", add_record_arguments),
    ):
        command = commands.add_parser(name, help=summary)
        add_target_arguments(command)
        add_own_arguments(command)

    server = commands.add_parser("server", help="run a throwaway etcd until Ctrl-C")
    server.add_argument("--no-v2", action="store_true", help="start etcd without its v2 API, as etcd 3.6 is")
    server.add_argument("--data-dir", default=None, help="keep etcd's data here instead of a temp dir")

    dashboard = commands.add_parser("dashboard", help="serve the live dashboard (no endpoint: the demo)")
    add_dashboard_arguments(dashboard)
    dashboard.add_argument("--port", type=int, default=5006)
    dashboard.add_argument("--address", default="127.0.0.1")
    dashboard.add_argument("--show", action="store_true", help="open a browser")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    # python-etcd logs every failed request at ERROR; the command reports failures itself.
    logging.getLogger("etcd.client").setLevel(logging.CRITICAL)
    try:
        args = build_parser().parse_args(argv)
        if args.command == "status":
            from .status_command import run_status

            return run_status(args)
        if args.command == "history":
            from .history_command import run_history

            return run_history(args)
        if args.command == "report":
            from .report_command import run_report

            return run_report(args)
        if args.command == "exporter":
            from .exporter_command import run_exporter

            return run_exporter(args)
        if args.command == "record":
            from .record_command import run_record

            return run_record(args)
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

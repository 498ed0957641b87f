"""``rdzv exporter``: Prometheus metrics of every run at one etcd, served at ``/metrics``.

It follows etcd with one shared monitor (the dashboard's) and computes the metrics at each
scrape (:class:`rdzv.metrics.MonitorCollector`). It binds to loopback unless told otherwise:
the metrics name every run and node, so serving them to the network is an explicit choice
(``--allow-remote-scrapes``).
"""

from __future__ import annotations

import argparse
import signal
import threading

from .loopback import is_loopback_address
from .command_line import EXIT_OK, EXIT_USAGE, CommandError, resolve_target

READ_TIMEOUT = 5.0


def add_exporter_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--port", type=int, default=9479, help="port of /metrics (default 9479)")
    parser.add_argument("--address", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--allow-remote-scrapes", action="store_true",
                        help="allow binding to a non-loopback address: anyone who reaches it reads every run id "
                             "and node address")


def run_exporter(args: argparse.Namespace) -> int:
    """Serve ``/metrics`` until SIGTERM or Ctrl-C; the exit code."""
    from prometheus_client import CollectorRegistry, start_http_server

    from .metrics import MonitorCollector
    from .monitor import get_monitor

    target, resolved = resolve_target(args, timeout=READ_TIMEOUT)
    if not is_loopback_address(args.address) and not args.allow_remote_scrapes:
        raise CommandError(f"Binding the metrics to {args.address} would let anyone who reaches it read every run "
                           "and node name; bind to 127.0.0.1 behind your scraper's proxy, or pass "
                           "--allow-remote-scrapes to accept that.", EXIT_USAGE)
    if not 0 < args.port < 65536:
        raise CommandError(f"--port must be between 1 and 65535, not {args.port}.", EXIT_USAGE)
    monitor = get_monitor(target)
    registry = CollectorRegistry()
    registry.register(MonitorCollector(lambda: [monitor], resolved.settings))
    try:
        server, thread = start_http_server(args.port, addr=args.address, registry=registry)
    except OSError as exc:
        monitor.stop()
        raise CommandError(f"Cannot serve metrics on {args.address}:{args.port} ({exc.strerror or exc}); pick "
                           "another --port.", EXIT_USAGE) from None
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    print(f"Metrics of {target} are at http://{args.address}:{args.port}/metrics (Ctrl-C stops).", flush=True)
    try:
        stop.wait()
    finally:
        server.shutdown()
        monitor.stop()
    return EXIT_OK

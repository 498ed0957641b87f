"""``rdzv dashboard``: serve the dashboard page without ``panel serve``."""

from __future__ import annotations

import argparse
import signal
import sys

from .config import ConfigError, DashboardConfig, check_config

EXIT_USAGE = 2


def config_from_args(args: argparse.Namespace) -> DashboardConfig:
    """The dashboard settings of ``rdzv dashboard``'s parsed arguments (checked)."""
    config = DashboardConfig(
        endpoint=args.endpoint or None, run_id=args.run_id or None, prefix=args.prefix, api=args.api,
        protocol=args.protocol, ca_cert=args.ca_cert, ssl_cert=args.ssl_cert, ssl_cert_key=args.ssl_cert_key,
        allow_writes=args.allow_writes,
    )
    check_config(config)
    return config


def serve_dashboard(args: argparse.Namespace) -> int:
    """Serve the page at http://ADDRESS:PORT/dashboard until Ctrl-C; the exit code."""
    try:
        config = config_from_args(args)
    except ConfigError as exc:
        print(f"rdzv: {exc}", file=sys.stderr)
        return EXIT_USAGE
    import panel as pn

    from .launch import TITLE, build_dashboard, load_extensions

    def session_page():
        load_extensions()
        return build_dashboard(config)

    origins = [f"{args.address}:{args.port}", f"localhost:{args.port}"]
    server = pn.serve({"dashboard": session_page}, port=args.port, address=args.address, show=False, start=False,
                      verbose=False, websocket_origin=origins, title=TITLE, print_url=False)
    try:
        server.start()
    except OSError as exc:
        print(f"rdzv: cannot serve the dashboard on {args.address}:{args.port} ({exc.strerror or exc}); "
              "pick another --port.", file=sys.stderr)
        return EXIT_USAGE
    print(f"The dashboard is at http://{args.address}:{args.port}/dashboard (Ctrl-C stops it).", flush=True)
    if args.show:
        server.show("/dashboard")
    # SIGTERM ends the loop like Ctrl-C, so the demo's etcd is stopped and its data removed.
    signal.signal(signal.SIGTERM, lambda *_: server.io_loop.add_callback_from_signal(server.io_loop.stop))
    try:
        server.io_loop.start()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
    return 0

"""``rdzv dashboard``: serve the dashboard page without ``panel serve``, with sign-in, writers,
an audit log and HTTPS when asked, and refusing what would expose more than it should (see
:mod:`rdzv.ui.auth`) before anything is bound."""

from __future__ import annotations

import argparse
import signal
import stat
import sys

from ..command_line import EXIT_USAGE
from .auth import (
    check_audit_log,
    check_serving,
    is_loopback_address,
    server_options,
    session_page,
)
from ..monitor import replay
from ..recording import RecordingError
from .config import ConfigError, config_from_args


#: A closed page's session (its monitor subscription, callbacks and models) is released within
#: about ten seconds, instead of Bokeh's default half minute.
UNUSED_SESSIONS = {"check_unused_sessions_milliseconds": 5000, "unused_session_lifetime_milliseconds": 5000}


def serve_dashboard(args: argparse.Namespace) -> int:
    """Serve the page at http(s)://ADDRESS:PORT/dashboard until Ctrl-C; the exit code."""
    try:
        config = config_from_args(args)
        serving = config.serving
        check_serving(args.address, args.port, serving)
        options = server_options(args.address, args.port, serving)
        audit = check_audit_log(serving)
        if config.replay is not None:
            replay(config.replay)  # read it once now: a bad file is one sentence, not a broken page
    except (ConfigError, RecordingError) as exc:
        print(f"rdzv: {exc}", file=sys.stderr)
        return EXIT_USAGE
    import panel as pn

    from .launch import TITLE, load_extensions

    def page():
        load_extensions()
        return session_page(config, serving.sign_in)

    from .metrics_route import MetricsHandler

    metrics = ("/metrics", MetricsHandler,
               {"config": config, "sign_in": serving.sign_in, "passwords": serving.basic_auth})
    server = pn.serve({"dashboard": page}, port=args.port, address=args.address, show=False, start=False,
                      verbose=False, title=TITLE, print_url=False, extra_patterns=[metrics], **UNUSED_SESSIONS,
                      **options)
    try:
        server.start()
    except OSError as exc:
        print(f"rdzv: cannot serve the dashboard on {args.address}:{args.port} ({exc.strerror or exc}); "
              "pick another --port or --address.", file=sys.stderr)
        return EXIT_USAGE
    scheme = "https" if serving.ssl_certfile else "http"
    print(f"The dashboard is at {scheme}://{args.address}:{args.port}/dashboard (Ctrl-C stops it); "
          f"Prometheus metrics at /metrics.", flush=True)
    for line in _describe(args.address, serving, options, audit):
        print(line, flush=True)
    for warning in _warnings(args.address, serving):
        print(f"rdzv: warning: {warning}", file=sys.stderr, flush=True)
    if args.show:
        server.show("/login" if serving.sign_in else "/dashboard")
    # SIGTERM ends the loop like Ctrl-C, so the demo's etcd is stopped and its data removed.
    signal.signal(signal.SIGTERM, lambda *_: server.io_loop.add_callback_from_signal(server.io_loop.stop))
    try:
        server.io_loop.start()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
    return 0


def _describe(address: str, serving, options: dict, audit) -> list[str]:
    """What the startup says about who may see and do what."""
    if serving.basic_auth:
        who = f"Sign-in: the password file {serving.basic_auth}"
    elif serving.oauth_provider:
        who = f"Sign-in: Panel's {serving.oauth_provider} OAuth provider"
    elif is_loopback_address(address):
        who = "No sign-in: only this machine can open it"
    else:
        who = "NO SIGN-IN (--insecure-no-sign-in): anyone who can reach the port sees every node and store value"
    if not serving.writes:
        writes = "read-only"
    elif serving.writers:
        writes = f"writers: {', '.join(sorted(serving.writers))}"
    else:
        writes = "writes allowed from this machine"
    lines = [f"{who}; {writes}; websocket origins: {', '.join(options['websocket_origin'])}."]
    if audit is not None:
        lines.append(f"Every write is appended to the audit log {audit.path}.")
    return lines


def _warnings(address: str, serving) -> list[str]:
    warnings = []
    if serving.sign_in and not serving.ssl_certfile and not is_loopback_address(address):
        warnings.append("sign-in over plain HTTP sends passwords and session cookies unencrypted; add "
                        "--ssl-certfile/--ssl-keyfile or serve behind an HTTPS proxy.")
    if serving.basic_auth:
        mode = serving.basic_auth.stat().st_mode
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            warnings.append(f"the password file {serving.basic_auth} can be read by other users of this machine "
                            f"(mode {stat.S_IMODE(mode):o}); chmod 600 it.")
    return warnings

"""``rdzv record``: append every revision of the runs (and of their store) at one etcd to a
recording file as it happens, after reading back what etcd still keeps from before
(:class:`rdzv.recorder.RecordingSession`). A recorder killed with SIGKILL loses at most the
record it was writing (:mod:`rdzv.recording`).
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading

from .command_line import DEFAULT_LIMIT, EXIT_OK, EXIT_USAGE, CommandError, resolve_target
from .recorder import RecordingSession
from .recording import RecordingError

READ_TIMEOUT = 5.0


def add_record_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", help="the recording file (appended to if it is a recording of the same etcd)")
    parser.add_argument("--duration", type=float, default=None, help="stop after this many seconds (default: "
                        "until Ctrl-C or SIGTERM)")
    parser.add_argument("--limit", type=int, default=DEFAULT_LIMIT,
                        help=f"read back at most this many earlier revisions per run (default {DEFAULT_LIMIT})")


def run_record(args: argparse.Namespace) -> int:
    """Record until ``--duration`` passes, SIGTERM or Ctrl-C; the exit code."""
    target, resolved = resolve_target(args, timeout=READ_TIMEOUT)
    if not args.out:
        raise CommandError("rdzv record needs a file to write: pass --out FILE.", EXIT_USAGE)
    if args.duration is not None and not args.duration > 0:
        raise CommandError(f"--duration must be a positive number of seconds, not {args.duration:g}.", EXIT_USAGE)
    if args.limit < 1:
        raise CommandError(f"--limit must be at least 1, not {args.limit}.", EXIT_USAGE)
    try:
        session = RecordingSession(target, args.out, run_id=resolved.run_id, limit=args.limit, start=False)
    except RecordingError as exc:
        raise CommandError(str(exc), EXIT_USAGE) from None
    monitor = session.monitor
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    shown = {"state": None}

    def say_connection(_version: int) -> None:
        status = monitor.connection
        if status.state != shown["state"] and status.state in ("unreachable", "recovered"):
            print(f"rdzv record: {status.message}", file=sys.stderr, flush=True)
        shown["state"] = status.state

    monitor.subscribe(say_connection)
    what = f"run {resolved.run_id!r}" if resolved.run_id else "every run"
    print(f"Recording {what} at {target} to {session.path} (Ctrl-C stops).", flush=True)
    session.start()
    try:
        stop.wait(args.duration)
    finally:
        session.stop()
    print(f"Recorded {session.count} revisions of {len(session.runs)} run(s) to {session.path}.", flush=True)
    return EXIT_OK

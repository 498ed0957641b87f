"""``rdzv status``: a one-shot terminal snapshot of the runs below a prefix of one etcd.

It reads etcd once (one listing per API) and exits; it does not start a monitor. Every
failure becomes a :class:`rdzv.cli.CommandError`: one sentence naming the endpoint or
run, and the exit code that says which failure it was.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from datetime import datetime

from .cli import EXIT_NOT_FOUND, EXIT_OK, EXIT_UNDECODABLE, EXIT_UNREACHABLE, EXIT_USAGE, CommandError, print_json
from .kv import API_VERSIONS, KVError, KVUnavailableError, connect
from .monitor.keys import KeyLayout
from .state import RendezvousSnapshot, UndecodableStateError, decode_state_b64
from .text import NO_VALUE, countdown, printable, run_state, since, utc_now


@dataclass(frozen=True)
class RunStatus:
    """One run as read: its snapshot, or why it could not be decoded."""

    run_id: str
    api: str
    revision: int
    snapshot: RendezvousSnapshot | None
    error: str | None

    deleted = False  # a listing holds only keys that exist

    @property
    def state(self) -> str:
        return run_state(self)


def read_runs(args: argparse.Namespace) -> list[RunStatus]:
    """Every run below ``args.prefix`` on each API asked for (``args.api`` or, when ``None``,
    every API the server offers), sorted by run id then API.

    Raises :class:`CommandError` when no API answered or the arguments are bad.
    """
    layout = KeyLayout(args.prefix)
    apis = (args.api,) if args.api else API_VERSIONS
    runs: list[RunStatus] = []
    answered = 0
    refusals: list[str] = []
    unreachable: str | None = None
    for api in apis:
        try:
            kv = connect(
                args.endpoint, api, read_timeout=args.timeout, protocol=args.protocol,
                ssl_cert=args.ssl_cert, ssl_cert_key=args.ssl_cert_key, ca_cert=args.ca_cert,
            )
        except (ValueError, TypeError) as exc:
            raise CommandError(_sentence(str(exc)), EXIT_USAGE) from None
        try:
            listing = kv.list(layout.runs_dir)
        except KVUnavailableError as exc:
            unreachable = str(exc)
            break  # the same server serves both APIs: no point waiting twice
        except KVError as exc:
            refusals.append(f"{api}: {exc}")
            continue
        finally:
            kv.close()
        answered += 1
        for item in listing.items:
            run_id = layout.run_id(item.key)
            if run_id is None or "/" in run_id:
                continue
            try:
                snapshot, error = decode_state_b64(item.value, run_id=run_id), None
            except UndecodableStateError as exc:
                snapshot, error = None, str(exc)
            runs.append(RunStatus(run_id, api, item.revision, snapshot, error))
    if not answered:
        if unreachable is not None:
            raise CommandError(_sentence(unreachable), EXIT_UNREACHABLE)
        raise CommandError(
            f"etcd at {args.endpoint} refused to list {layout.runs_dir} ({'; '.join(map(_clause, refusals))}).",
            EXIT_UNREACHABLE,
        )
    return sorted(runs, key=lambda run: (run.run_id, run.api))


def run_status(args: argparse.Namespace) -> int:
    """Print the runs (or ``args.run_id`` in detail) as a table or JSON; return the exit code."""
    if args.timeout <= 0:
        raise CommandError(f"--timeout must be a positive number of seconds, not {args.timeout:g}.", EXIT_USAGE)
    runs = read_runs(args)
    if args.run_id is None:
        if args.json:
            print_json({"endpoint": args.endpoint, "prefix": KeyLayout(args.prefix).prefix,
                        "runs": [_run_json(run) for run in runs]})
        else:
            print(format_fleet(runs, args.endpoint, utc_now()))
        return EXIT_OK
    chosen = [run for run in runs if run.run_id == args.run_id]
    if not chosen:
        known = ", ".join(sorted({run.run_id for run in runs})) or "none"
        raise CommandError(
            f"No run {args.run_id!r} at {args.endpoint} below {KeyLayout(args.prefix).prefix or '/'} "
            f"(runs there: {known}).", EXIT_NOT_FOUND,
        )
    if args.json:
        print_json(_run_json(chosen[0]) if len(chosen) == 1 else [_run_json(run) for run in chosen])
    else:
        print("\n\n".join(format_run(run, utc_now()) for run in chosen))
    broken = [run for run in chosen if run.snapshot is None]
    if len(broken) == len(chosen):
        raise CommandError(broken[0].error or f"The state of run {args.run_id!r} is undecodable.", EXIT_UNDECODABLE)
    return EXIT_OK


def format_fleet(runs: list[RunStatus], endpoint: str, now: datetime) -> str:
    """The table of every run: id, API, state, round, participants, waiting, revision."""
    if not runs:
        return f"No rendezvous runs at {endpoint}."
    header = ("RUN", "API", "STATE", "ROUND", "PARTICIPANTS", "WAITING", "REVISION")
    rows = [header]
    for run in runs:
        snap = run.snapshot
        rows.append((
            printable(run.run_id), run.api, run.state,
            NO_VALUE if snap is None else str(snap.round),
            NO_VALUE if snap is None else str(len(snap.participants)),
            NO_VALUE if snap is None else str(len(snap.wait_list)),
            str(run.revision),
        ))
    lines = [_row(row, rows) for row in rows]
    lines.extend(f"  {printable(run.run_id)} ({run.api}): {printable(run.error)}" for run in runs if run.error)
    return "\n".join(lines)


def format_run(run: RunStatus, now: datetime) -> str:
    """One run in detail: round, flags, deadline and a row per node."""
    head = f"Run {printable(run.run_id)} ({run.api}, revision {run.revision}): {run.state}"
    snap = run.snapshot
    if snap is None:
        return f"{head}\n  {printable(run.error or '')}"
    lines = [
        head,
        f"  round {snap.round}, complete={snap.complete}, closed={snap.closed}, "
        f"last-call deadline {countdown(snap.deadline, now)}",
        f"  {len(snap.participants)} participants, {len(snap.wait_list)} waiting, "
        f"{len(snap.redundancy_list)} redundant",
    ]
    nodes = sorted(snap.nodes, key=lambda node: (snap.participants.get(node, 1 << 30), str(node)))
    if not nodes:
        return "\n".join(lines)
    stale = snap.stale(now)
    rows = [("NODE", "RANK", "LIST", "HEARTBEAT")]
    for node in nodes:
        rank = snap.participants.get(node)
        age = since(snap.last_heartbeats.get(node), now)
        rows.append((
            printable(str(node)), NO_VALUE if rank is None else str(rank),
            snap.membership(node) or "heartbeat only",
            f"{age} ago (stale)" if node in stale else (f"{age} ago" if age != NO_VALUE else age),
        ))
    lines.append("")
    lines.extend("  " + _row(row, rows) for row in rows)
    return "\n".join(lines)


def _run_json(run: RunStatus) -> dict:
    return {
        "run_id": run.run_id, "api": run.api, "revision": run.revision, "state": run.state,
        "error": run.error, "snapshot": None if run.snapshot is None else run.snapshot.to_dict(),
    }


def _row(row: tuple[str, ...], rows: list[tuple[str, ...]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(row))]
    return "  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip()


def _clause(text: str) -> str:
    """``text`` as a clause inside a sentence: no final period."""
    return text.strip().rstrip(".")


def _sentence(text: str) -> str:
    text = text.strip()
    return text if text.endswith(".") else text + "."

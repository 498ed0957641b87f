"""``rdzv status``: a one-shot terminal snapshot of the runs below a prefix of one etcd.

It reads etcd once (one listing per API) and exits; it does not start a monitor. Every
failure becomes a :class:`rdzv.cli.CommandError`: one sentence naming the endpoint or
run, and the exit code that says which failure it was.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from datetime import datetime

from .command_line import (
    EXIT_NOT_FOUND,
    EXIT_OK,
    EXIT_UNDECODABLE,
    EXIT_UNREACHABLE,
    CommandError,
    clause,
    print_json,
    resolve_target,
    sentence,
)
from .kv import KVError, KVUnavailableError, Target
from .diagnosis import Finding, diagnose, headline
from .nodes import COLUMNS, node_rows
from .rendezvous_settings import RendezvousSettings, read_published_settings
from .state import RendezvousSnapshot, UndecodableStateError, decode_state_b64
from .text import NO_VALUE, age, countdown, printable, run_state, utc_now

READ_TIMEOUT = 10.0
"""Seconds ``rdzv status`` waits for etcd per request unless --timeout says otherwise."""


@dataclass(frozen=True)
class RunStatus:
    """One run as read: its snapshot, or why it could not be decoded, and the settings its
    handlers published (rdzv's plugins do), if any."""

    run_id: str
    api: str
    revision: int
    snapshot: RendezvousSnapshot | None
    error: str | None
    published: RendezvousSettings | None = None
    refusal: str | None = None

    deleted = False  # a listing holds only keys that exist

    @property
    def state(self) -> str:
        return run_state(self)

    def settings(self, given: RendezvousSettings | None) -> RendezvousSettings:
        """The run's settings: the published ones over ``given`` (the flags) over torch's defaults."""
        base = given or RendezvousSettings()
        return base.merged(self.published) if self.published is not None else base

    def findings(self, given: RendezvousSettings | None, now: datetime) -> tuple[Finding, ...]:
        """What the run is waiting for and what torch does next (:func:`rdzv.diagnosis.diagnose`)."""
        reading = self.snapshot if self.snapshot is not None else UndecodableStateError(self.refusal or self.error or "")
        return diagnose(reading, self.settings(given), now)


def read_runs(target: Target) -> list[RunStatus]:
    """Every run below the target's prefix on each of its APIs (both when it names none),
    sorted by run id then API.

    Raises :class:`CommandError` when no API answered.
    """
    layout = target.layout
    runs: list[RunStatus] = []
    answered = 0
    refusals: list[str] = []
    unreachable: KVUnavailableError | None = None
    for api in target.apis:
        kv = target.connect(api)
        try:
            listing = kv.list(layout.runs_dir)
            published = {layout.settings_run_id(item.key): read_published_settings(item.value)
                         for item in kv.list(layout.settings_dir).items}
        except KVUnavailableError as exc:
            unreachable = exc
            break  # the same server serves both APIs: no point waiting twice
        except KVError as exc:
            refusals.append(f"{api}: {clause(str(exc))}")
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
                snapshot, error, refusal = None, str(exc), exc.reason
            else:
                refusal = None
            runs.append(RunStatus(run_id, api, item.revision, snapshot, error, published.get(run_id), refusal))
    if not answered:
        if unreachable is not None:
            raise CommandError(sentence(str(unreachable)), EXIT_UNREACHABLE)
        raise CommandError(f"{target} refused to list {layout.runs_dir} ({'; '.join(refusals)}).", EXIT_UNREACHABLE)
    return sorted(runs, key=lambda run: (run.run_id, run.api))


def run_status(args: argparse.Namespace) -> int:
    """Print the runs (or the chosen run in detail) as a table or JSON; return the exit code.
    The settings come from the flags and ``RDZV_*`` variables (:mod:`rdzv.options`)."""
    target, resolved = resolve_target(args, timeout=READ_TIMEOUT)
    runs = read_runs(target)
    run_id, settings = resolved.run_id, resolved.settings
    if run_id is None:
        if args.json:
            now = utc_now()
            print_json({"endpoint": target.endpoint, "prefix": target.prefix,
                        "runs": [_run_json(run, settings, now, nodes=False) for run in runs]})
        else:
            print(format_fleet(runs, target.endpoint, utc_now(), settings))
        return EXIT_OK
    chosen = [run for run in runs if run.run_id == run_id]
    if not chosen:
        known = ", ".join(sorted({run.run_id for run in runs})) or "none"
        raise CommandError(f"No run {run_id!r} at {target.endpoint} below {target.prefix or '/'} (runs there: {known}).",
                           EXIT_NOT_FOUND)
    now = utc_now()
    if args.json:
        print_json(_run_json(chosen[0], settings, now) if len(chosen) == 1
                   else [_run_json(run, settings, now) for run in chosen])
    else:
        print("\n\n".join(format_run(run, now, settings) for run in chosen))
    broken = [run for run in chosen if run.snapshot is None]
    if len(broken) == len(chosen):
        raise CommandError(broken[0].error or f"The state of run {run_id!r} is undecodable.", EXIT_UNDECODABLE)
    return EXIT_OK


def format_fleet(runs: list[RunStatus], endpoint: str, now: datetime,
                 settings: RendezvousSettings | None = None) -> str:
    """The table of every run (id, API, state, round, participants, waiting, revision), then
    each run's most important finding."""
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
    lines.append("")
    for run in runs:
        finding = headline(run.findings(settings, now))
        if finding is not None:
            lines.append(f"  {printable(run.run_id)} ({run.api}): {_finding_line(finding, now)}")
    return "\n".join(lines).rstrip()


def _finding_line(finding: Finding, now: datetime) -> str:
    when = f" ({countdown(finding.at, now)})" if finding.at is not None else ""
    return f"[{finding.severity}] {printable(finding.message)}{when}"


def format_run(run: RunStatus, now: datetime, settings: RendezvousSettings | None = None) -> str:
    """One run in detail: round, flags, deadline and a row per node (:func:`rdzv.nodes.node_rows`)."""
    head = f"Run {printable(run.run_id)} ({run.api}, revision {run.revision}): {run.state}"
    snap = run.snapshot
    if snap is None:
        finding = headline(run.findings(settings, now))
        return f"{head}\n  {printable(run.error or '')}" + (f"\n  {_finding_line(finding, now)}" if finding else "")
    lines = [
        head,
        f"  round {snap.round}, complete={snap.complete}, closed={snap.closed}, "
        f"last-call deadline {countdown(snap.deadline, now)}",
        f"  {len(snap.participants)} participants, {len(snap.wait_list)} waiting, "
        f"{len(snap.redundancy_list)} redundant",
    ]
    settings = run.settings(settings)
    lines.append("")
    lines.append("  What's happening:")
    for finding in run.findings(settings, now):
        lines.append(f"    {_finding_line(finding, now)}")
        lines.append(f"      next: {printable(finding.next)}")
    rows = node_rows(snap, settings, now)
    if not rows:
        return "\n".join(lines)
    table = [tuple(heading.upper() for _, heading in COLUMNS)]
    for row in rows:
        table.append((
            printable(row.addr), str(row.pid), str(row.local_id), NO_VALUE if row.rank is None else str(row.rank),
            row.list, NO_VALUE if row.heartbeat_age is None else f"{age(row.heartbeat_age)} ago",
            "stale" if row.stale else "",
        ))
    lines.append("")
    lines.extend("  " + _row(cells, table) for cells in table)
    return "\n".join(lines)


def _run_json(run: RunStatus, settings: RendezvousSettings | None, now: datetime, *, nodes: bool = True) -> dict:
    effective = run.settings(settings)
    data = {
        "run_id": run.run_id, "api": run.api, "revision": run.revision, "state": run.state,
        "error": run.error, "snapshot": None if run.snapshot is None else run.snapshot.to_dict(),
        "settings": {**effective.to_dict(), "given": sorted(effective.given)},
        "findings": [finding.to_dict() for finding in run.findings(settings, now)],
    }
    if nodes and run.snapshot is not None:
        data["nodes"] = [
            {"addr": row.addr, "pid": row.pid, "local_id": row.local_id, "rank": row.rank, "list": row.list,
             "heartbeat_age_s": None if row.heartbeat_age is None else round(row.heartbeat_age.total_seconds(), 3),
             "stale": row.stale}
            for row in node_rows(run.snapshot, effective, now)
        ]
    return data


def _row(row: tuple[str, ...], rows: list[tuple[str, ...]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(row))]
    return "  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip()

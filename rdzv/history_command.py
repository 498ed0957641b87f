"""``rdzv history``: every revision of one run that etcd still keeps, one line each with what it
changed and what it meant; or, with ``--at``, the whole state at one revision.

It reads etcd once (the same read-back the monitor does when it first sees a run) and exits.
Failures are one sentence with the exit codes of ``rdzv status``.
"""

from __future__ import annotations

import argparse

from .command_line import (
    EXIT_NOT_FOUND,
    EXIT_OK,
    EXIT_UNDECODABLE,
    CommandError,
    add_story_arguments,
    print_json,
    read_story,
)
from .diagnosis import Finding, headline
from .monitor import Revision, RunHistory, change_sentences, diagnose_view, revision_time
from .rendezvous_settings import RendezvousSettings
from .status_command import READ_TIMEOUT, RunStatus, format_run
from .text import printable

def add_history_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print JSON instead of lines")
    parser.add_argument("--at", type=int, default=None, metavar="REVISION",
                        help="print the whole state as it was at this revision")
    add_story_arguments(parser)


def run_history(args: argparse.Namespace) -> int:
    """Print the run's history (or its state at ``--at``); return the exit code."""
    story = read_story(args, "history", timeout=READ_TIMEOUT)
    history, settings = story.history, story.settings
    if args.at is not None:
        return _print_state_at(history, args.at, settings, as_json=args.json)
    if args.json:
        print_json({"run_id": history.run_id, "api": history.api, "source": story.source,
                    "revisions": [_revision_json(entry, settings) for entry in history.revisions]})
    else:
        print(format_history(history, settings))
    return EXIT_OK


def _findings_then(entry: Revision, settings: RendezvousSettings) -> tuple[Finding, ...]:
    """The diagnosis as it stood when ``entry`` was written."""
    return diagnose_view(entry, settings, entry.seen_at)


def format_history(history: RunHistory, settings: RendezvousSettings) -> str:
    """A heading saying how complete the story is, then one line per revision (heartbeat-only
    revisions as one short line) with the diagnosis of each change beneath it."""
    revisions, scope = history.revisions, history.scope()
    lines = [f"Run {printable(history.run_id)} ({history.api}): {len(revisions)} revisions, {scope}. "
             f"Times marked ≈ are estimated from the state (etcd records none)."]
    for entry in revisions:
        snap = entry.snapshot
        counts = (f"round {snap.round}, {len(snap.participants)}p {len(snap.wait_list)}w {len(snap.redundancy_list)}r"
                  if snap is not None else "no state")
        origin = "read back" if entry.read_back else "now"
        told = " ".join(printable(text) for text in change_sentences(entry, heartbeats=False)) or "Heartbeats only."
        lines.append(f"{entry.revision:>8}  {revision_time(entry):>13}  {origin:<9}  {counts:<24}  {told}")
        if not entry.heartbeat_only:
            finding = headline(_findings_then(entry, settings))
            if finding is not None:
                lines.append(f"{'':>36}↳ [{finding.severity}] {printable(finding.message)}")
    return "\n".join(lines)


def _revision_json(entry: Revision, settings: RendezvousSettings) -> dict:
    return {
        "revision": entry.revision, "written_at": entry.seen_at.isoformat(), "time_estimated": entry.time_estimated,
        "read_back": entry.read_back, "complete_from": entry.complete_from, "deleted": entry.deleted,
        "error": entry.error, "changes": change_sentences(entry),
        "snapshot": None if entry.snapshot is None else entry.snapshot.to_dict(),
        "findings": [finding.to_dict() for finding in _findings_then(entry, settings)],
    }


def _print_state_at(history: RunHistory, revision: int, settings: RendezvousSettings, *, as_json: bool) -> int:
    entries = [entry for entry in history.revisions if entry.revision <= revision]
    if not entries:
        oldest = history.revisions[0].revision if history.revisions else history.view.revision
        raise CommandError(f"etcd keeps the revisions of run {history.run_id!r} from {oldest} on; revision "
                           f"{revision} is older.", EXIT_NOT_FOUND)
    entry = entries[-1]
    if as_json:
        print_json({"run_id": history.run_id, "api": history.api, "asked": revision, **_revision_json(entry, settings)})
    else:
        status = RunStatus(history.run_id, history.api, entry.revision, entry.snapshot, entry.error, history.published,
                           entry.refusal)
        note = f"As of revision {revision} (written at revision {entry.revision}, {revision_time(entry)} UTC):"
        print(note + "\n" + format_run(status, entry.seen_at, settings))
    if entry.snapshot is None and entry.error is not None:
        raise CommandError(f"The state of run {history.run_id!r} at revision {entry.revision} is undecodable.",
                           EXIT_UNDECODABLE)
    return EXIT_OK

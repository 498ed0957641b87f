"""How a history entry is told: its kind, its sentences and its time, the same in the dashboard's
timeline and event log, ``rdzv history`` and the report."""

from __future__ import annotations

from .model import Revision
from ..text import clock

ESTIMATE_MARK = "≈"
"""Written before a time that etcd did not record and was estimated from the state."""


def revision_kind(revision: Revision) -> str:
    """How a revision is drawn: an undecodable or deleted state, a re-list, a heartbeat, a change
    read back from etcd's history, or a change seen live."""
    if revision.error is not None:
        return "undecodable"
    if revision.snapshot is None:
        return "deleted"
    if revision.resync:
        return "resync"
    if revision.heartbeat_only or not revision.changes:
        return "heartbeat"
    return "read_back" if revision.read_back else "change"


def change_sentences(revision: Revision, heartbeats: bool = True) -> list[str]:
    """One sentence per change of ``revision`` (heartbeat changes only if ``heartbeats``), or a
    sentence for what else it is; a revision after which etcd's history is lost says so first."""
    kind = revision_kind(revision)
    if kind == "undecodable":
        sentences = [revision.error or "The state could not be decoded."]
    elif kind == "deleted":
        sentences = ["The run's state was deleted or expired."]
    else:
        sentences = [change.describe() for change in revision.changes if heartbeats or change.kind != "heartbeat"]
        if kind == "resync":
            sentences.insert(0, "The monitor re-read the state after missing events.")
        if not sentences and kind == "heartbeat":
            sentences = ["Heartbeats only."]
    if revision.complete_from is not None:
        sentences.insert(0, f"etcd no longer keeps this run's earlier revisions: its story is complete from "
                            f"revision {revision.complete_from} on.")
    return sentences


def revision_time(revision: Revision) -> str:
    """When ``revision`` was written, ``HH:MM:SS.mmm`` in UTC, marked :data:`ESTIMATE_MARK` when
    etcd did not record it (a revision read back from its history)."""
    return (ESTIMATE_MARK if revision.time_estimated else "") + clock(revision.seen_at)

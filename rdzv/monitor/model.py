"""What the monitor shows: immutable records, safe to hand to any thread."""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Literal

from ..diagnosis import Finding, diagnose
from ..diff import Change
from ..rendezvous_settings import RendezvousSettings
from ..state import RendezvousSnapshot, UndecodableStateError

ConnectionState = Literal["connecting", "connected", "unreachable", "recovered"]


def utc_now() -> datetime:
    """The clock of every record's timestamp: now, in UTC."""
    return datetime.now(timezone.utc)


@dataclass(frozen=True, slots=True)
class ConnectionStatus:
    """Whether the monitor reaches etcd.

    ``state`` is ``"connecting"`` until etcd first answers, ``"connected"`` while it
    answers, ``"unreachable"`` while it does not (the last data seen stays visible), and
    ``"recovered"`` for a while after it answers again (every run was re-read then).
    ``since`` (UTC) is when this state began; ``message`` says it in one sentence.
    """

    state: ConnectionState
    since: datetime
    message: str


@dataclass(frozen=True, slots=True)
class RunView:
    """The latest known state of one run.

    ``revision`` is the etcd index (v2) or mod_revision (v3) of that state, or of its
    deletion. ``snapshot`` is ``None`` when the key is deleted (``deleted``) or its value
    is undecodable (``error`` then holds the one-sentence reason, ``refusal`` the decoder's few
    words). ``updated_at`` (UTC)
    is when the monitor saw ``revision``.
    """

    run_id: str
    api: str
    key: str
    revision: int
    snapshot: RendezvousSnapshot | None
    error: str | None
    updated_at: datetime
    deleted: bool
    refusal: str | None = None


@dataclass(frozen=True, slots=True)
class Revision:
    """One entry of a run's history: one revision of its state key.

    ``size`` is the length in bytes of the stored (base64) value (0 for a deletion).
    ``changes`` is the diff from the previous entry (:func:`rdzv.diff.diff_states`);
    ``heartbeat_only`` says every change is a heartbeat. An entry with neither
    ``snapshot`` nor ``error`` is a deletion. ``resync`` marks an entry made by re-reading
    etcd after missed events (compaction, reconnection) rather than from a watch event.
    ``skipped`` counts the revisions just before this one that the monitor folded into it
    without decoding them, because it had fallen behind (see
    :data:`rdzv.monitor.mirror.COALESCE_ABOVE`). After a resync or a skip, ``changes``
    sums up every revision in between.

    ``read_back`` marks a revision read back from etcd's history (before the monitor started,
    or while it was away) rather than seen live; etcd keeps no time for it, so its
    ``seen_at`` is an estimate (``time_estimated``: the newest heartbeat the state carries).
    ``complete_from``, on the oldest entry read back, says etcd no longer kept the run's
    revisions before that one: the story is complete from there on.
    """

    run_id: str
    revision: int
    seen_at: datetime
    size: int
    snapshot: RendezvousSnapshot | None
    error: str | None
    changes: tuple[Change, ...]
    heartbeat_only: bool
    resync: bool
    skipped: int = 0
    read_back: bool = False
    time_estimated: bool = False
    complete_from: int | None = None
    refusal: str | None = None

    @property
    def deleted(self) -> bool:
        """Whether this entry records the deletion (or expiry) of the state key."""
        return self.snapshot is None and self.error is None


def entry_at(history: Sequence[Revision], revision: int) -> Revision | None:
    """The newest entry of ``history`` (oldest first) at or before ``revision``."""
    found = bisect.bisect_right([entry.revision for entry in history], revision)
    return history[found - 1] if found else None


def diagnose_view(view: RunView | Revision, settings: RendezvousSettings, now: datetime) -> tuple[Finding, ...]:
    """:func:`rdzv.diagnosis.diagnose` of one run view or history entry (a deletion has no state;
    an undecodable value is diagnosed by the decoder's refusal)."""
    reading: RendezvousSnapshot | UndecodableStateError | None = view.snapshot
    if reading is None and view.error is not None:
        reading = UndecodableStateError(view.refusal or view.error)
    written = view.updated_at if isinstance(view, RunView) else view.seen_at
    return diagnose(reading, settings, now, revision_time=written)


@dataclass(frozen=True, slots=True)
class StoreItem:
    """One key of a job's store (``<prefix>/store/<base64 key>``).

    ``key`` is the decoded key name (the raw etcd key name if it is not base64 of
    UTF-8 text); ``value`` the decoded value bytes (the raw text as UTF-8 if not base64).
    """

    key: str
    value: bytes
    revision: int
    api: str

"""Following one run's state key: each revision becomes a :class:`RunView` and a :class:`Revision`."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from dataclasses import replace
from datetime import datetime
from typing import Any

from ..diff import diff_states, heartbeat_changes, is_heartbeat_only
from ..kv import Event
from ..state import RendezvousSnapshot, UndecodableStateError, state_bytes
from ..state_stream import StateStream
from .model import Revision, RunView
from .stats import DecodeTimes

logger = logging.getLogger(__name__)


def _decode(stream: StateStream, value: str, run_id: str
            ) -> tuple[RendezvousSnapshot | None, frozenset | None, UndecodableStateError | None]:
    """``(snapshot, nodes whose heartbeat alone changed or None, None)``, or ``(None, None, why)``
    when ``value`` is not a state."""
    try:
        snapshot, heartbeats = stream.decode(state_bytes(value, run_id=run_id))
        return snapshot, heartbeats, None
    except UndecodableStateError as exc:
        return None, None, exc
    except Exception as exc:  # the decoder's own bug must not stop the watcher or stale the view
        logger.exception("Decoding the state of run %r failed unexpectedly.", run_id)
        return None, None, UndecodableStateError(f"decoder failure: {type(exc).__name__}", run_id)


def estimated_write_time(snapshot: RendezvousSnapshot | None) -> datetime | None:
    """When a state was written, estimated from the state itself: its newest heartbeat (every
    handler stamps its own heartbeat before it writes, so a write comes at or after it)."""
    if snapshot is None or not snapshot.last_heartbeats:
        return None
    return max(snapshot.last_heartbeats.values())


class RunTracker:
    """The revisions of one run on one API, seen in order.

    Decodes each value once: a revision already seen costs nothing, and a new revision
    whose value is byte-for-byte the previous one reuses the previous snapshot. Not
    thread-safe: one watcher thread owns it.
    """

    def __init__(self, run_id: str, api: str, key: str, decode_times: DecodeTimes | None = None) -> None:
        self.run_id = run_id
        self._decode_times = decode_times
        self._stream = StateStream(run_id)
        self.api = api
        self.key = key
        self.view: RunView | None = None
        self._value: str | None = None
        self._snapshot: RendezvousSnapshot | None = None
        self._error: UndecodableStateError | None = None
        # What the next diff starts from: the last decodable snapshot (an undecodable
        # revision in between does not hide what changed across it).
        self._baseline: RendezvousSnapshot | None = None
        #: The ``complete_from`` for the next entry, when a read-back found nothing etcd still kept.
        self.complete_from_next: int | None = None

    @property
    def _sentence(self) -> str | None:
        return None if self._error is None else str(self._error)

    @property
    def _refusal(self) -> str | None:
        return None if self._error is None else self._error.reason

    @property
    def revision(self) -> int | None:
        return None if self.view is None else self.view.revision

    def put(
        self, value: str, revision: int, seen_at: datetime, *, resync: bool = False, skipped: int = 0,
        **marks: Any,
    ) -> Revision | None:
        """Record that the key holds ``value`` at ``revision`` (``skipped`` revisions before it were
        not decoded); ``None`` if that revision was already seen. ``marks`` are the
        :class:`Revision` fields of a read-back entry (``read_back``, ``time_estimated``,
        ``complete_from``)."""
        if self.view is not None and self.view.revision == revision:
            return None
        if self.complete_from_next is not None:
            marks.setdefault("complete_from", self.complete_from_next)
            self.complete_from_next = None
        if value == self._value:
            changes: tuple = ()
        else:
            self._value = value
            started = time.perf_counter()
            self._snapshot, heartbeats, self._error = _decode(self._stream, value, self.run_id)
            if self._snapshot is None:
                changes = ()
            elif heartbeats is not None and self._baseline is not None:
                changes = tuple(heartbeat_changes(self._snapshot, heartbeats))
            else:
                changes = tuple(diff_states(self._baseline, self._snapshot))
            if self._snapshot is not None:
                self._baseline = self._snapshot
            if self._decode_times is not None:
                self._decode_times.observe(time.perf_counter() - started)
        self.view = RunView(
            run_id=self.run_id, api=self.api, key=self.key, revision=revision, snapshot=self._snapshot,
            error=self._sentence, refusal=self._refusal, updated_at=seen_at, deleted=False,
        )
        return Revision(
            run_id=self.run_id, revision=revision, seen_at=seen_at, size=len(value.encode("utf-8", "surrogateescape")),
            snapshot=self._snapshot, error=self._sentence, refusal=self._refusal, changes=changes,
            heartbeat_only=is_heartbeat_only(changes), resync=resync, skipped=skipped, **marks,
        )

    def read_back(self, events: Iterable[Event], complete_from: int | None, fallback: datetime) -> list[Revision]:
        """Record revisions read back from etcd's history (oldest first, all older than any seen
        live): each entry is marked ``read_back``, timed by :func:`estimated_write_time` (or the
        estimate before it, or ``fallback``) and marked ``time_estimated``; the first carries
        ``complete_from``."""
        entries: list[Revision] = []
        estimate = None
        for event in events:
            marks = dict(read_back=True, time_estimated=True, complete_from=None if entries else complete_from)
            if event.kind == "delete":
                entry = self.delete(event.revision, estimate or fallback, **marks)
            else:
                entry = self.put(event.value or "", event.revision, fallback, **marks)
                if entry is not None:
                    # A later revision was written no earlier than an earlier one, nor after now.
                    found = estimated_write_time(entry.snapshot)
                    if found is not None:
                        estimate = min(max(found, estimate or found), fallback)
                    entry = replace(entry, seen_at=estimate or fallback)
                    self.view = replace(self.view, updated_at=entry.seen_at)
            if entry is not None:
                entries.append(entry)
        return entries

    def delete(self, revision: int, seen_at: datetime, *, resync: bool = False, skipped: int = 0,
               **marks: Any) -> Revision | None:
        """Record that the key was deleted (or expired) at ``revision``; ``None`` if it already was."""
        if self.view is None or self.view.deleted:
            return None
        self._value = self._snapshot = self._error = self._baseline = None
        self._stream = StateStream(self.run_id)
        self.view = RunView(
            run_id=self.run_id, api=self.api, key=self.key, revision=revision, snapshot=None, error=None,
            updated_at=seen_at, deleted=True,
        )
        return Revision(
            run_id=self.run_id, revision=revision, seen_at=seen_at, size=0, snapshot=None, error=None,
            changes=(), heartbeat_only=False, resync=resync, skipped=skipped, **marks,
        )

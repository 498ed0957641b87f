"""Following one run's state key: each revision becomes a :class:`RunView` and a :class:`Revision`."""

from __future__ import annotations

import logging
from datetime import datetime

from ..diff import diff_states, is_heartbeat_only
from ..state import RendezvousSnapshot, UndecodableStateError, decode_state_b64
from .model import Revision, RunView

logger = logging.getLogger(__name__)


def _decode(value: str, run_id: str) -> tuple[RendezvousSnapshot | None, str | None]:
    """``(snapshot, None)``, or ``(None, the sentence saying why)`` when ``value`` is not a state."""
    try:
        return decode_state_b64(value, run_id=run_id), None
    except UndecodableStateError as exc:
        return None, str(exc)
    except Exception as exc:  # the decoder's own bug must not stop the watcher or stale the view
        logger.exception("Decoding the state of run %r failed unexpectedly.", run_id)
        return None, str(UndecodableStateError(f"decoder failure: {type(exc).__name__}", run_id))


class RunTracker:
    """The revisions of one run on one API, seen in order.

    Decodes each value once: a revision already seen costs nothing, and a new revision
    whose value is byte-for-byte the previous one reuses the previous snapshot. Not
    thread-safe: one watcher thread owns it.
    """

    def __init__(self, run_id: str, api: str, key: str) -> None:
        self.run_id = run_id
        self.api = api
        self.key = key
        self.view: RunView | None = None
        self._value: str | None = None
        self._snapshot: RendezvousSnapshot | None = None
        self._error: str | None = None
        # What the next diff starts from: the last decodable snapshot (an undecodable
        # revision in between does not hide what changed across it).
        self._baseline: RendezvousSnapshot | None = None

    @property
    def revision(self) -> int | None:
        return None if self.view is None else self.view.revision

    def put(
        self, value: str, revision: int, seen_at: datetime, *, resync: bool = False, skipped: int = 0
    ) -> Revision | None:
        """Record that the key holds ``value`` at ``revision`` (``skipped`` revisions before it were
        not decoded); ``None`` if that revision was already seen."""
        if self.view is not None and self.view.revision == revision:
            return None
        if value == self._value:
            changes: tuple = ()
        else:
            self._value = value
            self._snapshot, self._error = _decode(value, self.run_id)
            if self._snapshot is None:
                changes = ()
            else:
                changes = tuple(diff_states(self._baseline, self._snapshot))
                self._baseline = self._snapshot
        self.view = RunView(
            run_id=self.run_id, api=self.api, key=self.key, revision=revision, snapshot=self._snapshot,
            error=self._error, updated_at=seen_at, deleted=False,
        )
        return Revision(
            run_id=self.run_id, revision=revision, seen_at=seen_at, size=len(value.encode("utf-8", "surrogateescape")),
            snapshot=self._snapshot, error=self._error, changes=changes,
            heartbeat_only=is_heartbeat_only(changes), resync=resync, skipped=skipped,
        )

    def delete(self, revision: int, seen_at: datetime, *, resync: bool = False, skipped: int = 0) -> Revision | None:
        """Record that the key was deleted (or expired) at ``revision``; ``None`` if it already was."""
        if self.view is None or self.view.deleted:
            return None
        self._value = self._snapshot = self._error = self._baseline = None
        self.view = RunView(
            run_id=self.run_id, api=self.api, key=self.key, revision=revision, snapshot=None, error=None,
            updated_at=seen_at, deleted=True,
        )
        return Revision(
            run_id=self.run_id, revision=revision, seen_at=seen_at, size=0, snapshot=None, error=None,
            changes=(), heartbeat_only=False, resync=resync, skipped=skipped,
        )

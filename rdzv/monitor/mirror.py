"""One API's keyspace below the prefix, mirrored: listings and watch events in, :class:`Update` out."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime

from ..kv import Event, Listing
from .history import RunTracker
from .keys import KeyLayout, store_item
from .model import Revision, RunView, StoreItem

#: When one batch of watch events holds more writes than this of one run, the monitor is
#: behind (a 1,000-node run heartbeats ~200 times a second; a decode takes ~8 ms): only
#: the newest of them is decoded, and its entry counts the others as ``skipped``.
COALESCE_ABOVE = 4


@dataclass
class Update:
    """What one listing or one batch of watch events changed on one API.

    ``views``: the latest view of each run that changed; ``revisions``: the new history
    entries in order; ``store_put`` / ``store_removed``: store items by etcd key;
    ``from_events``: it came from a watch (not a listing).
    """

    api: str
    from_events: bool
    views: dict[str, RunView] = field(default_factory=dict)
    revisions: list[Revision] = field(default_factory=list)
    store_put: dict[str, StoreItem] = field(default_factory=dict)
    store_removed: set[str] = field(default_factory=set)

    def __bool__(self) -> bool:
        return bool(self.views or self.store_put or self.store_removed)


class ApiMirror:
    """The runs and store keys of one API, as last seen. Not thread-safe: one watcher at a time owns it.

    Every listing after the first is a re-list (``resync``): it follows missed events.
    """

    def __init__(self, api: str, layout: KeyLayout) -> None:
        self.api = api
        self.layout = layout
        self._runs: dict[str, RunTracker] = {}
        self._store: dict[str, int] = {}
        self.listed = False

    def apply_listing(self, listing: Listing, seen_at: datetime) -> Update:
        """Bring the mirror to ``listing``: keys it lacks were deleted at ``listing.revision``."""
        update = Update(self.api, from_events=False)
        resync, self.listed = self.listed, True
        runs_seen: set[str] = set()
        store_seen: set[str] = set()
        for item in listing.items:
            run_id = self.layout.run_id(item.key)
            if run_id is not None:
                runs_seen.add(run_id)
                self._put_run(update, run_id, item.key, item.value, item.revision, seen_at, resync)
            elif (name := self.layout.store_name(item.key)) is not None:
                store_seen.add(item.key)
                self._put_store(update, item.key, name, item.value, item.revision)
        for run_id in self._runs.keys() - runs_seen:
            self._delete_run(update, run_id, listing.revision, seen_at, resync)
        for key in self._store.keys() - store_seen:
            self._delete_store(update, key)
        return update

    def apply_events(self, events: Iterable[Event], seen_at: datetime) -> Update:
        """Apply watch events in order; events for other keys are ignored.

        Of more than :data:`COALESCE_ABOVE` writes to one run in the batch, only the
        newest write before each deletion, and the newest overall, are decoded."""
        update = Update(self.api, from_events=True)
        events = list(events)
        runs = [self.layout.run_id(event.key) for event in events]
        skippable = self._skippable(events, runs)
        skipped: Counter[str] = Counter()
        for index, (event, run_id) in enumerate(zip(events, runs)):
            if run_id is not None:
                if index in skippable:
                    skipped[run_id] += 1
                elif event.kind == "delete":
                    self._delete_run(update, run_id, event.revision, seen_at, False, skipped.pop(run_id, 0))
                else:
                    self._put_run(update, run_id, event.key, event.value or "", event.revision, seen_at, False,
                                  skipped.pop(run_id, 0))
            elif (name := self.layout.store_name(event.key)) is not None:
                if event.kind == "delete":
                    self._delete_store(update, event.key)
                else:
                    self._put_store(update, event.key, name, event.value or "", event.revision)
        return update

    @staticmethod
    def _skippable(events: list[Event], runs: list[str | None]) -> set[int]:
        """Indices of the writes not worth decoding: of a run written more than
        :data:`COALESCE_ABOVE` times in ``events``, each write followed by another write."""
        writes = Counter(run_id for event, run_id in zip(events, runs) if run_id is not None and event.kind == "put")
        crowded = {run_id for run_id, count in writes.items() if count > COALESCE_ABOVE}
        if not crowded:
            return set()
        skippable: set[int] = set()
        pending: dict[str, int] = {}
        for index, (event, run_id) in enumerate(zip(events, runs)):
            if run_id in crowded:
                previous = pending.get(run_id)
                if previous is not None and event.kind == "put" and events[previous].kind == "put":
                    skippable.add(previous)
                pending[run_id] = index
        return skippable

    def _put_run(
        self, update: Update, run_id: str, key: str, value: str, revision: int, seen_at: datetime, resync: bool,
        skipped: int = 0,
    ) -> None:
        tracker = self._runs.get(run_id)
        if tracker is None:
            tracker = self._runs[run_id] = RunTracker(run_id, self.api, key)
        entry = tracker.put(value, revision, seen_at, resync=resync, skipped=skipped)
        if entry is not None:
            update.revisions.append(entry)
            update.views[run_id] = tracker.view

    def _delete_run(
        self, update: Update, run_id: str, revision: int, seen_at: datetime, resync: bool, skipped: int = 0
    ) -> None:
        tracker = self._runs.get(run_id)
        entry = tracker.delete(revision, seen_at, resync=resync, skipped=skipped) if tracker is not None else None
        if entry is not None:
            update.revisions.append(entry)
            update.views[run_id] = tracker.view

    def _put_store(self, update: Update, key: str, name: str, value: str, revision: int) -> None:
        if self._store.get(key) == revision:
            return
        self._store[key] = revision
        update.store_removed.discard(key)
        update.store_put[key] = store_item(name, value, revision, self.api)

    def _delete_store(self, update: Update, key: str) -> None:
        if self._store.pop(key, None) is not None:
            update.store_put.pop(key, None)
            update.store_removed.add(key)

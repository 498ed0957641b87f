"""One API's keyspace below the prefix, mirrored: listings and watch events in, :class:`Update` out."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime

from ..kv import Event, KeyValue, Listing, ReadBack
from ..rendezvous_settings import RendezvousSettings, read_published_settings
from .history import RunTracker
from ..kv.layout import KeyLayout
from .keys import store_item
from .model import Revision, RunView, StoreItem
from .stats import DecodeTimes

#: ``(key, revision now) -> ReadBack`` of the revisions before, or ``None`` when they cannot be read.
ReadBackSource = Callable[[str, int], "ReadBack | None"]

#: When one batch of watch events holds more writes than this of one run, the monitor is
#: behind (a 1,000-node run heartbeats ~200 times a second; a decode takes ~8 ms): only
#: the newest of them is decoded, and its entry counts the others as ``skipped``.
COALESCE_ABOVE = 4


@dataclass
class Update:
    """What one listing or one batch of watch events changed on one API.

    ``views``: the latest view of each run that changed; ``revisions``: the new history
    entries in order; ``store_put`` / ``store_removed``: store items by etcd key;
    ``settings``: the settings a run's handlers published (``None``: withdrawn or unreadable);
    ``from_events``: it came from a watch (not a listing).
    """

    api: str
    from_events: bool
    views: dict[str, RunView] = field(default_factory=dict)
    revisions: list[Revision] = field(default_factory=list)
    store_put: dict[str, StoreItem] = field(default_factory=dict)
    store_removed: set[str] = field(default_factory=set)
    settings: dict[str, RendezvousSettings | None] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.views or self.store_put or self.store_removed or self.settings)


class ApiMirror:
    """The runs and store keys of one API, as last seen. Not thread-safe: one watcher at a time owns it.

    Every listing after the first is a re-list (``resync``): it follows missed events.
    """

    def __init__(self, api: str, layout: KeyLayout, decode_times: DecodeTimes | None = None) -> None:
        self.api = api
        self.decode_times = decode_times
        self.layout = layout
        self._runs: dict[str, RunTracker] = {}
        self._store: dict[str, int] = {}
        self._settings: dict[str, str] = {}  # run id -> the published JSON last seen
        self.listed = False

    def apply_listing(self, listing: Listing, seen_at: datetime, read_back: ReadBackSource | None = None) -> Update:
        """Bring the mirror to ``listing``: keys it lacks were deleted at ``listing.revision``.

        With ``read_back``, a run seen for the first time gets the revisions etcd still keeps
        from before it (its story before the monitor started), and a run re-listed after
        missed events gets the revisions it missed, both marked as read back."""
        update = Update(self.api, from_events=False)
        resync, self.listed = self.listed, True
        runs_seen: set[str] = set()
        store_seen: set[str] = set()
        settings_seen: set[str] = set()
        for item in listing.items:
            run_id = self.layout.run_id(item.key)
            if run_id is not None:
                runs_seen.add(run_id)
                if read_back is not None:
                    self._read_back(update, run_id, item, seen_at, read_back)
                self._put_run(update, run_id, item.key, item.value, item.revision, seen_at, resync)
            elif (name := self.layout.store_name(item.key)) is not None:
                store_seen.add(item.key)
                self._put_store(update, item.key, name, item.value, item.revision)
            elif (settings_of := self.layout.settings_run_id(item.key)) is not None:
                settings_seen.add(settings_of)
                self._put_settings(update, settings_of, item.value)
        for run_id in self._settings.keys() - settings_seen:
            self._put_settings(update, run_id, None)
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
            elif (settings_of := self.layout.settings_run_id(event.key)) is not None:
                self._put_settings(update, settings_of, event.value if event.kind == "put" else None)
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
            tracker = self._runs[run_id] = RunTracker(run_id, self.api, key, self.decode_times)
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

    def apply_read_back(self, key: str, events: list[Event], seen_at: datetime) -> Update:
        """Apply revisions of ``key`` read back from etcd's history (a recording's), older than
        any applied yet; keys that are not a run's state are applied as they come."""
        update = Update(self.api, from_events=True)
        run_id = self.layout.run_id(key)
        if run_id is None:
            update = self.apply_events(events, seen_at)
            return update
        tracker = self._runs.get(run_id)
        if tracker is None:
            tracker = self._runs[run_id] = RunTracker(run_id, self.api, key, self.decode_times)
        known = tracker.revision or 0
        entries = tracker.read_back([event for event in events if event.revision > known], None, seen_at)
        update.revisions.extend(entries)
        if entries:
            update.views[run_id] = tracker.view
        return update

    def _read_back(self, update: Update, run_id: str, item: KeyValue, seen_at: datetime,
                   read_back: ReadBackSource) -> None:
        tracker = self._runs.get(run_id)
        known = tracker.revision if tracker is not None and tracker.revision is not None else 0
        if known >= item.revision:
            return
        found = read_back(item.key, item.revision)
        if found is None:
            return
        missed = [event for event in found.events if event.revision > known]
        if not missed and not (found.complete_from and found.complete_from > known):
            return
        if tracker is None:
            tracker = self._runs[run_id] = RunTracker(run_id, self.api, item.key, self.decode_times)
        reached_known = any(event.revision <= known for event in found.events)
        lost = found.complete_from is not None and not reached_known and found.complete_from > known
        complete_from = found.complete_from if lost else None
        if not missed:
            tracker.complete_from_next = complete_from
            return
        entries = tracker.read_back(missed, complete_from, seen_at)
        update.revisions.extend(entries)
        if entries:
            update.views[run_id] = tracker.view

    def _put_settings(self, update: Update, run_id: str, value: str | None) -> None:
        if value is None:
            if self._settings.pop(run_id, None) is not None:
                update.settings[run_id] = None
            return
        if self._settings.get(run_id) == value:
            return
        self._settings[run_id] = value
        update.settings[run_id] = read_published_settings(value)

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

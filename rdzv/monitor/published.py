"""What viewers read: run views, histories and store items, published atomically under one lock,
and held at one version for readers that must see one state while it moves on."""

from __future__ import annotations

import threading
import time
from collections import deque
from types import MappingProxyType
from typing import Mapping

from ..rendezvous_settings import RendezvousSettings
from .mirror import Update
from .model import Revision, RunView, StoreItem


def _preferred(views: list[RunView]) -> RunView:
    """Of one run id's views on several APIs: a live one before a deleted one, then the newest."""
    return max(views, key=lambda view: (not view.deleted, view.updated_at))


def _api_of(runs: Mapping[str, RunView], run_id: str, api: str | None) -> str | None:
    """``api``, or when it is None the API of the view of ``run_id`` shown (None: no such run)."""
    if api is not None:
        return api
    view = runs.get(run_id)
    return view.api if view is not None else None


def _appended(seen: Mapping[tuple[str, str], tuple[int, int]], key: tuple[str, str]) -> int:
    """The entries ever appended to the history of ``key`` (one per revision decoded: those seen
    less those skipped, from the ``(revisions seen, skipped)`` kept per run)."""
    revisions, skipped = seen.get(key, (0, 0))
    return revisions - skipped


def _sorted_store(store: Mapping[tuple[str, str], StoreItem]) -> tuple[StoreItem, ...]:
    return tuple(sorted(store.values(), key=lambda item: (item.key, item.api)))


class _RunReaders:
    """The readers of the run views and settings, shared by :class:`Published` and :class:`PublishedFrame`:
    mappings replaced whole on each change, so one reference read is a consistent one."""

    _views: Mapping[tuple[str, str], RunView]
    _runs: Mapping[str, RunView]
    _settings: Mapping[tuple[str, str], RendezvousSettings]

    def runs(self) -> dict[str, RunView]:
        return dict(self._runs)

    def run(self, run_id: str, api: str | None = None) -> RunView | None:
        return self._runs.get(run_id) if api is None else self._views.get((api, run_id))

    def settings(self, run_id: str, api: str | None = None) -> RendezvousSettings | None:
        api = _api_of(self._runs, run_id, api)
        return self._settings.get((api, run_id)) if api else None


class Published(_RunReaders):
    """The monitor's data as viewers see it.

    Watcher threads call :meth:`apply`; any thread reads. Each apply replaces the
    dictionaries it changes (copy-on-write) and bumps :attr:`version` once, all under the
    lock, so a reader sees either the whole batch or none of it.
    """

    def __init__(self, history_limit: int) -> None:
        self.history_limit = history_limit
        self.version = 0
        self.condition = threading.Condition()
        self._views: Mapping[tuple[str, str], RunView] = MappingProxyType({})
        self._runs: Mapping[str, RunView] = MappingProxyType({})
        self._histories: dict[tuple[str, str], deque[Revision]] = {}
        self._store: Mapping[tuple[str, str], StoreItem] = MappingProxyType({})
        self._store_sorted: tuple[StoreItem, ...] | None = ()
        self._apis: set[str] = set()
        self._seen: dict[tuple[str, str], tuple[int, int]] = {}  # (api, run) -> (revisions, skipped)
        self._settings: Mapping[tuple[str, str], RendezvousSettings] = MappingProxyType({})

    # -- writers ----------------------------------------------------------------

    def apply(self, update: Update) -> int | None:
        """Publish ``update``; returns the new version, or ``None`` if it changed nothing."""
        if not update:
            return None
        with self.condition:
            self._apis.add(update.api)
            if update.views:
                self._apply_runs(update)
            if update.settings:
                settings = dict(self._settings)
                for run_id, published in update.settings.items():
                    if published is None:
                        settings.pop((update.api, run_id), None)
                    else:
                        settings[(update.api, run_id)] = published
                self._settings = MappingProxyType(settings)
            if update.store_put or update.store_removed:
                store = dict(self._store)
                for key in update.store_removed:
                    store.pop((update.api, key), None)
                for key, item in update.store_put.items():
                    store[(update.api, key)] = item
                self._store = MappingProxyType(store)
                self._store_sorted = None
            return self._bump()

    def bump(self) -> int:
        """A change outside the data (the connection status): a new version."""
        with self.condition:
            return self._bump()

    def _bump(self) -> int:
        self.version += 1
        self.condition.notify_all()
        return self.version

    def _apply_runs(self, update: Update) -> None:
        for entry in update.revisions:
            history = self._histories.get((update.api, entry.run_id))
            if history is None:
                history = self._histories[(update.api, entry.run_id)] = deque(maxlen=self.history_limit)
            history.append(entry)
            seen, skipped = self._seen.get((update.api, entry.run_id), (0, 0))
            self._seen[(update.api, entry.run_id)] = (seen + 1 + entry.skipped, skipped + entry.skipped)
        views = dict(self._views)
        runs = dict(self._runs)
        for run_id, view in update.views.items():
            views[(update.api, run_id)] = view
            runs[run_id] = _preferred([v for api in self._apis if (v := views.get((api, run_id))) is not None])
        self._views = MappingProxyType(views)
        self._runs = MappingProxyType(runs)

    # -- readers ----------------------------------------------------------------

    def revisions_seen(self, run_id: str, api: str) -> tuple[int, int]:
        """``(revisions seen, of which skipped without decoding)`` of ``run_id`` on ``api``."""
        with self.condition:
            return self._seen.get((api, run_id), (0, 0))

    def history(self, run_id: str, api: str | None = None) -> list[Revision]:
        with self.condition:
            api = _api_of(self._runs, run_id, api)
            return list(self._histories.get((api, run_id), ())) if api else []

    def store_items(self) -> list[StoreItem]:
        with self.condition:
            if self._store_sorted is None:
                self._store_sorted = _sorted_store(self._store)
            return list(self._store_sorted)

    def frame(self) -> PublishedFrame:
        """The data as it is now, held: later changes leave the frame as it was."""
        with self.condition:
            return PublishedFrame(self, self.version, self._views, self._runs, self._settings, self._store,
                                  dict(self._seen))

    def wait_for_version(self, version: int, timeout: float) -> int:
        deadline = time.monotonic() + timeout
        with self.condition:
            while self.version <= version:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self.condition.wait(remaining)
            return self.version


class PublishedFrame(_RunReaders):
    """:class:`Published`'s readers, answering as of one version. Cheap to take whatever the
    history limit: the mappings are shared (never changed once published) and a history is read
    the first time it is asked for, without the entries appended after the frame was taken."""

    def __init__(self, published: Published, version: int, views: Mapping[tuple[str, str], RunView],
                 runs: Mapping[str, RunView], settings: Mapping[tuple[str, str], RendezvousSettings],
                 store: Mapping[tuple[str, str], StoreItem], seen: dict[tuple[str, str], tuple[int, int]]) -> None:
        self.version = version
        self._published = published
        self._views, self._runs, self._settings, self._store = views, runs, settings, store
        self._seen = seen
        self._histories: dict[tuple[str, str], tuple[Revision, ...]] = {}
        self._store_sorted: tuple[StoreItem, ...] | None = None

    def revisions_seen(self, run_id: str, api: str) -> tuple[int, int]:
        return self._seen.get((api, run_id), (0, 0))

    def history(self, run_id: str, api: str | None = None) -> list[Revision]:
        api = _api_of(self._runs, run_id, api)
        if not api:
            return []
        key = (api, run_id)
        held = self._histories.get(key)
        if held is None:
            held = self._histories[key] = self._read_history(key)
        return list(held)

    def _read_history(self, key: tuple[str, str]) -> tuple[Revision, ...]:
        published = self._published
        with published.condition:
            entries = tuple(published._histories.get(key, ()))
            later = _appended(published._seen, key) - _appended(self._seen, key)
        return entries[: max(0, len(entries) - later)] if later else entries

    def store_items(self) -> list[StoreItem]:
        if self._store_sorted is None:
            self._store_sorted = _sorted_store(self._store)
        return list(self._store_sorted)

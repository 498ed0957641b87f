"""What viewers read: run views, histories and store items, published atomically under one lock."""

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


class Published:
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

    def runs(self) -> dict[str, RunView]:
        return dict(self._runs)

    def run(self, run_id: str, api: str | None = None) -> RunView | None:
        if api is None:
            return self._runs.get(run_id)
        return self._views.get((api, run_id))

    def revisions_seen(self, run_id: str, api: str) -> tuple[int, int]:
        """``(revisions seen, of which skipped without decoding)`` of ``run_id`` on ``api``."""
        with self.condition:
            return self._seen.get((api, run_id), (0, 0))

    def settings(self, run_id: str, api: str | None = None) -> RendezvousSettings | None:
        if api is None:
            view = self._runs.get(run_id)
            api = view.api if view is not None else None
        return self._settings.get((api, run_id)) if api else None

    def history(self, run_id: str, api: str | None = None) -> list[Revision]:
        with self.condition:
            if api is None:
                view = self._runs.get(run_id)
                if view is None:
                    return []
                api = view.api
            return list(self._histories.get((api, run_id), ()))

    def store_items(self) -> list[StoreItem]:
        with self.condition:
            if self._store_sorted is None:
                self._store_sorted = tuple(sorted(self._store.values(), key=lambda item: (item.key, item.api)))
            return list(self._store_sorted)

    def wait_for_version(self, version: int, timeout: float) -> int:
        deadline = time.monotonic() + timeout
        with self.condition:
            while self.version <= version:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self.condition.wait(remaining)
            return self.version

"""One thread following one etcd API below the prefix: list, then watch; re-list after any gap."""

from __future__ import annotations

import logging
import threading
from typing import Protocol

from ..kv import KV, Event, KVCompactedError, KVError, KVUnavailableError, ReadBack
from .mirror import ApiMirror, Update
from .model import utc_now

logger = logging.getLogger(__name__)

#: Seconds a watch request waits for events; bounds how long :meth:`ApiWatcher.stop` takes.
WATCH_TIMEOUT = 1.0
#: Seconds between attempts while etcd is unreachable.
RETRY_INTERVAL = 0.5
#: Seconds between attempts while etcd answers with an error, or after an unexpected failure.
ERROR_RETRY_INTERVAL = 2.0


class WatcherSink(Protocol):
    """Where an :class:`ApiWatcher` reports; called from its thread."""

    def applied(self, api: str, update: Update) -> None:
        """A listing succeeded (``update.from_events`` is false) or a watch returned (true)."""

    def failed(self, api: str, reason: str, *, answered: bool = False) -> None:
        """etcd did not answer (``reason``: why, in a few words), or ``answered`` with an error
        (``reason``: its sentence)."""

    def refused(self, api: str, error: KVError) -> bool:
        """etcd refused the first listing of ``api``; return True to stop following that API."""

    def observed(self, api: str, events: list[Event], *, read_back: bool = False, listing: int | None = None) -> None:
        """The raw values read, in order, before they are applied: events read back from
        etcd's history (``read_back``), a listing's keys as puts (``listing``: the listing's
        revision; a key not in it is gone), or watch events."""


class ApiWatcher:
    """A daemon thread keeping ``mirror`` up to date with ``kv`` and reporting to ``sink``.

    It lists the prefix (one request), then watches from the listing's revision + 1 in
    requests of :data:`WATCH_TIMEOUT` seconds. When etcd no longer keeps the revision
    (compaction, v2's 1,000-event window) or stops answering, it re-lists as soon as it
    can, so nothing is missed; those entries are marked ``resync``. A run seen for the first
    time, or re-listed after missed events, gets its earlier revisions read back from etcd (at
    most ``read_back_limit``; see :meth:`rdzv.kv.KV.read_back`). An unexpected
    exception is logged and followed by a re-list; it never ends the thread.
    ``requests`` counts the KV calls made (one etcd request each, unless the client fails
    over to another member).
    """

    def __init__(self, kv: KV, mirror: ApiMirror, sink: WatcherSink, *, name: str, read_back_limit: int = 0) -> None:
        self.api = kv.api
        self.read_back_limit = read_back_limit
        self.kv = kv
        self.mirror = mirror
        self.layout = mirror.layout
        self.requests = 0
        self._sink = sink
        self._stopping = threading.Event()
        self._open = threading.Event()
        self._open.set()
        self._parked = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    @property
    def thread(self) -> threading.Thread:
        return self._thread

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Ask the thread to end after its current request."""
        self._stopping.set()
        self._open.set()

    def join(self, timeout: float) -> bool:
        """Wait for the thread to end; True if it did."""
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def _read_back(self, key: str, revision: int) -> ReadBack | None:
        """The revisions of ``key`` before ``revision`` that etcd still keeps (at most
        ``read_back_limit``), or ``None`` when they are not wanted or cannot be read (the
        monitor carries on without them)."""
        if self.read_back_limit < 1:
            return None
        self.requests += 1
        try:
            found = self.kv.read_back(key, revision, self.read_back_limit)
            self._sink.observed(self.api, list(found.events), read_back=True)
            return found
        except KVError as exc:
            logger.warning("Could not read back the history of %s on %s: %s", key, self.api, exc)
            return None

    def hold(self, timeout: float) -> bool:
        """Hold the thread before its next request (a testing aid); True once it is held."""
        self._open.clear()
        return self._parked.wait(timeout)

    def release(self) -> None:
        self._open.set()

    def _run(self) -> None:
        mirror = self.mirror
        next_revision: int | None = None
        try:
            while not self._stopping.is_set():
                self._wait_while_held()
                if self._stopping.is_set():
                    break
                try:
                    if next_revision is None:
                        self.requests += 1
                        listing = self.kv.list(self.layout.watched)
                        update = mirror.apply_listing(listing, utc_now(), self._read_back)
                        self._sink.observed(self.api, [Event("put", item.key, item.value, item.revision)
                                                       for item in listing.items], listing=listing.revision)
                        self._sink.applied(self.api, update)
                        next_revision = listing.revision + 1
                        continue
                    self.requests += 1
                    events = self.kv.watch(self.layout.watched, next_revision, WATCH_TIMEOUT)
                    if events:
                        next_revision = events[-1].revision + 1
                    self._sink.observed(self.api, events)
                    self._sink.applied(self.api, mirror.apply_events(events, utc_now()))
                except KVCompactedError as exc:
                    logger.info("The %s watch missed events (%s); re-listing %s.", self.api, exc, self.layout.watched)
                    next_revision = None
                except KVUnavailableError as exc:
                    next_revision = None
                    self._sink.failed(self.api, exc.reason)
                    self._stopping.wait(RETRY_INTERVAL)
                except KVError as exc:
                    if not mirror.listed and self._sink.refused(self.api, exc):
                        return
                    next_revision = None
                    self._sink.failed(self.api, str(exc), answered=True)
                    self._stopping.wait(ERROR_RETRY_INTERVAL)
                except Exception:
                    logger.exception("The %s watcher of %s failed; it re-lists and carries on.",
                                     self.api, self.kv.endpoint)
                    next_revision = None
                    self._stopping.wait(ERROR_RETRY_INTERVAL)
        finally:
            self._parked.set()
            self.kv.close()

    def _wait_while_held(self) -> None:
        if self._open.is_set():
            return
        self._parked.set()
        self._open.wait()
        self._parked.clear()

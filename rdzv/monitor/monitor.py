"""Monitor: follows every rendezvous run (and the store) below a prefix of one etcd, for any number of viewers."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from ..kv import API_VERSIONS, Event, KVError, Target
from ..diagnosis import Finding
from .connection import ConnectionTracker
from .frame import MonitorFrame
from .mirror import ApiMirror, Update
from .model import ConnectionStatus, utc_now
from .published import Published
from .reading import MonitorReading
from .stats import DecodeTimes
from .watcher import WATCH_TIMEOUT, ApiWatcher

logger = logging.getLogger(__name__)

READ_TIMEOUT = 5.0
"""Seconds a monitor waits for etcd per request unless its target says otherwise: a viewer
should say \"unreachable\" quickly, unlike a training job."""

class Monitor(MonitorReading):
    """Follows the runs at ``<prefix>/rendezvous/<run_id>`` and the store at ``<prefix>/store/``.

    One watcher thread per followed API (``api=None``: every API the server offers — v3,
    and v2 when it answers; etcd 3.4/3.5 keep the two keyspaces apart). Viewers read from
    any thread: :meth:`runs`, :meth:`run`, :meth:`history` and :meth:`store_items` return
    immutable records or fresh lists, never data a watcher is still changing. ``version``
    grows by one per published change (runs, store or connection); poll it, or
    :meth:`subscribe`. :meth:`frame` holds the data of one version for viewers that read it
    in turn while the monitor moves on (the read API is :class:`MonitorReading`'s). Use :func:`rdzv.monitor.get_monitor` to share one monitor between
    viewers; creating one directly gives a private, not yet started monitor.

    ``target`` is a :class:`~rdzv.kv.Target` or an endpoint string; ``prefix`` and
    ``settings`` (``api``, ``protocol``, ``ca_cert``, ``ssl_cert``, ``ssl_cert_key``,
    ``read_timeout``) are applied to it.

    Raises ``ValueError`` (:class:`~rdzv.kv.TargetError`) for a bad setting or history limit.
    """

    def __init__(
        self,
        target: Target | str | None,
        prefix: str | None = None,
        *,
        history_limit: int = 500,
        **settings: Any,
    ) -> None:
        if prefix is not None:
            settings["prefix"] = prefix
        #: Where the monitor looks (its read timeout, if unset, is :data:`READ_TIMEOUT`).
        self.target = Target.of(target, **settings)
        if isinstance(history_limit, bool) or not isinstance(history_limit, int) or history_limit < 1:
            raise ValueError(f"The history limit must be a positive number of revisions, not {history_limit!r}.")
        self._layout = self.target.layout
        self.endpoint = self.target.endpoint
        self.prefix = self.target.prefix
        self.history_limit = history_limit
        self._candidates = self.target.apis
        self._auto = self.target.api is None
        self._read_timeout = self.target.read_timeout or READ_TIMEOUT
        #: The APIs being followed; with ``api=None``, those that answered so far.
        self.apis: tuple[str, ...] = () if self._auto else self._candidates
        self._data = Published(history_limit)
        self._lifecycle = threading.Lock()  # start/stop, held while joining (watchers never take it)
        self._lock = threading.RLock()  # watchers list, connection tracker, subscribers; watchers take it
        self._tracker = ConnectionTracker(self.endpoint, self._candidates, utc_now())
        #: How the monitor reaches etcd (see :class:`ConnectionStatus`).
        self.connection: ConnectionStatus = self._tracker.status
        self._following: set[str] = set()
        self._watchers: list[ApiWatcher] = []
        # Kept across stop/start, so a restarted monitor re-lists instead of starting over.
        #: How long each state decode took (see :mod:`rdzv.monitor.stats`).
        self.decode_times = DecodeTimes()
        self._mirrors = {api: ApiMirror(api, self._layout, self.decode_times) for api in self._candidates}
        self._subscribers: tuple[Callable[[int], None], ...] = ()
        self._observers: tuple[Callable[..., None], ...] = ()
        self._retired_requests = 0
        self._on_stop: Callable[[Monitor], None] | None = None
        self._diagnoses: dict[tuple, tuple[Finding, ...]] = {}  # see MonitorReading.diagnose()
        self._frame: MonitorFrame | None = None  # the frame last taken, see frame()

    def __repr__(self) -> str:
        return (f"Monitor(endpoint={self.endpoint!r}, prefix={self.prefix!r}, apis={self.apis}, "
                f"state={self.connection.state!r})")

    # -- life cycle ---------------------------------------------------------------

    @property
    def running(self) -> bool:
        return bool(self._watchers)

    def start(self) -> Monitor:
        """Start the watcher threads (no-op if running). Returns the monitor."""
        with self._lifecycle, self._lock:
            if self._watchers:
                return self
            self._following = set(self._candidates)
            for api in self._candidates:
                kv = self.target.connect(api, read_timeout=self._read_timeout)
                name = f"rdzv-monitor {api} {self.endpoint}{self.prefix}"
                watcher = ApiWatcher(kv, self._mirrors[api], self, name=name, read_back_limit=self.history_limit - 1)
                self._watchers.append(watcher)
                watcher.start()
        return self

    def stop(self) -> None:
        """Stop and join the watcher threads (no-op if stopped); a shared monitor leaves the registry.
        The data seen stays readable; :meth:`start` resumes with a re-list."""
        with self._lifecycle:
            with self._lock:
                watchers, self._watchers = self._watchers, []
                on_stop, self._on_stop = self._on_stop, None
            if on_stop is not None:
                on_stop(self)
            for watcher in watchers:
                watcher.stop()
            timeout = self._read_timeout + WATCH_TIMEOUT + 2
            for watcher in watchers:
                # Not the current thread (stop() called by a subscriber): it ends when the callback returns.
                if watcher.thread is not threading.current_thread() and not watcher.join(timeout):
                    logger.warning("The %s watcher of %s did not stop within %.0f s.",
                                   watcher.api, self.endpoint, timeout)
                self._retired_requests += watcher.requests

    @property
    def requests(self) -> int:
        """The etcd requests (KV calls) this monitor made since it was created."""
        return self._retired_requests + sum(watcher.requests for watcher in list(self._watchers))

    @property
    def threads(self) -> tuple[threading.Thread, ...]:
        """The live watcher threads."""
        return tuple(w.thread for w in list(self._watchers) if w.thread.is_alive())

    @contextmanager
    def _paused(self, timeout: float = 10) -> Iterator[None]:
        """Hold every watcher before its next etcd request for the duration (a testing aid)."""
        watchers = list(self._watchers)
        try:
            for watcher in watchers:
                if not watcher.hold(timeout):
                    raise TimeoutError(f"The {watcher.api} watcher did not pause within {timeout:g} s.")
            yield
        finally:
            for watcher in watchers:
                watcher.release()

    # -- reading ------------------------------------------------------------------

    def frame(self, at_least: int | None = None, taken_since: float | None = None) -> MonitorFrame:
        """What the monitor published, held at one version while it moves on: the frame last
        taken if its version is at least ``at_least`` (default: the current version) and it was
        taken at or after ``taken_since`` (``time.monotonic()``; default: whenever), else a new
        one at the current version. Readers asking in turn share one frame, and with it every
        answer worked out from it (the sessions of a dashboard refreshed one after another)."""
        with self._lock:
            frame = self._frame
            wanted = self.version if at_least is None else at_least
            if frame is None or frame.version < wanted or (taken_since is not None and frame.taken_at < taken_since):
                frame = self._frame = MonitorFrame(self, self._data.frame(), self.connection)
            return frame

    def wait_for_version(self, version: int, timeout: float) -> int:
        """Block until :attr:`version` exceeds ``version`` or ``timeout`` seconds pass; returns :attr:`version`."""
        return self._data.wait_for_version(version, timeout)

    def subscribe(self, callback: Callable[[int], None]) -> Callable[[], None]:
        """Call ``callback(version)`` after each change, from a watcher thread (keep it quick; exceptions
        are logged). Returns the function that unsubscribes it."""
        return self._listen("_subscribers", callback)

    def _listen(self, listeners: str, listener: Callable[..., None]) -> Callable[[], None]:
        """Add ``listener`` to the tuple attribute ``listeners``; return the function removing it."""
        with self._lock:
            setattr(self, listeners, (*getattr(self, listeners), listener))

        def remove() -> None:
            with self._lock:
                setattr(self, listeners, tuple(item for item in getattr(self, listeners) if item is not listener))

        return remove

    # -- reports from watcher threads (WatcherSink) ----------------------------------

    def applied(self, api: str, update: Update) -> None:
        now = utc_now()
        with self._lock:
            if api not in self.apis:
                self.apis = tuple(a for a in API_VERSIONS if a in self.apis or a == api)
            status = self._tracker.answered(api, now)
            if update.from_events and update:
                status = self._tracker.changed(now) or status
            elif update.from_events:
                status = self._tracker.tick(now) or status
            self._publish(update, status)

    def observed(self, api: str, events: list[Event], *, read_back: bool = False, listing: int | None = None) -> None:
        for observer in self._observers:
            try:
                observer(api, events, read_back=read_back, listing=listing)
            except Exception:
                logger.exception("A monitor observer failed; the monitor carries on.")

    def observe(self, observer: Callable[..., None]) -> Callable[[], None]:
        """Call ``observer(api, events, read_back=..., listing=...)`` from a watcher thread with
        the raw values the monitor reads, before it applies them (see
        :meth:`rdzv.monitor.watcher.WatcherSink.observed`): what a recorder writes down.
        Returns the function that removes it."""
        return self._listen("_observers", observer)

    def failed(self, api: str, reason: str, *, answered: bool = False) -> None:
        with self._lock:
            self._publish(None, self._tracker.failed(api, reason, utc_now(), answered=answered))

    def refused(self, api: str, error: KVError) -> bool:
        with self._lock:
            if not self._auto or len(self._following) < 2:
                return False
            self._following.discard(api)
            self.apis = tuple(a for a in self.apis if a != api)
            logger.info("Not following the %s API of %s: %s", api, self.endpoint, error)
            self._publish(None, self._tracker.dropped(api, utc_now()))
            return True

    def _publish(self, update: Update | None, status: ConnectionStatus | None) -> None:
        """Publish data and/or a new status as one version, then tell the subscribers. Holds the lock."""
        if status is not None:
            self.connection = status
        version = self._data.apply(update) if update is not None else None
        if version is None and status is not None:
            version = self._data.bump()
        if version is None:
            return
        for callback in self._subscribers:
            try:
                callback(version)
            except Exception:
                logger.exception("A monitor subscriber failed on version %d; the monitor carries on.", version)

"""Replaying a recording: a :class:`Monitor` whose source is a file instead of etcd, so every view
(the dashboard, time travel, history, reports, metrics) works on it unchanged.

Recorded values go through the same mirror and safe decoder as live ones: a hostile recording
is as harmless as hostile etcd data. Nothing connects to etcd.
"""

from __future__ import annotations

import os
import threading
from typing import Any

from ..kv import Event, Target, TargetError
from ..recording import Recording, load_recording
from .model import ConnectionStatus
from .monitor import Monitor

_replays: dict[tuple[str, int, int], ReplayMonitor] = {}
_lock = threading.Lock()


class ReplayMonitor(Monitor):
    """A monitor holding a whole recording, oldest revision first; its "live" view is the last
    revision recorded. ``recording`` is what was loaded (its ``damage`` says where a damaged
    file stopped being readable)."""

    def __init__(self, recording: Recording, *, history_limit: int = 1_000_000, **_: Any) -> None:
        try:
            target = Target.of(recording.endpoint, prefix=recording.prefix)
        except TargetError:  # a recording's header is untrusted: show it, never connect to it
            target = Target.of("localhost", prefix="/torch/elastic")
        super().__init__(target, history_limit=history_limit)
        self.recording = recording
        self.apis = tuple(sorted({event.api for event in recording.events if event.api in self._mirrors}))
        self._replayed = False

    @property
    def source(self) -> str:
        return f"recording {self.recording.path}"

    def start(self) -> ReplayMonitor:
        """Apply every recorded revision once (idempotent); nothing runs in the background."""
        with self._lock:
            if self._replayed:
                return self
            self._replayed = True
            pending: dict[tuple[str, str], list[Event]] = {}
            for recorded in self.recording.events:
                mirror = self._mirrors.get(recorded.api)
                if mirror is None:
                    continue
                event = Event(recorded.kind, recorded.key, recorded.value, recorded.revision)  # type: ignore[arg-type]
                if recorded.read_back:
                    pending.setdefault((recorded.api, recorded.key), []).append(event)
                    continue
                earlier = pending.pop((recorded.api, recorded.key), None)
                if earlier:
                    self._publish(mirror.apply_read_back(recorded.key, earlier, recorded.seen_at), None)
                self._publish(mirror.apply_events([event], recorded.seen_at), None)
            for (api, key), earlier in pending.items():
                self._publish(self._mirrors[api].apply_read_back(key, earlier, self.recording.started_at), None)
            count = len(self.recording.events)
            damage = f" {self.recording.damage}" if self.recording.damage else ""
            self._publish(None, ConnectionStatus(
                "connected", self.recording.started_at,
                f"Replaying {self.recording.path}: {count} recorded revisions of etcd at {self.recording.endpoint}; "
                f"nothing connects to etcd.{damage}"))
        return self

    @property
    def running(self) -> bool:
        return self._replayed

    def stop(self) -> None:
        """Nothing runs; a shared replay leaves the registry."""
        with _lock:
            for key, monitor in list(_replays.items()):
                if monitor is self:
                    del _replays[key]


def replay(path: str | os.PathLike) -> ReplayMonitor:
    """The started replay of the recording at ``path``, shared by every caller while the file is
    unchanged. Raises :class:`rdzv.recording.RecordingError` (one sentence) when it cannot be read."""
    real = os.path.realpath(os.fspath(path))
    try:
        info = os.stat(real)
        key = (real, info.st_mtime_ns, info.st_size)
    except OSError:
        key = (real, 0, 0)  # load_recording says what is wrong
    with _lock:
        monitor = _replays.get(key)
    if monitor is None:
        monitor = ReplayMonitor(load_recording(real)).start()
        with _lock:
            monitor = _replays.setdefault(key, monitor)
    return monitor

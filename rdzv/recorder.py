"""Recording a cluster's runs as they happen: a monitor's raw reads written to a recording file.

The recorder is one more viewer of a monitor: it writes down the values the monitor reads
(:meth:`rdzv.monitor.Monitor.observe`): what etcd still kept from before (read back), then every
change, so a replay (:func:`rdzv.monitor.replay`) goes through the same decoder and views.
"""

from __future__ import annotations

import os

from .kv import Event, KeyLayout, Target
from .monitor import Monitor
from .recording import RecordedEvent, Recorder
from .text import utc_now

__all__ = ["RecordingSession", "RunRecorder", "start_recording"]


class RunRecorder:
    """Writes what a monitor observes to a :class:`Recorder`: each key of the runs chosen (all, or
    ``run_id``'s state and settings) and every store key, each revision once, deletions included."""

    def __init__(self, recorder: Recorder, layout: KeyLayout, run_id: str | None) -> None:
        self.recorder, self.layout, self.run_id = recorder, layout, run_id
        self._last: dict[tuple[str, str], int] = {}  # (api, key) -> revision recorded last
        self._live: dict[str, set[str]] = {}
        self.runs: set[str] = set()

    def wanted(self, key: str) -> bool:
        if self.layout.store_name(key) is not None:
            return True
        run = self.layout.run_id(key) or self.layout.settings_run_id(key)
        return run is not None and "/" not in run and self.run_id in (None, run)

    def __call__(self, api: str, events: list[Event], *, read_back: bool = False, listing: int | None = None) -> None:
        now = utc_now()
        live = self._live.setdefault(api, set())
        if listing is not None:
            present = {event.key for event in events}
            for key in sorted(live - present):
                self._write(api, Event("delete", key, None, listing), now, read_back=False)
        for event in events:
            if self.wanted(event.key):
                self._write(api, event, now, read_back=read_back)

    def _write(self, api: str, event: Event, now, *, read_back: bool) -> None:
        key = (api, event.key)
        live = self._live.setdefault(api, set())
        if event.kind == "put":
            if self._last.get(key, 0) >= event.revision:
                return
            live.add(event.key)
        elif event.key not in live:
            return
        else:
            live.discard(event.key)
        self._last[key] = event.revision
        if (run := self.layout.run_id(event.key)) is not None:
            self.runs.add(run)
        self.recorder.write(RecordedEvent(api=api, key=event.key, kind=event.kind, value=event.value,
                                          revision=event.revision, seen_at=now, read_back=read_back,
                                          time_estimated=read_back))


class RecordingSession:
    """A private monitor of ``target`` whose reads of the runs chosen (``run_id``, or all) are
    appended to the recording at ``path`` (created, or appended to if it records the same etcd
    and prefix) until :meth:`stop`. ``limit`` bounds how many earlier revisions of each run are
    read back. Raises :class:`rdzv.recording.RecordingError` for a file it cannot record into.
    """

    def __init__(self, target: Target | str, path: str | os.PathLike, *, run_id: str | None = None,
                 limit: int = 1000, start: bool = True) -> None:
        target = Target.of(target)
        self.recorder = Recorder(path, endpoint=target.endpoint, prefix=target.prefix)
        self.path = self.recorder.path
        self._writer = RunRecorder(self.recorder, target.layout, run_id)
        self.monitor = Monitor(target, history_limit=limit + 1)
        self.monitor.observe(self._writer)
        if start:
            self.start()

    @property
    def count(self) -> int:
        """Records written so far."""
        return self.recorder.count

    @property
    def runs(self) -> set[str]:
        """The runs recorded so far."""
        return set(self._writer.runs)

    def start(self) -> RecordingSession:
        self.monitor.start()
        return self

    def stop(self) -> None:
        """Stop reading etcd and close the file (synced). Idempotent."""
        self.monitor.stop()
        self.recorder.close()

    def __enter__(self) -> RecordingSession:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def start_recording(target: Target | str, path: str | os.PathLike, *, run_id: str | None = None,
                    limit: int = 1000) -> RecordingSession:
    """Start recording ``target``'s runs (or ``run_id``) into ``path``; call ``.stop()`` to end."""
    return RecordingSession(target, path, run_id=run_id, limit=limit)

"""MonitorFrame and FrameReader: a monitor's data held at one version, for viewers that must see
one state while the monitor moves on, and share what they work out from it."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from ..diagnosis import Finding
from .model import ConnectionStatus
from .published import PublishedFrame
from .reading import MonitorReading

if TYPE_CHECKING:
    from .monitor import Monitor


class MonitorFrame(MonitorReading):
    """The read API of ``monitor`` (:class:`MonitorReading`) as of one :attr:`version`, with the
    connection status of that version. Take one with :meth:`Monitor.frame`. Readers of one
    frame share its answers (its histories, its diagnoses); nothing here changes once taken."""

    def __init__(self, monitor: Monitor, data: PublishedFrame, connection: ConnectionStatus) -> None:
        self.monitor = monitor
        self._data = data
        self._diagnoses: dict[tuple, tuple[Finding, ...]] = {}
        #: How the monitor reached etcd at this version.
        self.connection = connection
        #: When the frame was taken (``time.monotonic()``): every later change came after it.
        self.taken_at = time.monotonic()

    def __repr__(self) -> str:
        return f"MonitorFrame(version={self.version}, monitor={self.monitor!r})"


class FrameReader(MonitorReading):
    """One viewer's reading of ``monitor``: every answer comes from the frame it was last moved
    to (:meth:`show`), so the parts of one page agree with each other, and a page refreshed at a
    frame other pages were refreshed at shares their answers. It also answers where the monitor
    looks (``endpoint``, ``prefix``, ``target``); it never reads etcd itself."""

    def __init__(self, monitor: Monitor) -> None:
        self.monitor = monitor
        self.endpoint, self.prefix, self.target = monitor.endpoint, monitor.prefix, monitor.target
        self.frame = monitor.frame()

    def show(self, frame: MonitorFrame) -> None:
        """Answer from ``frame`` (one of this reader's monitor's) from now on."""
        self.frame = frame

    @property
    def _data(self) -> PublishedFrame:
        return self.frame._data

    @property
    def _diagnoses(self) -> dict[tuple, tuple[Finding, ...]]:
        return self.frame._diagnoses

    @property
    def connection(self) -> ConnectionStatus:
        """How the monitor reached etcd at the frame's version."""
        return self.frame.connection

    def __repr__(self) -> str:
        return f"FrameReader(version={self.version}, monitor={self.monitor!r})"

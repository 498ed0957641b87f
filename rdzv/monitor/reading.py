"""MonitorReading: what a viewer asks of a monitor, answered from one source of published data:
the live data (:class:`~rdzv.monitor.Monitor`) or the data held at one version (:class:`~rdzv.monitor.MonitorFrame`)."""

from __future__ import annotations

from datetime import datetime

from ..diagnosis import Finding
from ..rendezvous_settings import RendezvousSettings
from ..state import RendezvousSnapshot
from .export import export_revisions
from .model import Revision, RunView, StoreItem, diagnose_view, entry_at, utc_now

DIAGNOSES_KEPT = 256
"""Answers of :meth:`MonitorReading.diagnose` kept for viewers asking the same question."""


class MonitorReading:
    """The viewers' read API. A subclass provides ``_data`` (a :class:`~rdzv.monitor.published.Published`
    or a :class:`~rdzv.monitor.published.PublishedFrame`: ``version``, ``runs()``, ``run()``,
    ``settings()``, ``history()``, ``revisions_seen()``, ``store_items()``) and ``_diagnoses`` (a dict).

    Every answer is an immutable record or a fresh list, safe to keep and hand to any thread."""

    _data: object
    _diagnoses: dict[tuple, tuple[Finding, ...]]

    @property
    def version(self) -> int:
        """Grows by one with each published change; equal versions mean equal data."""
        return self._data.version

    def runs(self) -> dict[str, RunView]:
        """run id -> latest view of every run found (a run on both APIs: the live, newest one)."""
        return self._data.runs()

    def run(self, run_id: str, api: str | None = None) -> RunView | None:
        """The latest view of ``run_id`` (on ``api``, if given), or ``None`` if never seen."""
        return self._data.run(run_id, api)

    def settings(self, run_id: str, given: RendezvousSettings | None = None, api: str | None = None
                 ) -> RendezvousSettings:
        """The rendezvous settings of ``run_id``: those its handlers published (rdzv's plugins
        do), over ``given`` (what the viewer was told: torchrun's flags), over torch's defaults."""
        base = given or RendezvousSettings()
        published = self._data.settings(run_id, api)
        return base.merged(published) if published is not None else base

    def published_settings(self, run_id: str, api: str | None = None) -> RendezvousSettings | None:
        """The settings ``run_id``'s handlers published beside its state (rdzv's plugins do), if any."""
        return self._data.settings(run_id, api)

    def diagnose(self, run_id: str, given: RendezvousSettings | None = None, now: datetime | None = None,
                 api: str | None = None) -> tuple[Finding, ...]:
        """What ``run_id`` is waiting for and what torch does next (:func:`rdzv.diagnosis.diagnose`)
        at ``now`` (default: the current time), under :meth:`settings`; ``()`` for an unknown run.

        Viewers that ask at the same ``now`` and :attr:`version` share one answer (every open
        page of a dashboard ticks on the whole second, see ``rdzv.ui.app``)."""
        key = (run_id, given, now, api, self.version)
        found = self._diagnoses.get(key) if now is not None else None
        if found is not None:
            return found
        view = self.run(run_id, api)
        if view is None:
            return ()
        found = diagnose_view(view, self.settings(run_id, given, api), now or utc_now())
        if now is not None:
            if len(self._diagnoses) >= DIAGNOSES_KEPT:
                self._diagnoses.clear()
            self._diagnoses[key] = found
        return found

    def history(self, run_id: str, api: str | None = None) -> list[Revision]:
        """The revisions of ``run_id`` seen, oldest first, at most ``history_limit``; [] if unknown."""
        return self._data.history(run_id, api)

    def revisions_seen(self, run_id: str, api: str) -> tuple[int, int]:
        """``(revisions of run_id seen on api, of which skipped without decoding)`` since the start."""
        return self._data.revisions_seen(run_id, api)

    def revision_at(self, run_id: str, revision: int, api: str | None = None) -> Revision | None:
        """The history entry in force at ``revision``: the newest of ``run_id``'s entries at or
        before it, or ``None`` when the history holds none that old."""
        return entry_at(self.history(run_id, api), revision)

    def state_at(self, run_id: str, revision: int, api: str | None = None) -> RendezvousSnapshot | None:
        """The state of ``run_id`` as it was at ``revision`` (time travel), or ``None`` when the
        history does not reach back that far or the state was deleted or undecodable then."""
        entry = self.revision_at(run_id, revision, api)
        return None if entry is None else entry.snapshot

    def store_items(self) -> list[StoreItem]:
        """Every store key below ``<prefix>/store/``, decoded, sorted by key."""
        return self._data.store_items()

    def export_history(self, run_id: str, fmt: str, api: str | None = None) -> str:
        """The history of ``run_id`` as ``"csv"`` or ``"json"`` text (see :mod:`rdzv.monitor.export`)."""
        view = self.run(run_id, api)
        return export_revisions(run_id, view.api if view else api, self.history(run_id, api), fmt)

"""One run's history read once, without following it: what ``rdzv history`` and reports print."""

from __future__ import annotations

from dataclasses import dataclass

from ..diff import ChangeKind
from ..kv import KVError, KVUnavailableError, Listing, ReadBack, Target
from ..rendezvous_settings import RendezvousSettings, read_published_settings
from .mirror import ApiMirror
from .model import Revision, RunView, utc_now
from .monitor import Monitor


class RunNotFoundError(LookupError):
    """The run has no state at the target; the message names the runs there."""


@dataclass(frozen=True)
class RunHistory:
    """A run's revisions that etcd still keeps, oldest first, each with its decoded diff; the
    latest view; and the settings its handlers published, if any."""

    run_id: str
    api: str
    view: RunView
    revisions: tuple[Revision, ...]
    published: RendezvousSettings | None
    limited: bool = False

    def scope(self) -> str:
        """How complete the story is, as a clause: from a compaction point, since the state was
        created, or only the newest revisions (when the read was limited, or began mid-story)."""
        first = self.revisions[0] if self.revisions else None
        if first is None:
            return "etcd kept no revision of it"
        if first.complete_from is not None:
            return (f"etcd no longer keeps earlier revisions: the story is complete from revision "
                    f"{first.complete_from} on")
        if not self.limited and first.snapshot is not None and first.changes \
                and first.changes[0].kind == ChangeKind.CREATED:
            return f"complete since the state was created at revision {first.revision}"
        return "only the newest revisions were read (older ones may exist: raise --limit to see them)"


def read_run_history(target: Target, run_id: str, limit: int) -> RunHistory:
    """List the runs on each of the target's APIs (v3 first) and read back the revisions of
    ``run_id`` that etcd still keeps (at most ``limit``), through the same code the monitor uses.

    Raises:
        KVUnavailableError: etcd did not answer.
        KVError: etcd refused every API.
        RunNotFoundError: no API holds a state for ``run_id``.
    """
    layout = target.layout
    known: set[str] = set()
    refused: list[KVError] = []
    for api in target.apis[::-1]:
        kv = target.connect(api)
        try:
            try:
                listing = kv.list(layout.watched)
            except KVUnavailableError:
                raise
            except KVError as exc:  # this API is not offered (v2 off): the other may hold the run
                refused.append(exc)
                continue
            key = layout.state_key(run_id)
            chosen = [item for item in listing.items if item.key == key]
            known.update(run for item in listing.items if (run := layout.run_id(item.key)) and "/" not in run)
            if not chosen:
                continue
            mirror = ApiMirror(api, layout)
            found: list[ReadBack] = []

            def read_back(key: str, revision: int) -> ReadBack:
                found.append(kv.read_back(key, revision, max(0, limit - 1)))
                return found[-1]

            update = mirror.apply_listing(Listing(tuple(chosen), listing.revision), utc_now(), read_back)
            published = next((read_published_settings(item.value) for item in listing.items
                              if item.key == layout.settings_key(run_id)), None)
            history = [entry for entry in update.revisions if entry.run_id == run_id]
            limited = any(result.limited for result in found)
            return RunHistory(run_id, api, update.views[run_id], tuple(history), published, limited)
        finally:
            kv.close()
    if refused and len(refused) == len(target.apis):
        raise refused[0]
    runs = ", ".join(sorted(known)) or "none"
    raise RunNotFoundError(f"No run {run_id!r} at {target.endpoint} below {target.prefix or '/'} (runs there: {runs}).")


def history_of(monitor: Monitor, run_id: str) -> RunHistory:
    """The history ``monitor`` holds of ``run_id`` (a replay's: the whole recording).

    Raises:
        RunNotFoundError: the monitor never saw the run; the message names the runs it saw.
    """
    view = monitor.run(run_id)
    if view is None:
        runs = ", ".join(sorted(monitor.runs())) or "none"
        raise RunNotFoundError(f"No run {run_id!r} in {getattr(monitor, 'source', monitor.endpoint)} (runs there: "
                               f"{runs}).")
    return RunHistory(run_id, view.api, view, tuple(monitor.history(run_id, view.api)),
                      monitor.published_settings(run_id, view.api))

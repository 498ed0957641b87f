"""RoundCard: where the selected run's current round stands, as a row of labelled figures."""

from __future__ import annotations

from datetime import datetime

import panel as pn
import param

from .base import MarkupView, RunScopedView, section
from .style import STYLESHEET, tile
from ..text import NO_VALUE, countdown

EMPTY = "<div class='rdzv-muted'>Select a run in the table above.</div>"


class RoundCard(MarkupView, RunScopedView):
    """Round, complete, closed, the last-call/join deadline counting down, and the counts of
    participants, waiting, redundant and stale nodes (last heartbeat older than
    ``heartbeat_expiry`` seconds)."""

    heartbeat_expiry = param.Number(default=15.0, bounds=(0, None), doc=(
        "Seconds without a heartbeat after which a node counts as stale: keep_alive_interval x "
        "keep_alive_max_attempt of the run (torch's defaults: 5 s x 3)."))

    def __init__(self, **params) -> None:
        super().__init__(**params)
        self.pane = pn.pane.HTML(EMPTY, stylesheets=[STYLESHEET], sizing_mode="stretch_width", margin=(0, 5, 6, 5))
        self._run = None

    def _build(self) -> pn.viewable.Viewable:
        return section("Round", self.pane)

    def _refresh(self, now: datetime) -> None:
        self._run = self.monitor.run(self.run_id) if self.run_id else None
        self._tick(now)

    def render(self, now: datetime) -> str:
        """The card's markup as of ``now`` (every value escaped by :func:`tile`)."""
        run = self._run
        if run is None:
            return EMPTY if not self.run_id else "<div class='rdzv-tiles'>" + tile("run", self.run_id) + tile(
                "state", "not found", "idle") + "</div>"
        tiles = [tile("run", run.run_id)]
        snapshot = run.snapshot
        if run.deleted or snapshot is None:
            tiles.append(tile("state", "deleted" if run.deleted else "undecodable", "idle" if run.deleted else "bad"))
            return "<div class='rdzv-tiles'>" + "".join(tiles) + "</div>"
        stale = len(snapshot.stale(now, keep_alive_interval=self.heartbeat_expiry, max_attempts=1))
        tiles += [
            tile("round", snapshot.round),
            tile("complete", "yes" if snapshot.complete else "no", "good" if snapshot.complete else "warn"),
            tile("closed", "yes" if snapshot.closed else "no", "idle" if snapshot.closed else ""),
            tile("deadline", countdown(snapshot.deadline, now) if not snapshot.complete else NO_VALUE),
            tile("participants", len(snapshot.participants)),
            tile("waiting", len(snapshot.wait_list), "warn" if snapshot.wait_list else ""),
            tile("redundant", len(snapshot.redundancy_list)),
            tile("stale", stale, "bad" if stale else ""),
        ]
        return "<div class='rdzv-tiles'>" + "".join(tiles) + "</div>"

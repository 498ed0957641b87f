"""RoundCard: where the selected run's current round stands, as a row of labelled figures."""

from __future__ import annotations

from datetime import datetime

import panel as pn
import param

from ..rendezvous_settings import RendezvousSettings
from .base import MarkupView, RunScopedView, section
from .markup_pane import MarkupPane
from .style import STYLESHEET, tile
from .. import time_marks
from ..text import NO_VALUE

EMPTY = "<div class='rdzv-muted'>Select a run in the table above.</div>"


class RoundCard(MarkupView, RunScopedView):
    """Round, complete, closed, the last-call/join deadline counting down, and the counts of
    participants, waiting, redundant and stale nodes (stale by the run's ``settings``)."""

    settings = param.ClassSelector(class_=RendezvousSettings, default=RendezvousSettings(), doc=(
        "What the viewer was told of the run's settings (its published settings win); their keep-alive "
        "decides when a node is stale."))

    def __init__(self, **params) -> None:
        super().__init__(**params)
        self.pane = MarkupPane(EMPTY, stylesheets=[STYLESHEET], sizing_mode="stretch_width", margin=(0, 5, 6, 5))
        self._run = None

    def _build(self) -> pn.viewable.Viewable:
        return section("Round", self.pane)

    def _refresh(self, now: datetime) -> None:
        self._run = self.reading()
        self._tick(now)

    def render(self, now: datetime) -> str:
        """The card's markup as of ``now`` (every value escaped by :func:`tile`)."""
        run, now = self._run, self.moment(now)
        if run is None:
            return EMPTY if not self.run_id else "<div class='rdzv-tiles'>" + tile("run", time_marks.plain(self.run_id)) + tile(
                "state", "not found", "idle") + "</div>"
        tiles = [tile("run", time_marks.plain(run.run_id))]
        snapshot = run.snapshot
        if run.deleted or snapshot is None:
            tiles.append(tile("state", "deleted" if run.deleted else "undecodable", "idle" if run.deleted else "bad"))
            return "<div class='rdzv-tiles'>" + "".join(tiles) + "</div>"
        stale = snapshot.stale_count(now, self.monitor.settings(run.run_id, self.settings))
        tiles += [
            tile("round", snapshot.round),
            tile("complete", "yes" if snapshot.complete else "no", "good" if snapshot.complete else "warn"),
            tile("closed", "yes" if snapshot.closed else "no", "idle" if snapshot.closed else ""),
            tile("deadline", time_marks.countdown(snapshot.deadline)
                 if snapshot.deadline is not None and not snapshot.complete else NO_VALUE),
            tile("participants", len(snapshot.participants)),
            tile("waiting", len(snapshot.wait_list), "warn" if snapshot.wait_list else ""),
            tile("redundant", len(snapshot.redundancy_list)),
            tile("stale", stale, "bad" if stale else ""),
        ]
        return "<div class='rdzv-tiles'>" + "".join(tiles) + "</div>"

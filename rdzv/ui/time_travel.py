"""TimeTravelBar: step the run views back through the selected run's revisions, and back to live.

Stepping or clicking a point of the timeline sets ``as_of``; every run view then shows the run
as it was at that revision (the live data keeps arriving underneath), and the bar says so:
"As of revision N, HH:MM:SS UTC". "Back to live" clears it.
"""

from __future__ import annotations

import html
from datetime import datetime

import panel as pn

from ..monitor import revision_time
from .base import RunScopedView
from .markup_pane import MarkupPane
from .style import STYLESHEET

LIVE = "<span class='rdzv-good' data-role='as-of'>Live</span> <span class='rdzv-muted'>— showing the run as it is " \
       "now; step back, or click a point of the timeline, to see it as it was.</span>"


class TimeTravelBar(RunScopedView):
    """"◀ Previous change", "Next change ▶" and "Back to live" over the selected run's history, and a line
    saying which revision the run views show. ``as_of`` is the revision picked (None: live)."""

    def __init__(self, **params) -> None:
        super().__init__(**params)
        self.older = pn.widgets.Button(label="◀ Previous change", width=140, margin=(5, 5))
        self.newer = pn.widgets.Button(label="Next change ▶", width=130, margin=(5, 5))
        self.live = pn.widgets.Button(label="Back to live", color="primary", width=110, margin=(5, 5))
        self.label = MarkupPane(LIVE, stylesheets=[STYLESHEET], sizing_mode="stretch_width", margin=(10, 5, 0, 5))
        self.older.on_click(lambda _: self.step(-1))
        self.newer.on_click(lambda _: self.step(+1))
        self.live.on_click(lambda _: setattr(self, "as_of", None))
        self._nothing_to_step = False  # the last step found no change to step to (said until the next step)

    def _build(self) -> pn.viewable.Viewable:
        return pn.Row(self.older, self.newer, self.live, self.label, sizing_mode="stretch_width", margin=(0, 5))

    def step(self, direction: int) -> None:
        """Show the revision that changed something (not only heartbeats) before (-1) or after
        (+1) the one shown; past the newest, live."""
        revisions = self._changes()
        self._nothing_to_step = not revisions
        if not revisions:
            self.tick()
            return
        current = self.as_of if self.as_of is not None else revisions[-1]
        at = max((index for index, revision in enumerate(revisions) if revision <= current), default=0)
        at += direction
        self.as_of = None if at >= len(revisions) else revisions[max(at, 0)]

    def _changes(self) -> list[int]:
        """The revisions of the run's history that changed something (not only heartbeats)."""
        history = self.monitor.history(self.run_id) if self.run_id else []
        return [entry.revision for entry in history if not entry.heartbeat_only]

    def _refresh(self, now: datetime) -> None:
        if self._nothing_to_step and self.run_id:
            self._nothing_to_step = not self._changes()
        self._tick(now)

    def _tick(self, now: datetime) -> None:
        entry = self.reading() if self.as_of is not None else None
        self.live.disabled = self.as_of is None
        self.newer.disabled = self.as_of is None
        if self.as_of is None:
            text = LIVE
            if self._nothing_to_step and self.run_id:
                text += (" <span class='rdzv-warn' data-role='nothing-to-step'>No change of this run but heartbeats "
                         "has been read yet (its history is read back from etcd when the dashboard starts); try "
                         "again in a moment.</span>")
        elif entry is None:
            text = (f"<span class='rdzv-warn' data-role='as-of'>As of revision {self.as_of}</span> "
                    "<span class='rdzv-muted'>— the history kept does not reach back that far.</span>")
        else:
            estimated = " (time estimated from the state)" if entry.time_estimated else ""
            text = (f"<span class='rdzv-warn' data-role='as-of'>As of revision {entry.revision}, "
                    f"{html.escape(revision_time(entry))} UTC</span><span class='rdzv-muted'>{estimated} — "
                    "newer revisions keep arriving; “Back to live” returns to them.</span>")
        if self.label.object != text:
            self.label.object = text

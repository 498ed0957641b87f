"""WhatsHappening: the selected run explained, at the top of the run: what it is waiting for,
what torch does next and when (:func:`rdzv.diagnosis.diagnose`), with live countdowns."""

from __future__ import annotations

import html
from datetime import datetime

import panel as pn
import param

from .. import time_marks
from ..diagnosis import Finding
from ..monitor import diagnose_view
from ..rendezvous_settings import RendezvousSettings
from .base import MarkupView, RunScopedView, section
from .markup_pane import MarkupPane
from .style import STYLESHEET

EMPTY = "<div class='rdzv-muted'>Select a run to see what it is waiting for.</div>"
_TONES = {"error": "bad", "warning": "warn", "info": "good"}


class WhatsHappening(MarkupView, RunScopedView):
    """One line per finding, most important first: the message, what happens next, and a
    countdown to when (re-rendered every tick, so any finding that time alone brings, such as a
    node going stale, follows the clock; the countdown and the ages in the text are counted by
    the page)."""

    settings = param.ClassSelector(class_=RendezvousSettings, default=RendezvousSettings(), doc=(
        "What the viewer was told of the run's settings; the run's published settings win."))

    def __init__(self, **params) -> None:
        super().__init__(**params)
        self.pane = MarkupPane(EMPTY, stylesheets=[STYLESHEET], sizing_mode="stretch_width", margin=(0, 5, 6, 5))

    def _build(self) -> pn.viewable.Viewable:
        return section("What's happening", self.pane)

    def _refresh(self, now: datetime) -> None:
        self._tick(now)

    def render(self, now: datetime) -> str:
        """The card's markup as of ``now``; every text from the state is escaped."""
        if not self.run_id:
            return EMPTY
        if self.as_of is None:
            findings = self.monitor.diagnose(self.run_id, self.settings, now)
        else:
            entry, now = self.reading(), self.moment(now)
            settings = self.monitor.settings(self.run_id, self.settings)
            findings = diagnose_view(entry, settings, now) if entry is not None else ()
        if not findings:
            return f"<div class='rdzv-muted'>Run {html.escape(time_marks.plain(self.run_id))} is not in etcd.</div>"
        return "".join(render_finding(finding) for finding in findings)


def render_finding(finding: Finding) -> str:
    """One finding as markup: its message, then what happens next and when (escaped), with the
    time marks of :attr:`Finding.marked` for the view to keep current."""
    message, next_ = finding.marked
    when = f" <span class='rdzv-muted' data-role='countdown'>({time_marks.countdown(finding.at)})</span>" \
        if finding.at is not None else ""
    return (
        f"<div class='rdzv-finding' data-code='{html.escape(finding.code)}'>"
        f"<span class='rdzv-{_TONES[finding.severity]}'>●</span> {html.escape(message)}{when}"
        f"<div class='rdzv-muted'>Next: {html.escape(next_)}</div></div>"
    )

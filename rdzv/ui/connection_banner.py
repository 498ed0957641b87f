"""ConnectionBanner: whether the monitor reaches etcd — connected, unreachable since when, recovered."""

from __future__ import annotations

import html
from datetime import datetime

import panel as pn

from .base import MarkupView
from .markup_pane import MarkupPane
from .style import STYLESHEET
from .. import time_marks

LABELS = {"connecting": "Connecting", "connected": "Connected", "unreachable": "etcd unreachable", "recovered": "Recovered"}


class ConnectionBanner(MarkupView):
    """One line, colored by state, with the monitor's own sentence (escaped) and, while etcd is
    unreachable, how long it has been."""

    def __init__(self, **params) -> None:
        super().__init__(**params)
        self.pane = MarkupPane("", stylesheets=[STYLESHEET], sizing_mode="stretch_width", margin=(5, 5))
        self._status = None

    def _build(self) -> pn.viewable.Viewable:
        return self.pane

    def _refresh(self, now: datetime) -> None:
        self._status = self.monitor.connection
        self._tick(now)

    def render(self, now: datetime) -> str:
        status = self._status
        if status is None:
            return ""
        label = LABELS.get(status.state, status.state)
        lasting = (f" (for {time_marks.since(status.since)})"
                   if status.state == "unreachable" and status.since is not None else "")
        return (
            f"<div class='rdzv-banner rdzv-banner-{html.escape(status.state)}' data-state='{html.escape(status.state)}'>"
            f"<b>{html.escape(label)}</b>{lasting} · {html.escape(time_marks.plain(status.message))}</div>"
        )

"""TimelineView: the selected run's revisions over time, and a log of what each one changed.

Time travel (``as_of``) marks the revision on the plot and shows the log only up to it.

The plot has a point per revision (x: when the monitor saw it, or for a revision read back from
etcd's history when the state says it was written, marked as an estimate; y: the number of
participants, with the waiting count as a dashed step line); hovering a point shows the
sentences describing what changed. New revisions are streamed into the plot; the log, newest
first, is a plain-text table of at most ``max_log_rows`` rows, sent whole when it changes (a
Bokeh table cannot add rows at its top, and a whole log is cheaper to send than Tabulator's
pandas stream). Only selecting another run rebuilds the plot.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import panel as pn
import param
from bokeh.models import (
    AdaptiveTicker,
    ColumnDataSource,
    DataRange1d,
    DatetimeTickFormatter,
    HoverTool,
    Span,
    TapTool,
)
from bokeh.plotting import figure

from ..monitor import change_sentences, revision_kind, revision_time
from .base import RunScopedView, section
from .browser_clock import epoch_ms, marked_text_formatter
from .tables import text_table

POINT_STYLES = {  # kind -> (color, size)
    "change": ("#0969da", 9),
    "read_back": ("#54aeff", 9),
    "heartbeat": ("#afb8c1", 5),
    "resync": ("#8250df", 9),
    "undecodable": ("#cf222e", 9),
    "deleted": ("#57606a", 9),
}

MIN_SPAN_MS = 60_000
"""The plot shows at least a minute, so a young run does not zoom into microseconds."""

HOVER_SENTENCES = 6
"""A tooltip lists at most this many changes (a 1,000-node round completing has 1,000)."""

LOG_COLUMNS = [
    ("time", "written (UTC)", 110),
    ("revision", "revision", 80),
    ("round", "round", 60),
    ("change", "what changed", 700),
]
LOG_FIELDS = [field for field, _, _ in LOG_COLUMNS]
LOG_HEIGHT = 220

TOOLTIPS = [
    ("revision", "@revision"),
    ("written", "@when UTC"),
    ("round", "@round"),
    ("participants", "@participants (waiting @waiting)"),
    ("what changed", "@changes"),
]


def hover_text(sentences: list[str], limit: int = HOVER_SENTENCES) -> str:
    """The sentences of one revision for its tooltip, the first ``limit`` of them and a count of the rest."""
    shown = "; ".join(sentences[:limit])
    return shown + (f"; and {len(sentences) - limit} more changes" if len(sentences) > limit else "")


def empty_log() -> dict[str, list]:
    """The event log's columns with no rows."""
    return {name: [] for name in LOG_FIELDS}


class TimelineView(RunScopedView):
    """The revisions plot (``figure``, over ``source``) and the event log (``log``, newest first)."""

    max_points = param.Integer(default=500, bounds=(10, None), doc="Points kept in the plot; the oldest roll off.")
    max_log_rows = param.Integer(default=300, bounds=(10, None), doc="Rows kept in the event log.")
    picked = param.Integer(default=None, allow_None=True, doc="The revision of the point last clicked.")

    def __init__(self, **params) -> None:
        super().__init__(**params)
        self.source = ColumnDataSource(self._columns([]))
        self.as_of_line = Span(location=0, dimension="height", line_color="#bf8700", line_width=2,
                               line_dash="dotted", visible=False)
        self.figure = self._make_figure()
        self.figure.add_layout(self.as_of_line)
        self.source.selected.on_change("indices", self._on_tap)
        self.log_source = ColumnDataSource(empty_log())
        self.log = text_table(self.log_source, LOG_COLUMNS, height=LOG_HEIGHT, sortable=False,
                              formatters={"change": marked_text_formatter("change")})
        self._shown_run: str | None = None
        self._last_revision: int | None = None

    def _build(self) -> pn.viewable.Viewable:
        return pn.Column(
            section("Revisions", pn.pane.Bokeh(self.figure, sizing_mode="stretch_width")),
            section("Event log (newest first)", pn.pane.Bokeh(self.log, sizing_mode="stretch_width")),
            sizing_mode="stretch_width",
        )

    def _make_figure(self):
        plot = figure(
            x_axis_type="datetime", x_range=DataRange1d(min_interval=MIN_SPAN_MS, range_padding=0.02),
            height=250, sizing_mode="stretch_width", toolbar_location="above",
            tools="xpan,xwheel_zoom,box_zoom,reset", active_scroll=None, y_axis_label="nodes",
        )
        plot.step("seen_at", "waiting", source=self.source, mode="after", color="#bf8700", line_dash="dashed",
                  line_width=1.5, legend_label="waiting")
        plot.step("seen_at", "participants", source=self.source, mode="after", color="#0969da", line_width=2,
                  legend_label="participants")
        points = plot.scatter("seen_at", "participants", source=self.source, color="color", size="size",
                              line_color="white", line_width=0.5)
        plot.add_tools(HoverTool(renderers=[points], tooltips=TOOLTIPS, formatters={"@seen_at": "datetime"}),
                       TapTool(renderers=[points]))
        legend = plot.legend[0]
        legend.orientation = "horizontal"
        legend.label_text_font_size = "11px"
        legend.border_line_color = None
        legend.margin = 0
        plot.add_layout(legend, "above")
        plot.y_range.start = 0
        plot.yaxis.ticker = AdaptiveTicker(min_interval=1)
        plot.xaxis.formatter = DatetimeTickFormatter(
            milliseconds="%H:%M:%S.%3N", seconds="%H:%M:%S", minsec="%H:%M:%S", minutes="%H:%M", hourmin="%H:%M",
            hours="%H:%M", context=None)
        plot.toolbar.logo = None
        plot.outline_line_color = None
        plot.grid.grid_line_alpha = 0.4
        return plot

    def _on_tap(self, _attr: str, _old: list[int], new: list[int]) -> None:
        revisions = self.source.data["revision"]
        if new and new[0] < len(revisions):
            self.picked = int(revisions[new[0]])

    @param.depends("as_of", watch=True)
    def _mark_as_of(self) -> None:
        entry = self.monitor.revision_at(self.run_id, self.as_of) if self.run_id and self.as_of is not None else None
        if entry is not None:
            self.as_of_line.location = epoch_ms(entry.seen_at)
        self.as_of_line.visible = entry is not None
        if entry is None and self.source.selected.indices:
            self.source.selected.indices = []
        self._show_log()

    def _show_log(self) -> None:
        """The event log up to the revision shown (time travel), or up to now; rebuilt whole."""
        history = self.monitor.history(self.run_id) if self.run_id else []
        if self.as_of is not None:
            history = [entry for entry in history if entry.revision <= self.as_of]
        self.log_source.data = self._newest_first(self._log_rows(history), empty_log())

    def _refresh(self, now: datetime) -> None:
        history = self.monitor.history(self.run_id) if self.run_id else []
        if self.run_id != self._shown_run:
            self._shown_run = self.run_id
            self._last_revision = None
            self.source.data = self._columns([])
            self.log_source.data = empty_log()
        new = [entry for entry in history if self._last_revision is None or entry.revision > self._last_revision]
        if not new:
            return
        self._last_revision = new[-1].revision
        self.source.stream(self._columns(new), rollover=self.max_points)
        if self.as_of is not None:
            return  # the log stays where time travel put it; back to live rebuilds it
        rows = self._log_rows(new)
        if rows["change"]:
            self.log_source.data = self._newest_first(rows, self.log_source.data)

    @staticmethod
    def _columns(revisions: Sequence) -> dict[str, list]:
        kinds = [revision_kind(entry) for entry in revisions]
        snapshots = [entry.snapshot for entry in revisions]
        return {
            "revision": [entry.revision for entry in revisions],
            "seen_at": [entry.seen_at for entry in revisions],
            "when": [revision_time(entry) + (" (read back from etcd)" if entry.read_back else "")
                     for entry in revisions],
            "round": [snap.round if snap else "" for snap in snapshots],
            "participants": [len(snap.participants) if snap else 0 for snap in snapshots],
            "waiting": [len(snap.wait_list) if snap else 0 for snap in snapshots],
            "changes": [hover_text(change_sentences(entry)) for entry in revisions],
            "color": [POINT_STYLES[kind][0] for kind in kinds],
            "size": [POINT_STYLES[kind][1] for kind in kinds],
        }

    def _newest_first(self, rows: dict[str, list], shown: dict[str, list]) -> dict[str, list]:
        """The log with ``rows`` (oldest first) above the ``shown`` rows, at most ``max_log_rows``."""
        return {name: (rows[name][::-1] + list(shown[name]))[: self.max_log_rows] for name in LOG_FIELDS}

    @staticmethod
    def _log_rows(revisions: Sequence) -> dict[str, list]:
        """One row per sentence of what each revision changed, oldest first (heartbeats left out)."""
        rows = empty_log()
        for entry in revisions:
            if revision_kind(entry) == "heartbeat":
                continue
            for sentence in change_sentences(entry, heartbeats=False):
                rows["time"].append(revision_time(entry))
                rows["revision"].append(str(entry.revision))
                rows["round"].append(str(entry.snapshot.round) if entry.snapshot else "")
                rows["change"].append(sentence)
        return rows

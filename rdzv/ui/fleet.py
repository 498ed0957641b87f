"""FleetView: one row per run the monitor found; clicking a row selects that run."""

from __future__ import annotations

from datetime import datetime

import panel as pn
import param
from bokeh.models import ColumnDataSource

from ..diagnosis import headline
from ..rendezvous_settings import RendezvousSettings
from .base import MonitorView, section
from .browser_clock import PageClock, age_formatter, epoch_ms, marked_text_formatter
from .sync import patch_column, sync_source
from .tables import fit_height, show_marked_row, text_table
from ..text import run_state

COLUMNS = [
    ("run_id", "run", 200),
    ("api", "api", 50),
    ("round", "round", 60),
    ("participants", "participants", 90),
    ("waiting", "waiting", 70),
    ("state", "state", 100),
    ("finding", "what's happening", 360),  # the headline finding, its time marks read by the page
    ("changed_ms", "last change", 100),  # when the monitor saw the run's last change, aged by the page
]

STATE_COLORS = {
    "complete": "#1a7f37",
    "forming": "#9a6700",
    "closed": "#57606a",
    "deleted": "#57606a",
    "undecodable": "#cf222e",
}


class FleetView(MonitorView):
    """The table of every run, sorted by run id.

    ``selected`` follows the row the user clicks; the selected run's row is in bold, and
    scrolled into view when it becomes the selected one (:func:`.tables.show_marked_row`). The
    table keeps no selection of its own once a click is taken: BokehJS re-applies a table's
    selection on every redraw and SlickGrid then takes the keyboard, from whoever is typing (an
    input of the page, a notebook cell below the dashboard).
    """

    selected = param.String(default=None, allow_None=True, doc="The run id of the selected row.")
    settings = param.ClassSelector(class_=RendezvousSettings, default=RendezvousSettings(), doc=(
        "What the viewer was told of the runs' settings; a run's published settings win."))

    def __init__(self, **params) -> None:
        super().__init__(**params)
        self.source = ColumnDataSource({name: [] for name in [field for field, _, _ in COLUMNS] + ["color", "weight"]})
        self.table = text_table(self.source, COLUMNS, color_field="color", font_style_field="weight",
                                selectable=True, multi_selectable=False, css_classes=["rdzv-runs"],
                                formatters={"changed_ms": age_formatter("changed_ms", "color", as_of_field=None),
                                            "finding": marked_text_formatter("finding", "color")})
        self.clock = PageClock(self.table)
        show_marked_row(self.table, "run_id", "weight", "bold")
        self._run_ids: list[str] = []
        self.source.selected.on_change("indices", self._on_select)

    def _build(self) -> pn.viewable.Viewable:
        return section("Runs", pn.pane.Bokeh(self.table, sizing_mode="stretch_width"))

    def _refresh(self, now: datetime) -> None:
        runs = sorted(self.monitor.runs().values(), key=lambda run: run.run_id)
        self._run_ids = [run.run_id for run in runs]
        states = [run_state(run) for run in runs]
        columns = {
            "run_id": [run.run_id for run in runs],
            "api": [run.api for run in runs],
            "round": [run.snapshot.round if run.snapshot else "" for run in runs],
            "participants": [len(run.snapshot.participants) if run.snapshot else "" for run in runs],
            "waiting": [len(run.snapshot.wait_list) if run.snapshot else "" for run in runs],
            "state": states,
            "finding": self._headlines(now),
            "changed_ms": [epoch_ms(run.updated_at) for run in runs],
            "color": [STATE_COLORS[state] for state in states],
            "weight": self._weights(),
        }
        sync_source(self.source, columns, key="run_id")
        fit_height(self.table, 2, 8)

    def page_loaded(self) -> None:
        self.clock.restart()

    def _tick(self, now: datetime) -> None:
        self.clock.tick(now)
        patch_column(self.source, "finding", self._headlines(now))

    def _headlines(self, now: datetime) -> list[str]:
        """Each run's most important finding, in one line, with its time marks (the page reads
        them, so a headline is sent again only when it changes)."""
        found = (headline(self.monitor.diagnose(run_id, self.settings, now)) for run_id in self._run_ids)
        return [finding.marked[0] if finding is not None else "" for finding in found]

    def _weights(self) -> list[str]:
        return ["bold" if run_id == self.selected else "normal" for run_id in self._run_ids]

    @param.depends("selected", watch=True)
    def _show_selection(self) -> None:
        patch_column(self.source, "weight", self._weights())

    def _on_select(self, _attr: str, _old: list[int], new: list[int]) -> None:
        run_ids = self.source.data["run_id"]
        if new and new[0] < len(run_ids):
            self.selected = run_ids[new[0]]
        if new:
            self.source.selected.indices = []

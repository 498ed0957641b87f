"""ParticipantsView: every node the selected run's state mentions, one row each (rows from
:func:`rdzv.nodes.node_rows`, the presentation shared with ``rdzv status`` and notebooks)."""

from __future__ import annotations

from datetime import datetime

import panel as pn
import param
from bokeh.models import ColumnDataSource

from ..nodes import COLUMNS, HEARTBEAT_ONLY, NodeRow, node_rows
from ..rendezvous_settings import RendezvousSettings
from ..text import age
from .base import RunScopedView, section
from .sync import sync_source
from .tables import fit_height, text_table

WIDTHS = {"addr": 180, "pid": 70, "local_id": 60, "rank": 50, "list": 90, "heartbeat_age": 100, "stale": 60}

_LIST_COLORS = {"participant": "#1f2328", "waiting": "#9a6700", "redundant": "#57606a", HEARTBEAT_ONLY: "#57606a"}
STALE_COLOR = "#cf222e"


class ParticipantsView(RunScopedView):
    """Participants by rank, then the waiting, redundant and heartbeat-only nodes; stale nodes
    (by the run's ``settings``) in red. Ages and stale flags follow the clock through :meth:`tick`."""

    settings = param.ClassSelector(class_=RendezvousSettings, default=RendezvousSettings(), doc=(
        "What the viewer was told of the run's settings (its published settings win); their keep-alive "
        "decides when a node is stale."))

    def __init__(self, **params) -> None:
        super().__init__(**params)
        self.source = ColumnDataSource({name: [] for name in ["key", *(field for field, _ in COLUMNS), "color"]})
        self.table = text_table(self.source, [(field, title, WIDTHS[field]) for field, title in COLUMNS],
                                color_field="color")
        self._snapshot = None

    def _build(self) -> pn.viewable.Viewable:
        return section("Nodes", pn.pane.Bokeh(self.table, sizing_mode="stretch_width"))

    def _refresh(self, now: datetime) -> None:
        run = self.reading()
        self._snapshot = run.snapshot if run is not None else None
        self._tick(now)
        fit_height(self.table, 4, 14)

    def _tick(self, now: datetime) -> None:
        now = self.moment(now)
        settings = self.monitor.settings(self.run_id, self.settings) if self.run_id else self.settings
        rows = node_rows(self._snapshot, settings, now) if self._snapshot is not None else []
        sync_source(self.source, _columns(rows), key="key")


def _columns(rows: list[NodeRow]) -> dict[str, list]:
    return {
        "key": [repr((row.addr, row.pid, row.local_id)) for row in rows],
        "addr": [row.addr for row in rows],
        "pid": [row.pid for row in rows],
        "local_id": [row.local_id for row in rows],
        "rank": ["" if row.rank is None else row.rank for row in rows],
        "list": [row.list for row in rows],
        "heartbeat_age": [age(row.heartbeat_age) for row in rows],
        "stale": ["stale" if row.stale else "" for row in rows],
        "color": [STALE_COLOR if row.stale else _LIST_COLORS[row.list] for row in rows],
    }

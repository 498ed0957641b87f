"""ParticipantsView: every node the selected run's state mentions, one row each (rows from
:func:`rdzv.nodes.node_rows`, the presentation shared with ``rdzv status`` and notebooks)."""

from __future__ import annotations

import math
from datetime import datetime

import numpy as np
import panel as pn
import param
from bokeh.models import ColumnDataSource

from ..nodes import COLUMNS, HEARTBEAT_ONLY, NodeRow, node_rows
from ..rendezvous_settings import RendezvousSettings
from ..state import RendezvousSnapshot
from .base import RunScopedView, section
from .browser_clock import AS_OF_FIELD, PageClock, age_formatter, epoch_ms
from .shared_answers import SharedAnswers
from .sync import sync_source
from .tables import fit_height, text_table

WIDTHS = {"addr": 180, "pid": 70, "local_id": 60, "rank": 50, "list": 90, "heartbeat_age": 100, "stale": 60}

_LIST_COLORS = {"participant": "#1f2328", "waiting": "#9a6700", "redundant": "#57606a", HEARTBEAT_ONLY: "#57606a"}
STALE_COLOR = "#cf222e"

HEARTBEAT_FIELD = "heartbeat_ms"
"""The source column of each node's last heartbeat (ms since the epoch), aged by the page."""
Columns = dict[str, "list | np.ndarray"]
"""A table's columns: the times as arrays of float (Bokeh sends them as binary), the rest as lists."""
NODE_KEY = ("addr", "pid", "local_id")
"""The source columns that together identify a row's node (torch's _NodeDesc)."""
SOURCE_FIELDS = {field: HEARTBEAT_FIELD if field == "heartbeat_age" else field for field, _ in COLUMNS}
"""The source column behind each of :data:`rdzv.nodes.COLUMNS`."""


class ParticipantsView(RunScopedView):
    """Participants by rank, then the waiting, redundant and heartbeat-only nodes; stale nodes
    (by the run's ``settings``) in red.

    Heartbeat ages are counted by the page itself (:mod:`.browser_clock`): the server sends each
    node's last heartbeat once, and redraws a row only when its node turns stale (the moment is
    known in advance: :meth:`RendezvousSettings.stale_after`), so a quiet run costs nothing per
    second. Travelling in time, ages are told at the revision's moment and do not move."""

    settings = param.ClassSelector(class_=RendezvousSettings, default=RendezvousSettings(), doc=(
        "What the viewer was told of the run's settings (its published settings win); their keep-alive "
        "decides when a node is stale."))

    def __init__(self, **params) -> None:
        super().__init__(**params)
        self.source = ColumnDataSource({name: [] for name in [*SOURCE_FIELDS.values(), AS_OF_FIELD, "color"]})
        self.table = text_table(
            self.source, [(SOURCE_FIELDS[field], title, WIDTHS[field]) for field, title in COLUMNS],
            color_field="color", formatters={SOURCE_FIELDS["heartbeat_age"]: age_formatter(HEARTBEAT_FIELD, "color")})
        self.clock = PageClock(self.table)
        self._snapshot = None
        self._next_stale_at: datetime | None = None
        self._shown_columns: Columns | None = None  # the shared columns the source was last synced to

    def _build(self) -> pn.viewable.Viewable:
        return section("Nodes", pn.pane.Bokeh(self.table, sizing_mode="stretch_width"))

    def _refresh(self, now: datetime) -> None:
        run = self.reading()
        self._snapshot = run.snapshot if run is not None else None
        self._show(now)
        fit_height(self.table, 4, 14)

    def page_loaded(self) -> None:
        self.clock.restart()

    def _tick(self, now: datetime) -> None:
        self.clock.tick(now)
        if self._next_stale_at is not None and now > self._next_stale_at:
            self._show(now)

    def _show(self, now: datetime) -> None:
        """Sync the table with the rows at ``now`` and note when the next node turns stale."""
        settings = self.monitor.settings(self.run_id, self.settings) if self.run_id else self.settings
        columns, self._next_stale_at = _table(self._snapshot, settings, self.moment(now), live=self.as_of is None)
        shown, self._shown_columns = self._shown_columns, None  # unknown should the sync fail midway
        sync_source(self.source, columns, key=NODE_KEY, shown=shown)
        self._shown_columns = columns


SHARED_TABLES_KEPT = 8
"""Tables kept for other sessions showing the same state at the same moment."""
_SHARED_TABLES: SharedAnswers[tuple[Columns, datetime | None]] = SharedAnswers(SHARED_TABLES_KEPT)


def _table(snapshot: RendezvousSnapshot | None, settings: RendezvousSettings, moment: datetime, live: bool
           ) -> tuple[Columns, datetime | None]:
    """The table's columns for ``snapshot`` at ``moment`` and, ``live``, when its next node turns
    stale (:meth:`RendezvousSettings.stale_after`). Sessions asking the same share one answer,
    which none of them may change (:func:`sync_source` copies what it keeps, and works out
    each step between two such answers once)."""
    return _SHARED_TABLES.get((snapshot,), (settings, moment, live),
                              lambda: _work_out_table(snapshot, settings, moment, live))


def _work_out_table(snapshot: RendezvousSnapshot | None, settings: RendezvousSettings, moment: datetime, live: bool
                    ) -> tuple[Columns, datetime | None]:
    rows = node_rows(snapshot, settings, moment) if snapshot is not None else []
    columns = _columns(rows, math.nan if live else epoch_ms(moment))
    turning = [settings.stale_after(row.last_heartbeat) for row in rows if row.last_heartbeat is not None and not row.stale]
    return columns, (min(turning) if turning and live else None)


def _columns(rows: list[NodeRow], as_of_ms: float) -> Columns:
    return {
        "addr": [row.addr for row in rows],
        "pid": [row.pid for row in rows],
        "local_id": [row.local_id for row in rows],
        "rank": ["" if row.rank is None else row.rank for row in rows],
        "list": [row.list for row in rows],
        HEARTBEAT_FIELD: np.array([epoch_ms(row.last_heartbeat) for row in rows], dtype=float),
        AS_OF_FIELD: np.full(len(rows), as_of_ms),
        "stale": ["stale" if row.stale else "" for row in rows],
        "color": [STALE_COLOR if row.stale else _LIST_COLORS[row.list] for row in rows],
    }

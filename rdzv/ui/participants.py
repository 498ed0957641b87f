"""ParticipantsView: every node the selected run's state mentions, one row each."""

from __future__ import annotations

from datetime import datetime

import panel as pn
import param
from bokeh.models import ColumnDataSource

from .base import RunScopedView, section
from .sync import patch_column, sync_source
from .tables import fit_height, text_table
from ..text import since

COLUMNS = [
    ("addr", "addr", 180),
    ("pid", "pid", 70),
    ("local_id", "local id", 60),
    ("rank", "rank", 50),
    ("list", "list", 90),
    ("heartbeat", "heartbeat age", 100),
    ("stale", "stale", 60),
]

_ORDER = {"participant": 0, "waiting": 1, "redundant": 2, "heartbeat only": 3}
_LIST_COLORS = {"participant": "#1f2328", "waiting": "#9a6700", "redundant": "#57606a", "heartbeat only": "#57606a"}
STALE_COLOR = "#cf222e"


class ParticipantsView(RunScopedView):
    """Participants by rank, then the waiting, redundant and heartbeat-only nodes.

    A node whose last heartbeat is older than ``heartbeat_expiry`` seconds is flagged
    stale (and shown in red); the flag and the ages follow the clock through :meth:`tick`.
    """

    heartbeat_expiry = param.Number(default=15.0, bounds=(0, None), doc=(
        "Seconds without a heartbeat after which a node is stale (keep_alive_interval x keep_alive_max_attempt)."))

    def __init__(self, **params) -> None:
        super().__init__(**params)
        self.source = ColumnDataSource({name: [] for name in ["key", *(field for field, _, _ in COLUMNS), "color"]})
        self.table = text_table(self.source, COLUMNS, color_field="color")
        self._heartbeats: list[datetime | None] = []
        self._lists: list[str] = []

    def _build(self) -> pn.viewable.Viewable:
        return section("Nodes", pn.pane.Bokeh(self.table, sizing_mode="stretch_width"))

    def _refresh(self, now: datetime) -> None:
        run = self.monitor.run(self.run_id) if self.run_id else None
        snapshot = run.snapshot if run is not None else None
        rows = []
        if snapshot is not None:
            for node in snapshot.nodes:
                where = snapshot.membership(node) or "heartbeat only"
                rank = snapshot.participants.get(node)
                rows.append((_ORDER[where], rank if rank is not None else 0, node, where, rank))
        rows.sort(key=lambda row: row[:3])
        self._lists = [row[3] for row in rows]
        self._heartbeats = [snapshot.last_heartbeats.get(row[2]) for row in rows] if snapshot else []
        stale = self._stale_flags(now)
        columns = {
            "key": [repr((node.addr, node.pid, node.local_id)) for _, _, node, _, _ in rows],
            "addr": [node.addr for _, _, node, _, _ in rows],
            "pid": [node.pid for _, _, node, _, _ in rows],
            "local_id": [node.local_id for _, _, node, _, _ in rows],
            # torch assigns ranks when a round completes; until then every rank reads 0.
            "rank": [rank if rank is not None and snapshot.complete else "" for *_, rank in rows],
            "list": self._lists,
            "heartbeat": [since(moment, now) for moment in self._heartbeats],
            "stale": stale,
            "color": self._colors(stale),
        }
        sync_source(self.source, columns, key="key")
        fit_height(self.table, 4, 14)

    def _tick(self, now: datetime) -> None:
        stale = self._stale_flags(now)
        patch_column(self.source, "heartbeat", [since(moment, now) for moment in self._heartbeats])
        patch_column(self.source, "stale", stale)
        patch_column(self.source, "color", self._colors(stale))

    def _stale_flags(self, now: datetime) -> list[str]:
        return ["stale" if moment is not None and (now - moment).total_seconds() > self.heartbeat_expiry else ""
                for moment in self._heartbeats]

    def _colors(self, stale: list[str]) -> list[str]:
        return [STALE_COLOR if flag else _LIST_COLORS[where] for flag, where in zip(stale, self._lists)]

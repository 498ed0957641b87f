"""StoreBrowser: the run store's decoded keys and values, filterable, one value in full on select."""

from __future__ import annotations

from datetime import datetime

import panel as pn
from bokeh.models import ColumnDataSource, PreText

from .base import MonitorView, section
from .sync import sync_source
from .tables import fit_height, text_table
from ..text import clip, value_text

COLUMNS = [
    ("key", "key", 260),
    ("api", "api", 40),
    ("revision", "revision", 70),
    ("size", "bytes", 60),
    ("value", "value", 320),
]

FULL_VALUE_CHARS = 100_000
"""A selected value longer than this (as text) is shown cut, with a note saying so."""

NOTHING_SELECTED = "Select a row to see its whole value."


class StoreBrowser(MonitorView):
    """The store keys under ``{prefix}/store/`` as text: previews in the table (cut to a line),
    the whole value of the selected row below it. The filter box keeps the rows whose key or
    value preview contains its text (case-insensitive)."""

    def __init__(self, **params) -> None:
        super().__init__(**params)
        self.filter = pn.widgets.TextInput(placeholder="Filter keys and values…", sizing_mode="stretch_width")
        self.source = ColumnDataSource({name: [] for name in ["row", *(field for field, _, _ in COLUMNS)]})
        self.table = text_table(self.source, COLUMNS, selectable=True, multi_selectable=False)
        self.full_value = PreText(text=NOTHING_SELECTED, height=90, sizing_mode="stretch_width",
                                  styles={"overflow": "auto", "font-size": "12px"})
        self._values: dict[str, bytes] = {}
        self._previews: dict[tuple[str, str, int], str] = {}
        self.source.selected.on_change("indices", self._on_select)
        self.filter.param.watch(lambda _event: self.update(force=True), "value_input")

    def _build(self) -> pn.viewable.Viewable:
        return section(
            "Store",
            self.filter,
            pn.pane.Bokeh(self.table, sizing_mode="stretch_width"),
            pn.pane.Bokeh(self.full_value, sizing_mode="stretch_width"),
        )

    def _refresh(self, now: datetime) -> None:
        needle = (self.filter.value_input or "").lower()
        rows, previews = [], {}
        for item in self.monitor.store_items():
            # Values are decoded to text once per revision, not on every refresh.
            identity = (item.api, item.key, item.revision)
            preview = previews[identity] = self._previews.get(identity) or clip(value_text(item.value))
            if needle in item.key.lower() or needle in preview.lower():
                rows.append((item, preview))
        self._previews = previews
        self._values = {f"{item.api} {item.key}": item.value for item, _ in rows}
        selected = self._selected_row()
        sync_source(self.source, {
            "row": [f"{item.api} {item.key}" for item, _ in rows],
            "key": [item.key for item, _ in rows],
            "api": [item.api for item, _ in rows],
            "revision": [item.revision for item, _ in rows],
            "size": [len(item.value) for item, _ in rows],
            "value": [preview for _, preview in rows],
        }, key="row")
        fit_height(self.table, 4, 10)
        rows_now = self.source.data["row"]
        indices = [rows_now.index(selected)] if selected in rows_now else []
        if self.source.selected.indices != indices:
            self.source.selected.indices = indices
        if rows:
            self._show(selected if selected in rows_now else None)
        else:
            self._say("No store key matches the filter." if needle else "The store holds no keys yet.")

    def _selected_row(self) -> str | None:
        indices = self.source.selected.indices
        rows = self.source.data["row"]
        return rows[indices[0]] if indices and indices[0] < len(rows) else None

    def _on_select(self, _attr: str, _old: list[int], _new: list[int]) -> None:
        self._show(self._selected_row())

    def _show(self, row: str | None) -> None:
        if not self._values:
            return
        if row is None or row not in self._values:
            text = NOTHING_SELECTED
        else:
            text = value_text(self._values[row])
            if len(text) > FULL_VALUE_CHARS:
                text = text[:FULL_VALUE_CHARS] + f"\n… ({len(text) - FULL_VALUE_CHARS} more characters not shown)"
        self._say(text)

    def _say(self, text: str) -> None:
        if self.full_value.text != text:
            self.full_value.text = text

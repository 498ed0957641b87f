"""Read-only Bokeh DataTables whose every cell is plain text (or, for a column given its own
formatter, markup made of numbers only).

Bokeh's ``StringFormatter`` puts the value into the cell as a text node, so a node
address like ``<img src=x onerror=...>`` shows as those characters and never as markup.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from bokeh.models import CellFormatter, ColumnDataSource, CustomJS, DataTable, StringFormatter, TableColumn

HEADER_HEIGHT = 30
ROW_HEIGHT = 26

Column = tuple[str, str, int]
"""``(field, title, width in pixels)`` of one table column."""


def text_table(
    source: ColumnDataSource, columns: Sequence[Column], *, color_field: str | None = None,
    formatters: Mapping[str, CellFormatter] | None = None, **options
) -> DataTable:
    """A non-editable DataTable over ``source`` showing ``columns`` as plain text.

    ``color_field`` names a source column holding each row's text color; ``formatters`` gives
    the columns (by field) that show something other than their value's text (their formatter
    must never put text from the state into markup).
    """
    formatter = StringFormatter(text_color=color_field) if color_field else StringFormatter()
    formatters = formatters or {}
    table = DataTable(
        source=source,
        columns=[TableColumn(field=field, title=title, width=width, formatter=formatters.get(field, formatter))
                 for field, title, width in columns],
        editable=False,
        index_position=None,
        reorderable=False,
        sizing_mode="stretch_width",
        row_height=ROW_HEIGHT,
        **{"height": HEADER_HEIGHT + 2 * ROW_HEIGHT + 2, **options},
    )
    # BokehJS 3.9 redraws a DataTable when its number of rows changes, but not when cells are
    # patched or the data is replaced by as many rows; nudging the table's view redraws it
    # (in the browser only, nothing more is sent).
    redraw = CustomJS(args={"view": table.view}, code="view.change.emit()")
    source.js_on_change("patching", redraw)
    source.js_on_change("data", redraw)
    return table


def fit_height(table: DataTable, min_rows: int, max_rows: int) -> None:
    """Size ``table`` to its rows, between ``min_rows`` and ``max_rows`` (then it scrolls)."""
    rows = min(max(len(table.source.data[table.columns[0].field]), min_rows), max_rows)
    height = HEADER_HEIGHT + rows * table.row_height + 2
    if table.height != height:
        table.height = height


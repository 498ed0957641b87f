"""Read-only Bokeh DataTables whose every cell is plain text (or, for a column given its own
formatter, markup that the page builds from numbers, or from text it escapes itself).

Bokeh's ``StringFormatter`` puts the value into the cell as a text node, so a node
address like ``<img src=x onerror=...>`` shows as those characters and never as markup.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from bokeh.models import CellFormatter, ColumnDataSource, CustomJS, DataTable, StringFormatter, TableColumn

HEADER_HEIGHT = 30
ROW_HEIGHT = 26

REDRAW_TABLE_JS = """(table, view) => {
  // SlickGrid reads each cell from the source as it draws it, so the rows on screen need only
  // be drawn again. BokehJS's whole update (view.change) also re-fits every column to the page,
  // which makes the browser recompute its styles: most of what a change of a big table costs
  // the page. Only a sorted grid, or one whose rows BokehJS has yet to count again, needs it.
  const grids = Array.from(window.Bokeh ? Bokeh.index.find(table) : []);
  if (grids.length === 0 || grids.some((grid) => grid.grid == null || grid.data == null
      || grid.grid.getSortColumns().length > 0 || grid.data.getLength() !== view.indices.count)) {
    view.change.emit();
  } else {
    for (const grid of grids) grid.grid.invalidate();
  }
}"""
"""A JavaScript function that draws a DataTable's rows again (``table``, its CDSView ``view``)
after its source changed without BokehJS redrawing it."""

KEEP_FOCUS_JS = f"""
// Until the change being applied is done (a microtask later), focus() does nothing.
if (!window.rdzv_focus_held) {{
  const focus = HTMLElement.prototype.focus;
  window.rdzv_focus_held = true;
  HTMLElement.prototype.focus = function () {{}};
  queueMicrotask(() => {{ HTMLElement.prototype.focus = focus; window.rdzv_focus_held = false; }});
}}
if (redraw) ({REDRAW_TABLE_JS})(table, view);
"""
"""A table's change callback (``redraw``: also redraw it): no element takes the keyboard while
the change is applied (BokehJS re-applies a table's selection on each redraw, and SlickGrid
then focuses the grid, taking the keys from whoever was typing: an input, a notebook cell,
which JupyterLab would then leave for the dashboard's cell)."""

Column = tuple[str, str, int]
"""``(field, title, width in pixels)`` of one table column."""


def text_table(
    source: ColumnDataSource, columns: Sequence[Column], *, color_field: str | None = None,
    font_style_field: str | None = None, formatters: Mapping[str, CellFormatter] | None = None, **options
) -> DataTable:
    """A non-editable DataTable over ``source`` showing ``columns`` as plain text.

    ``color_field`` names a source column holding each row's text color, ``font_style_field``
    one holding its font style (``"bold"``, ``"normal"``...); ``formatters`` gives
    the columns (by field) that show something other than their value's text (their formatter
    must never put text from the state into markup).
    """
    formatter = StringFormatter(**{name: field for name, field in (("text_color", color_field),
                                                                   ("font_style", font_style_field)) if field})
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
    # patched or the data is replaced by as many rows; the page then draws the rows on screen
    # again (REDRAW_TABLE_JS; nothing more is sent); no redraw takes the keyboard (KEEP_FOCUS_JS).
    redraw = CustomJS(args={"table": table, "view": table.view, "redraw": True}, code=KEEP_FOCUS_JS)
    source.js_on_change("patching", redraw)
    source.js_on_change("data", redraw)
    source.js_on_change("streaming", CustomJS(args={"table": table, "view": table.view, "redraw": False},
                                              code=KEEP_FOCUS_JS))
    return table


SHOW_MARKED_ROW_JS = """
// Once the change being applied has reached the grid, each grid showing the table scrolls the
// marked row into view if it is another row than the one it last showed (BokehJS makes a new
// grid, scrolled to the top, when the number of rows changes).
setTimeout(() => {
  const data = source.data, at = Array.from(data[field] || []).indexOf(mark);
  const key = at < 0 ? null : data[key_field][at];
  for (const view of window.Bokeh ? Bokeh.index.find(table) : []) {
    const grid = view.grid;
    if (grid == null || view.data == null || grid.rdzv_marked_shown === key) continue;
    const row = at < 0 ? -1 : view.data.index.indexOf(at);
    if (row >= 0) grid.scrollRowIntoView(row, false);
    grid.rdzv_marked_shown = key;
  }
});
"""


def show_marked_row(table: DataTable, key_field: str, field: str, mark: object) -> None:
    """Scroll ``table`` so that the row whose ``field`` is ``mark`` (the selected run's, say) is
    in view, on each page, once: when the page first hears of the table (a change of its
    ``tags``, which is how :class:`.browser_clock.PageClock` tells a page its clock, first when it
    loads), and whenever the marked row becomes another one (told apart by ``key_field``) or
    the page redraws the table anew (BokehJS does when the number of rows changes, and starts
    it at the top). A user who scrolls away keeps the place while rows change otherwise.

    BokehJS scrolls to a table's own selection, but a table holding a selection takes the
    keyboard on every redraw (see :data:`KEEP_FOCUS_JS`); a marked row stands in for it.
    """
    show = CustomJS(args={"table": table, "source": table.source, "key_field": key_field, "field": field,
                          "mark": mark}, code=SHOW_MARKED_ROW_JS)
    table.source.js_on_change("patching", show)
    table.source.js_on_change("data", show)
    table.js_on_change("tags", show)


def fit_height(table: DataTable, min_rows: int, max_rows: int) -> None:
    """Size ``table`` to its rows, between ``min_rows`` and ``max_rows`` (then it scrolls)."""
    rows = min(max(len(table.source.data[table.columns[0].field]), min_rows), max_rows)
    height = HEADER_HEIGHT + rows * table.row_height + 2
    if table.height != height:
        table.height = height


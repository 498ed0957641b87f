"""Ages the page keeps current by itself: a table column showing how long ago a moment was,
redrawn by the browser once a second, so that a quiet run costs the server nothing per second
and per open page.

The server sends each moment once (milliseconds since the epoch) and, now and then, its own
clock (:class:`PageClock`). The page counts from its own clock corrected by the server's, so a
viewer whose clock is off still reads the server's ages: the correction is the largest of the
last ten ``server clock - page clock`` readings (of the last ten minutes), since a reading that
waited in a queue can only make the server look behind. A row whose ``as_of_ms`` is a number
is aged at that moment instead (time travel: a revision's ages do not move).

The text is :func:`rdzv.text.age`'s, written again in JavaScript (:data:`AGE_JS`);
``tests/test_browser_clock.py`` holds the two to the same output.

Sentences with :mod:`rdzv.time_marks` in them (the diagnosis, the round's deadline) are kept
current the same way: :func:`live_markup` turns each mark into a span the page rewrites once a
second (:data:`MARK_WORDS_JS`, the marks' words in JavaScript), and :func:`marked_text_formatter`
shows a marked text in a table cell. The server then sends such a sentence only when it really
changes, not each second.
"""

from __future__ import annotations

import html
import math
from datetime import datetime

from bokeh.models import CustomJS, DataTable, HTMLTemplateFormatter

from .. import time_marks
from ..text import NO_VALUE, utc_now
from .tables import REDRAW_TABLE_JS

AS_OF_FIELD = "as_of_ms"
"""The source column holding the moment a row is aged at (NaN: the clock, live)."""

FIRST_TELLINGS = 5
"""Ticks at the start of a page that each send it the server's clock."""

TELL_EVERY_SECONDS = 60.0
"""How often a session sends the server's clock to its page after the first tellings."""

AGE_JS = f"""function (ms) {{
  if (typeof ms !== "number" || ms !== ms) return "{NO_VALUE}";
  var s = Math.floor(Math.max(0, ms / 1000));
  var two = function (n) {{ return (n < 10 ? "0" : "") + n; }};
  if (s < 60) return s + " s";
  if (s < 3600) return Math.floor(s / 60) + " min " + two(s % 60) + " s";
  if (s < 86400) return Math.floor(s / 3600) + " h " + two(Math.floor(s % 3600 / 60)) + " min";
  return Math.floor(s / 86400) + " d " + two(Math.floor(s % 86400 / 3600)) + " h";
}}"""
"""``rdzv.text.age`` of a duration in milliseconds (NaN: no moment, :data:`rdzv.text.NO_VALUE`)."""

MARK_WORDS_JS = f"""function (kind, micros, nowMs) {{
  var age = {AGE_JS};
  var atMs = micros / 1000;
  if (kind === "{time_marks.SINCE}") return age(nowMs - atMs);
  if (kind === "{time_marks.AHEAD}") return age(atMs - nowMs);
  if (kind === "{time_marks.COUNTDOWN}") return atMs - nowMs >= 1000 ? "in " + age(atMs - nowMs) : "passed";
  if (kind === "{time_marks.CLOCK_AFTER}") return new Date(nowMs + atMs).toISOString().slice(11, 19) + " UTC";
  return "";
}}"""
"""``rdzv.time_marks.words``: what a mark of ``kind`` and ``micros`` reads at ``nowMs``."""

_MARK_PATTERN_JS = (f"/\\u{ord(time_marks.START):04x}([{''.join(time_marks.KINDS)}])(-?[0-9]{{1,20}})"
                    f"\\u{ord(time_marks.END):04x}/g")

EXPAND_MARKS_HTML_JS = f"""function (text, nowMs) {{
  var words = {MARK_WORDS_JS};
  var escape = function (part) {{
    return part.replace(/[&<>"']/g, function (c) {{
      return {{"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#x27;"}}[c];
    }});
  }};
  text = String(text === null || text === undefined ? "" : text);
  var html = "", at = 0, mark, pattern = {_MARK_PATTERN_JS};
  while ((mark = pattern.exec(text)) !== null) {{
    html += escape(text.slice(at, mark.index)) + escape(words(mark[1], Number(mark[2]), nowMs));
    at = mark.index + mark[0].length;
  }}
  return html + escape(text.slice(at));
}}"""
"""``text`` with its time marks read at ``nowMs``, as escaped markup."""

_PAGE_CLOCK_JS = "(Date.now() + (window.rdzvServerClockOffsetMs || 0))"

_MARK_TICKER_JS = f"""
if (!window.rdzvMarkTimer) {{
  const words = {MARK_WORDS_JS};
  const visit = (root, now) => {{
    for (const span of root.querySelectorAll("span[data-rdzv-mark]")) {{
      const text = words(span.dataset.rdzvMark, Number(span.dataset.rdzvMicros), now);
      if (span.textContent !== text) span.textContent = text;
    }}
    for (const element of root.querySelectorAll("*")) {{
      if (element.shadowRoot) visit(element.shadowRoot, now);
    }}
  }};
  window.rdzvMarkTimer = setInterval(() => visit(document, {_PAGE_CLOCK_JS}), 1000);
}}
"""

_FOLLOW_JS = _MARK_TICKER_JS + f"""
if (cb_obj === table) {{
  const now = Date.now();
  const readings = (window.rdzvServerClockReadings || []).filter(([at]) => now - at < 600000).slice(-9);
  readings.push([now, table.tags[0] - now]);
  window.rdzvServerClockReadings = readings;
  window.rdzvServerClockOffsetMs = Math.max(...readings.map(([, offset]) => offset));
}}
const timers = window.rdzvClockTimers || (window.rdzvClockTimers = {{}});
if (!(table.id in timers)) {{
  const redraw = {REDRAW_TABLE_JS};
  timers[table.id] = setInterval(() => redraw(table, view), 1000);
}}
"""


def age_formatter(moment_field: str, color_field: str, as_of_field: str | None = AS_OF_FIELD
                  ) -> HTMLTemplateFormatter:
    """A cell showing how long before the page's corrected clock (or the row's ``as_of_field``,
    when that is a number) the row's ``moment_field`` (ms since the epoch; NaN: none) was, in the
    row's ``color_field``. ``as_of_field=None``: always the clock.

    Only numbers and the server's own colors reach the markup, never text from the state.
    """
    clock = _PAGE_CLOCK_JS
    now = clock if as_of_field is None else f"(({as_of_field} === {as_of_field}) ? {as_of_field} : {clock})"
    template = (f"<span style=\"color: <%= {color_field} %>\">"
                f"<%= ({AGE_JS})({now} - {moment_field}) %></span>")
    return HTMLTemplateFormatter(template=template)


def marked_text_formatter(text_field: str, color_field: str | None = None) -> HTMLTemplateFormatter:
    """A cell showing the row's ``text_field``, whose time marks (:mod:`rdzv.time_marks`) read
    at the page's corrected clock, in the row's ``color_field`` (None: the table's color), the
    whole text also its tooltip (a long sentence is cut at the column's edge). The text is
    escaped in the page (:data:`EXPAND_MARKS_HTML_JS`, quotes too): a node name in it shows as
    its characters, never as markup."""
    style = f"' style=\"color: ' + {color_field} + '\"'" if color_field else "''"
    template = (f"<%= (function (text) {{ return '<span' + {style} + ' title=\"' + text + "
                f"'\">' + text + '</span>'; }})(({EXPAND_MARKS_HTML_JS})({text_field}, {_PAGE_CLOCK_JS})) %>")
    return HTMLTemplateFormatter(template=template)


def live_markup(markup: str, now: datetime) -> str:
    """``markup`` with each time mark made a span that reads as of ``now`` and that the page
    keeps current from then on (once a second, by its corrected clock)."""
    if not time_marks.has_marks(markup):
        return markup
    return "".join(
        before if kind is None else
        f"{before}<span data-rdzv-mark='{kind}' data-rdzv-micros='{micros}'>"
        f"{html.escape(time_marks.words(kind, micros, now))}</span>"
        for before, kind, micros in time_marks.pieces(markup))


def follow_clock(table: DataTable) -> None:
    """Have the page redraw ``table`` once a second, from the first telling of the clock
    (:class:`PageClock`) or change of its data on, so its :func:`age_formatter` cells follow it;
    the same start also sets the page rewriting the spans of :func:`live_markup` once a second."""
    follow = CustomJS(args={"table": table, "view": table.view}, code=_FOLLOW_JS)
    table.js_on_change("tags", follow)
    for event in ("data", "patching", "streaming"):
        table.source.js_on_change(event, follow)


class PageClock:
    """The server's side of one table's page clock: :func:`follow_clock` on the table, and the
    server's clock told to the page once a tick for the first :data:`FIRST_TELLINGS` ticks on a
    page (a telling made while the page was still loading arrives late, and reads as a server
    behind; the page keeps the best of them), then every :data:`TELL_EVERY_SECONDS`. Call
    :meth:`tick` from the view's clock tick."""

    def __init__(self, table: DataTable) -> None:
        self.table = table
        self._told = 0
        self._told_at: datetime | None = None
        follow_clock(table)

    def restart(self) -> None:
        """Tell the clock on the next :data:`FIRST_TELLINGS` ticks again: call it once the page
        has loaded, since tellings made while it loaded reach it as its initial state, which
        neither starts its clock nor gives it a reading."""
        self._told = 0

    def tick(self, now: datetime) -> None:
        if self.table.document is None:
            return  # only a change reaches the page, so telling waits until it is on one
        if (self._told < FIRST_TELLINGS or self._told_at is None
                or (now - self._told_at).total_seconds() >= TELL_EVERY_SECONDS):
            self._told += 1
            self._told_at = now
            self.table.tags = [utc_now().timestamp() * 1000]  # the exact time, not the tick's second


def epoch_ms(moment: datetime | None) -> float:
    """``moment`` in milliseconds since the epoch; NaN for none (the cell shows no age)."""
    return math.nan if moment is None else moment.timestamp() * 1000

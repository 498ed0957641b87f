"""What every dashboard view shares: it reads one Monitor, updates only when the monitor's
version moved, and never lets a failing update take the page down."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime

import panel as pn
import param
from panel.viewable import Viewer

from .. import time_marks
from .browser_clock import live_markup
from .markup_pane import MarkupPane
from .style import PANEL_STYLES, STYLESHEET, title
from ..text import utc_now

logger = logging.getLogger("rdzv.ui")


class MonitorView(Viewer):
    """A view of an ``rdzv.monitor.Monitor`` (Panel's Viewer pattern).

    The view's Bokeh/Panel models are built in ``__init__`` so that :meth:`update` works
    without a browser; :meth:`__panel__` wraps them in a layout once.

    * :meth:`update` reads the monitor only when ``monitor.version`` differs from the last
      version this view showed (or when forced), and sends the browser only what changed.
    * :meth:`tick` refreshes what changes with the clock alone (ages, countdowns).

    Either one logs its failure and keeps the previous data on screen; neither raises.
    """

    monitor = param.Parameter(doc="The rdzv.monitor.Monitor this view reads.")

    def __init__(self, **params) -> None:
        super().__init__(**params)
        self._shown_version: int | None = None
        self._layout: pn.viewable.Viewable | None = None

    def __panel__(self) -> pn.viewable.Viewable:
        if self._layout is None:
            self._layout = self._build()
        return self._layout

    def update(self, force: bool = False, now: datetime | None = None) -> bool:
        """Bring the view to the monitor's current version, as of ``now`` (default: the current
        time); True if it read the monitor."""
        version = self.monitor.version
        if version == self._shown_version and not force:
            return False
        self._shown_version = version
        return self._guarded("update", self._refresh, now or utc_now())

    def tick(self, now: datetime | None = None) -> None:
        """Refresh the clock-dependent cells (ages, countdowns) as of ``now``."""
        self._guarded("tick", self._tick, now or utc_now())

    def _guarded(self, what: str, step: Callable[[datetime], None], now: datetime) -> bool:
        try:
            step(now)
        except Exception:
            logger.exception("The %s view failed to %s; it keeps showing its previous data.", type(self).__name__, what)
            return False
        return True

    def _build(self) -> pn.viewable.Viewable:
        raise NotImplementedError

    def _refresh(self, now: datetime) -> None:
        raise NotImplementedError

    def _tick(self, now: datetime) -> None:
        """Clock-only changes; most views have none."""

    def frozen_at(self, now: datetime) -> datetime | None:
        """The moment the view's clock stands still at (time travel), or ``None``: live."""
        return None

    def page_loaded(self) -> None:
        """The page showing this view has loaded (a served session's document is ready)."""


class MarkupView(MonitorView):
    """A view whose whole content is ``pane``'s markup, made by ``render(now)``, which must
    escape whatever it shows and writes what time alone changes as :mod:`rdzv.time_marks`.

    :meth:`_tick` re-renders and sends the markup only when it changed: live, each mark becomes
    a span the page keeps current itself (:func:`.browser_clock.live_markup`), so a sentence
    such as "no keep-alive for 2 min 05 s" is not sent again each second; travelling in time
    (:meth:`frozen_at`), the marks read at the revision's moment and stay still."""

    pane: MarkupPane

    def __init__(self, **params) -> None:
        super().__init__(**params)
        self._shown_markup: tuple[str, datetime | None] | None = None

    def render(self, now: datetime) -> str:
        raise NotImplementedError

    def _tick(self, now: datetime) -> None:
        markup = self.render(now)
        frozen_at = self.frozen_at(now)
        if self._shown_markup == (markup, frozen_at):
            return
        self._shown_markup = (markup, frozen_at)
        self.pane.object = live_markup(markup, now) if frozen_at is None else time_marks.expand(markup, frozen_at)


class RunScopedView(MonitorView):
    """A view of one run of the monitor, chosen by ``run_id`` (None: no run selected), live or,
    with ``as_of`` (time travel), as it was at that revision."""

    run_id = param.String(default=None, allow_None=True, doc="The run shown; None shows nothing.")
    as_of = param.Integer(default=None, allow_None=True, doc=(
        "Show the run as it was at this revision (its history entry then); None: live."))

    @param.depends("run_id", "as_of", watch=True)
    def _run_changed(self) -> None:
        self.update(force=True)

    def reading(self):
        """What the view shows of the run: its live view, or the history entry in force at
        ``as_of``; ``None`` when there is none. Both carry ``run_id``, ``snapshot``, ``error``
        and ``deleted``."""
        if not self.run_id:
            return None
        if self.as_of is None:
            return self.monitor.run(self.run_id)
        return self.monitor.revision_at(self.run_id, self.as_of)

    def frozen_at(self, now: datetime) -> datetime | None:
        return None if self.as_of is None or not self.run_id else self.moment(now)

    def moment(self, now: datetime) -> datetime:
        """The time the view's ages and countdowns are told at: ``now`` live, or when the
        revision shown was written."""
        if self.as_of is None or not self.run_id:
            return now
        entry = self.monitor.revision_at(self.run_id, self.as_of)
        return now if entry is None else entry.seen_at


def section(heading: str, *items: object, **options) -> pn.Column:
    """A bordered, titled box holding ``items``: the frame of every dashboard section."""
    return pn.Column(
        pn.pane.HTML(title(heading), stylesheets=[STYLESHEET], margin=(0, 5)),
        *items,
        styles=PANEL_STYLES,
        sizing_mode=options.pop("sizing_mode", "stretch_width"),
        margin=options.pop("margin", (5, 5)),
        **options,
    )

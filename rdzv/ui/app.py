"""Dashboard: every view of one Monitor on one page, told of each change by the monitor (pushed to
the session's document), or polling it where there is no served session (notebooks)."""

from __future__ import annotations

import contextlib
import html
import logging
import threading
import time
from collections.abc import Callable
from datetime import datetime

import panel as pn
import param
from panel.viewable import Viewer

from ..monitor import FrameReader, MonitorFrame
from ..rendezvous_settings import RendezvousSettings
from ..text import utc_now
from .close_run import CloseRunAction
from .connection_banner import ConnectionBanner
from .export import HistoryExport
from .fleet import FleetView
from .participants import ParticipantsView
from .round_card import RoundCard
from .serving_metrics import SERVING
from .store_browser import StoreBrowser
from .style import STYLESHEET
from .time_travel import TimeTravelBar
from .timeline import TimelineView
from .whats_happening import WhatsHappening

logger = logging.getLogger(__name__)

TICK_SECONDS = 1.0
"""How often what follows the clock on the server (countdowns, findings) is refreshed."""
FRAME_SHARED_SECONDS = 0.1
"""A page told of a change is refreshed at the monitor's frame taken last if that holds the change
and is at most this old (pages refreshed in turn then share it and what is worked out from it),
else at a new one: what sharing may cost a page in freshness."""
LOST_PUSH_SECONDS = 5.0
"""A change's refresh scheduled this long ago and still not run is taken as lost: the session's
next tick shows the change, and later changes are pushed again (a guard: see :meth:`Dashboard._changed`)."""
LOST_PUSH_WARNING = ("A change's refresh of a dashboard page did not run within %g s; the page's clock tick "
                     "showed the change instead.")
"""What the server logs each time that happens (benchmarks count it)."""


def shared_now() -> datetime:
    """The time every session shows its views at: the current second (what the page shows
    changes at most once a second), so that sessions refreshing in the same second ask the
    monitor the same questions and share its answers and the rows made of them."""
    return utc_now().replace(microsecond=0)


class Dashboard(Viewer):
    """The fleet of runs, the selected run's round, nodes, revisions and event log, the store,
    the connection banner, history downloads and (only with ``allow_writes``) closing a run.

    Each change of the monitor refreshes the views of a served page (see :meth:`start`); a
    notebook's page compares ``monitor.version`` with the version it last showed every
    ``poll_ms`` milliseconds. Views update only when the version moved; once a second the ages
    and countdowns are refreshed. Selecting a row in the runs table selects the run.
    """

    monitor = param.Parameter(doc="The rdzv.monitor.Monitor shown (shared with other sessions).")
    run_id = param.String(default=None, allow_None=True, doc="The selected run; None picks the first run found.")
    allow_writes = param.Boolean(default=False, constant=True, doc="Offer the close-run action (with confirmation).")
    poll_ms = param.Integer(default=300, bounds=(50, 10_000), doc="Milliseconds between version checks.")
    settings = param.ClassSelector(class_=RendezvousSettings, default=RendezvousSettings(), doc=(
        "The rendezvous settings of the runs shown (torchrun's --nnodes and --rdzv-conf)."))
    as_of = param.Integer(default=None, allow_None=True, doc=(
        "Time travel: the revision the run views show (None: live); see TimeTravelBar."))
    subtitle = param.String(default="", doc="A line under the title, e.g. saying this is the demo.")

    def __init__(self, **params) -> None:
        super().__init__(**params)
        #: What every view reads: the monitor's frame this page last showed (see :meth:`refresh`).
        self.reader = FrameReader(self.monitor)
        run = dict(monitor=self.reader, run_id=self.run_id)
        self.banner = ConnectionBanner(monitor=self.reader)
        self.fleet = FleetView(monitor=self.reader, selected=self.run_id, settings=self.settings)
        self.whats_happening = WhatsHappening(settings=self.settings, **run)
        self.round_card = RoundCard(settings=self.settings, **run)
        self.participants = ParticipantsView(settings=self.settings, **run)
        self.timeline = TimelineView(**run)
        self.time_travel = TimeTravelBar(**run)
        self.export = HistoryExport(**run)
        self.store = StoreBrowser(monitor=self.reader)
        self.close_action = CloseRunAction(**run) if self.allow_writes else None
        self.views = [self.banner, self.fleet, self.time_travel, self.whats_happening, self.round_card,
                      self.participants, self.timeline, self.store]
        self.fleet.param.watch(lambda event: setattr(self, "run_id", event.new), "selected")
        self.time_travel.param.watch(lambda event: setattr(self, "as_of", event.new), "as_of")
        self.timeline.param.watch(lambda event: setattr(self, "as_of", event.new), "picked")
        self._shown_version: int | None = None
        self._last_tick = 0.0
        self._callback = None
        self._layout = None
        self._document = None  # the served session's Bokeh document, when changes are pushed
        self._io_loop = None  # the Tornado loop that runs the session's callbacks
        self._page_ready = False  # the session's page has said it rendered (Panel's onload ran)
        self._unsubscribe: Callable[[], None] | None = None
        self._push_lock = threading.Lock()
        self._push_pending_since: float | None = None  # when the refresh waiting to run was scheduled
        self._push_told_version = 0  # the first version that refresh must show
        self._served = False  # counted among the server's sessions (rdzv.ui.serving_metrics)
        #: Refreshes run because the monitor told this page of a change.
        self.pushes = 0
        #: Refreshes the clock ran because a change's scheduled refresh never ran.
        self.lost_pushes = 0

    @param.depends("run_id", watch=True)
    def _select_run(self) -> None:
        self.fleet.selected = self.run_id
        self.as_of = None
        for view in (self.whats_happening, self.round_card, self.participants, self.timeline, self.export,
                     self.close_action, self.time_travel):
            if view is not None:
                view.run_id = self.run_id

    @param.depends("as_of", watch=True)
    def _travel(self) -> None:
        for view in (self.time_travel, self.whats_happening, self.round_card, self.participants, self.timeline):
            view.as_of = self.as_of

    def refresh(self, frame: MonitorFrame | None = None) -> bool:
        """Show ``frame`` (default: the monitor's current one, :meth:`Monitor.frame`): update every
        view if its version differs from the one shown, and tick the clocks if a second passed.
        Returns whether the version had moved. Never raises (views log their failures).

        Every view reads the same frame, so the parts of the page agree with each other; pages
        refreshed at one frame share what is worked out from it (tables, findings, steps)."""
        self.reader.show(frame if frame is not None else self.monitor.frame())
        version = self.reader.version
        moved = version != self._shown_version
        if moved:
            self._shown_version = version
            now = shared_now()
            for view in self.views:
                view.update(now=now)
            if self.run_id is None:
                self._pick_run()
        if time.monotonic() - self._last_tick >= TICK_SECONDS:
            self._tick_clocks()
        if self._layout is not None:
            # In a notebook nothing sends the views' own Bokeh models (tables, plot) to the page
            # but this (a server session sends them itself; there it does nothing).
            pn.io.push_notebook(self._layout)
        return moved

    def _tick_clocks(self) -> None:
        """Move what changes with the clock alone (countdowns, findings that time brings; the
        tables' ages move in the page)."""
        self._last_tick = time.monotonic()
        now = shared_now()
        for view in self.views:
            view.tick(now)

    def _pick_run(self) -> None:
        runs = sorted(self.reader.runs().values(), key=lambda run: (run.deleted or run.snapshot is None, run.run_id))
        if runs:
            self.run_id = runs[0].run_id

    def start(self) -> None:
        """Follow the monitor in the current session (or notebook); idempotent.

        In a served session the monitor's changes are pushed: each one schedules a refresh on
        the session's own document (Bokeh runs it on the server's loop with the document
        locked), coalescing changes that arrive before it runs; a one-second callback moves the
        clocks. Elsewhere (a notebook) the page polls the monitor every ``poll_ms``. A session
        that closes stops both (Panel's ``on_session_destroyed``)."""
        if self._callback is not None:
            return
        self.refresh()
        document = pn.state.curdoc
        if document is not None and document.session_context is not None:
            self._document = document
            self._io_loop = document.session_context.server_context.application_context.io_loop
            self._unsubscribe = self.monitor.subscribe(self._changed)
            # Bokeh's own session callback: Panel's would also count every tick as "busy", a
            # change of the process-wide pn.state that costs each tick more than the tick itself.
            self._callback = _SessionCallback(document, self._each_second, TICK_SECONDS)
            pn.state.onload(self._page_loaded)
            pn.state.on_session_destroyed(lambda _context: self.stop())
            self._served = True
            SERVING.session_opened()
        else:
            self._callback = pn.state.add_periodic_callback(self.refresh, period=self.poll_ms)

    def _page_loaded(self) -> None:
        """Panel's onload: the session's page is ready (what was sent before it loaded arrived as
        its initial state)."""
        self._page_ready = True
        for view in self.views:
            view.page_loaded()

    def _changed(self, version: int, since: float | None = None) -> None:
        """From a watcher thread (or the loop, for changes the frame of a refresh lacked):
        schedule one refresh, to show at least ``version`` (told ``since``, default now), unless
        one is already waiting to run.

        The watcher thread only hands the scheduling to the server's loop (Tornado's
        ``add_callback``, safe from any thread) and never touches the document itself: Panel
        holds a session's document on the loop while it updates models, and a callback that
        another thread adds meanwhile lands in Bokeh's list of held events, which the loop
        swaps out without a lock, so it could be lost and never run."""
        loop = self._io_loop
        with self._push_lock:
            if loop is None or self._push_pending_since is not None:
                return
            self._push_pending_since = time.monotonic() if since is None else since
            self._push_told_version = version
        try:
            loop.add_callback(self._schedule_refresh)
        except Exception:  # the server's loop is closed: nothing to push to
            self._clear_pending()
            self.stop()

    def _schedule_refresh(self) -> None:
        """On the server's loop: ask Bokeh to run :meth:`_pushed` with the document locked."""
        document = self._document
        if document is not None:
            try:
                document.add_next_tick_callback(self._pushed)
                return
            except Exception:  # the session is gone: nothing to push to
                self.stop()
        self._clear_pending()

    def _clear_pending(self) -> None:
        """No refresh is waiting to run: the next change schedules one."""
        with self._push_lock:
            self._push_pending_since = None

    def _pushed(self) -> None:
        """Show the monitor's frame taken last, if it holds the change this page was told of and
        is at most :data:`FRAME_SHARED_SECONDS` old (the pages refreshed in turn since then share
        it), else a new one. Changes the frame lacks schedule the next refresh."""
        with self._push_lock:  # changes arriving from now on schedule another refresh
            told, self._push_pending_since = self._push_pending_since, None
            wanted = self._push_told_version
        self.pushes += 1
        began = time.monotonic()
        frame = self.monitor.frame(at_least=wanted, taken_since=began - FRAME_SHARED_SECONDS)
        with self._one_message():
            self.refresh(frame)
        if told is not None:
            SERVING.pushed(began - told, time.monotonic() - began)
        if self.monitor.version > frame.version:
            self._changed(frame.version + 1, since=frame.taken_at)

    def _one_message(self):
        """On the server's loop, with the session's document locked: what the views change
        inside reaches the page as one message (Panel's hold) instead of one per changed
        property, each of which costs Bokeh a pass over every model of the document. Safe
        because no other thread touches the document (see :meth:`_changed`).

        Only once the page has said it rendered: until then Panel counts the session as not
        connected and a hold *drops* the model changes made inside it (expecting the whole
        document to be sent on connection), but the page pulled its document before saying so:
        it would miss those changes, and its tables, which later changes only patch, would stay
        wrong. Until then each change goes out as Bokeh sends it, one message per property."""
        return pn.io.hold(self._document) if self._page_ready else contextlib.nullcontext()

    def _each_second(self) -> None:
        """The served session's clock. Also a guard: if the monitor moved and the refresh
        scheduled for it has not run within :data:`LOST_PUSH_SECONDS` (or none was scheduled),
        the change is shown now and pushes resume, so a push lost for any reason leaves a page
        at most that long behind instead of behind for good."""
        with self._push_lock:
            since = self._push_pending_since
            lost = since is not None and time.monotonic() - since > LOST_PUSH_SECONDS
            if lost:
                self._push_pending_since = None
        if lost:
            self.lost_pushes += 1
            SERVING.push_lost()
            logger.warning(LOST_PUSH_WARNING, LOST_PUSH_SECONDS)
        with self._one_message():
            if self.monitor.version != self._shown_version and (lost or since is None):
                self.refresh()
            else:
                self._tick_clocks()

    def stop(self) -> None:
        """Stop following the monitor; the views keep what they show."""
        callback, self._callback = self._callback, None
        if callback is not None:
            callback.stop()
        if self._served:
            self._served = False
            SERVING.session_closed()
        unsubscribe, self._unsubscribe, self._document, self._io_loop = self._unsubscribe, None, None, None
        if unsubscribe is not None:
            unsubscribe()

    def __panel__(self) -> pn.viewable.Viewable:
        if self._layout is None:
            self._layout = self._build()
            self.start()
        return self._layout

    def _build(self) -> pn.viewable.Viewable:
        where = f"etcd {self.monitor.endpoint} · prefix {self.monitor.prefix}"
        header = pn.pane.HTML(
            f"<div class='rdzv-header'><span class='rdzv-brand'>rdzv</span>"
            f"<span class='rdzv-muted'>{html.escape(where)}</span>"
            f"<span class='rdzv-muted'>{html.escape(self.subtitle)}</span></div>",
            stylesheets=[STYLESHEET], sizing_mode="stretch_width", margin=(5, 5, 0, 5),
        )
        actions = [self.export] + ([self.close_action] if self.close_action is not None else [])
        run_column = pn.Column(self.whats_happening, self.round_card, self.participants, *actions,
                               sizing_mode="stretch_width")
        return pn.Column(
            header,
            self.banner,
            self.fleet,
            self.time_travel,
            pn.Row(run_column, self.timeline, sizing_mode="stretch_width"),
            self.store,
            sizing_mode="stretch_width",
            styles={"background": "#f6f8fa"},
        )


class _SessionCallback:
    """``callback`` every ``seconds`` on a served session's ``document`` (run by Bokeh with the
    document locked); :meth:`stop` ends it, also after Bokeh has discarded the session."""

    def __init__(self, document, callback: Callable[[], None], seconds: float) -> None:
        self._document = document
        #: Milliseconds between calls.
        self.period = int(seconds * 1000)
        self._handle = document.add_periodic_callback(callback, self.period)

    def stop(self) -> None:
        document, self._document = self._document, None
        if document is not None:
            try:
                document.remove_periodic_callback(self._handle)
            except (ValueError, AttributeError):  # the session is gone, and Bokeh dropped its callbacks
                pass

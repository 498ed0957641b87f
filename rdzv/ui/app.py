"""Dashboard: every view of one Monitor on one page, refreshed by a per-session periodic callback."""

from __future__ import annotations

import html
import time

import panel as pn
import param
from panel.viewable import Viewer

from .close_run import CloseRunAction
from .connection_banner import ConnectionBanner
from .export import HistoryExport
from .fleet import FleetView
from .participants import ParticipantsView
from .round_card import RoundCard
from .store_browser import StoreBrowser
from .style import STYLESHEET
from ..text import utc_now
from .timeline import TimelineView

TICK_SECONDS = 1.0
"""How often the clock-only cells (ages, countdowns) are refreshed."""


class Dashboard(Viewer):
    """The fleet of runs, the selected run's round, nodes, revisions and event log, the store,
    the connection banner, history downloads and (only with ``allow_writes``) closing a run.

    Every ``poll_ms`` milliseconds the page's callback compares ``monitor.version`` with the
    version it last showed and updates the views only when it moved; once a second it
    refreshes the ages and countdowns. Selecting a row in the runs table selects the run.
    """

    monitor = param.Parameter(doc="The rdzv.monitor.Monitor shown (shared with other sessions).")
    run_id = param.String(default=None, allow_None=True, doc="The selected run; None picks the first run found.")
    allow_writes = param.Boolean(default=False, constant=True, doc="Offer the close-run action (with confirmation).")
    poll_ms = param.Integer(default=300, bounds=(50, 10_000), doc="Milliseconds between version checks.")
    heartbeat_expiry = param.Number(default=15.0, bounds=(0, None), doc="Seconds of silence before a node is stale.")
    connect_options = param.Dict(default={}, doc="TLS options for the close-run action's own etcd client.")
    subtitle = param.String(default="", doc="A line under the title, e.g. saying this is the demo.")

    def __init__(self, **params) -> None:
        super().__init__(**params)
        run = dict(monitor=self.monitor, run_id=self.run_id)
        self.banner = ConnectionBanner(monitor=self.monitor)
        self.fleet = FleetView(monitor=self.monitor, selected=self.run_id)
        self.round_card = RoundCard(heartbeat_expiry=self.heartbeat_expiry, **run)
        self.participants = ParticipantsView(heartbeat_expiry=self.heartbeat_expiry, **run)
        self.timeline = TimelineView(**run)
        self.export = HistoryExport(**run)
        self.store = StoreBrowser(monitor=self.monitor)
        self.close_action = CloseRunAction(connect_options=self.connect_options, **run) if self.allow_writes else None
        self.views = [self.banner, self.fleet, self.round_card, self.participants, self.timeline, self.store]
        self.fleet.param.watch(lambda event: setattr(self, "run_id", event.new), "selected")
        self._shown_version: int | None = None
        self._last_tick = 0.0
        self._callback = None
        self._layout = None

    @param.depends("run_id", watch=True)
    def _select_run(self) -> None:
        self.fleet.selected = self.run_id
        for view in (self.round_card, self.participants, self.timeline, self.export, self.close_action):
            if view is not None:
                view.run_id = self.run_id

    def refresh(self) -> bool:
        """One poll: update every view if the monitor's version moved, tick the clocks once a
        second. Returns whether the version had moved. Never raises (views log their failures)."""
        version = self.monitor.version
        moved = version != self._shown_version
        if moved:
            self._shown_version = version
            for view in self.views:
                view.update()
            if self.run_id is None:
                self._pick_run()
        if time.monotonic() - self._last_tick >= TICK_SECONDS:
            self._last_tick = time.monotonic()
            now = utc_now()
            for view in self.views:
                view.tick(now)
        return moved

    def _pick_run(self) -> None:
        runs = sorted(self.monitor.runs().values(), key=lambda run: (run.deleted or run.snapshot is None, run.run_id))
        if runs:
            self.run_id = runs[0].run_id

    def start(self) -> None:
        """Start polling in the current session (or notebook); idempotent."""
        if self._callback is None:
            self.refresh()
            self._callback = pn.state.add_periodic_callback(self.refresh, period=self.poll_ms)

    def stop(self) -> None:
        """Stop polling; the views keep what they show."""
        if self._callback is not None:
            self._callback.stop()
            self._callback = None

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
        run_column = pn.Column(self.round_card, self.participants, *actions, sizing_mode="stretch_width")
        return pn.Column(
            header,
            self.banner,
            self.fleet,
            pn.Row(run_column, self.timeline, sizing_mode="stretch_width"),
            self.store,
            sizing_mode="stretch_width",
            styles={"background": "#f6f8fa"},
        )

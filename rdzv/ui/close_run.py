"""CloseRunAction: the dashboard's one write, closing the selected run — offered only when the
app was started with ``--allow-writes``, and done only after a confirmation."""

from __future__ import annotations

import html
import logging
from datetime import datetime
from typing import Any

import panel as pn
import param

from .base import RunScopedView
from .style import STYLESHEET

logger = logging.getLogger("rdzv.ui")


def close_run(endpoint: str, api: str, prefix: str, run_id: str, **connect_options: Any) -> None:
    """Close ``run_id`` the way torch does (its handler's ``set_closed``): every node of the run
    stops at its next rendezvous and the run cannot be joined again.

    ``connect_options`` are :func:`rdzv.kv.connect`'s TLS and timeout options. Raises
    torch's ``RendezvousError`` subclasses when etcd does not answer or the state is corrupt.
    """
    from torch.distributed import HashStore
    from torch.distributed.elastic.rendezvous.dynamic_rendezvous import DynamicRendezvousHandler

    from ..backend import EtcdRendezvousBackend
    from ..kv import connect

    kv = connect(endpoint, api, **connect_options)
    try:
        backend = EtcdRendezvousBackend(kv, run_id, key_prefix=f"{prefix.rstrip('/')}/rendezvous")
        # The store is never used by the close operation; a local one keeps it off etcd.
        handler = DynamicRendezvousHandler.from_backend(
            run_id, HashStore(), backend, min_nodes=1, max_nodes=1, local_addr="rdzv-dashboard"
        )
        handler.set_closed()
    finally:
        kv.close()


class CloseRunAction(RunScopedView):
    """A "Close run…" button that asks for confirmation before calling :func:`close_run`."""

    connect_options = param.Dict(default={}, doc="TLS and timeout options for rdzv.kv.connect.")

    def __init__(self, **params) -> None:
        super().__init__(**params)
        self.ask = pn.widgets.Button(name="Close run…", button_type="danger", button_style="outline",
                                     width=130, margin=(5, 5), disabled=not self.run_id)
        self.confirm = pn.widgets.Button(name="Yes, close it", button_type="danger", width=130, margin=(5, 5))
        self.cancel = pn.widgets.Button(name="Cancel", width=90, margin=(5, 5))
        self.message = pn.pane.HTML("", stylesheets=[STYLESHEET], margin=(5, 5), sizing_mode="stretch_width")
        self.confirmation = pn.Row(self.confirm, self.cancel, visible=False, margin=0)
        self.ask.on_click(self._ask)
        self.confirm.on_click(self._confirm)
        self.cancel.on_click(self._cancel)

    def _build(self) -> pn.viewable.Viewable:
        return pn.Column(pn.Row(self.ask, self.confirmation, margin=0), self.message, margin=0,
                         sizing_mode="stretch_width")

    def _ask(self, _event: object) -> None:
        if not self.run_id:
            return
        self._say(f"Close run '{self.run_id}'? Every node leaves at its next rendezvous; a closed run "
                  "cannot be joined again.", "warn")
        self.confirmation.visible = True

    def _cancel(self, _event: object) -> None:
        self.confirmation.visible = False
        self._say("", "")

    def _confirm(self, _event: object) -> None:
        self.confirmation.visible = False
        run = self.monitor.run(self.run_id) if self.run_id else None
        if run is None:
            self._say(f"Run '{self.run_id}' is no longer in etcd; nothing to close.", "bad")
            return
        try:
            close_run(self.monitor.endpoint, run.api, self.monitor.prefix, run.run_id, **self.connect_options)
        except Exception as exc:
            logger.warning("Closing run %r failed: %s", run.run_id, exc)
            self._say(f"Run '{run.run_id}' could not be closed ({exc}); check that etcd is reachable and retry.", "bad")
            return
        logger.info("Closed run %r from the dashboard.", run.run_id)
        self._say(f"Run '{run.run_id}' is closed.", "good")

    def _say(self, text: str, tone: str) -> None:
        self.message.object = f"<span class='rdzv-{tone}'>{html.escape(text)}</span>" if text else ""

    @param.depends("run_id", watch=True)
    def _enable(self) -> None:
        self.ask.disabled = not self.run_id
        self._cancel(None)

    def _refresh(self, now: datetime) -> None:
        """Nothing to show from the monitor; the action reads it when confirmed."""

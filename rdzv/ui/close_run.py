"""CloseRunAction: the dashboard's one write, closing the selected run — offered only to those
who may write (``--allow-writes`` on loopback, or a name in ``--writers``; see
:mod:`rdzv.ui.auth`), and done only after a confirmation. The write itself, and its line in the
audit log, is :func:`rdzv.run_closing.close_run`; this view only asks and reports, the audit line
included."""

from __future__ import annotations

import html
import logging
from datetime import datetime

import panel as pn
import param

from ..audit import AuditLog
from ..run_closing import CloseRunAuditError, CloseRunError, close_run
from .base import RunScopedView
from .style import STYLESHEET

logger = logging.getLogger("rdzv.ui")


class CloseRunAction(RunScopedView):
    """A "Close run…" button that asks for confirmation before calling :func:`close_run`, which
    appends the write to ``audit`` (default: :func:`rdzv.audit.default_audit_path`)."""

    audit = param.ClassSelector(class_=AuditLog, default=None, allow_None=True, doc="Where writes are recorded.")
    user = param.String(default=None, allow_None=True, doc="The signed-in name of whoever uses this page.")
    client = param.String(default=None, allow_None=True, doc="The address this page was requested from.")

    def __init__(self, **params) -> None:
        super().__init__(**params)
        self.ask = pn.widgets.Button(label="Close run…", color="danger", variant="outline",
                                     width=130, margin=(5, 5), disabled=not self.run_id)
        self.confirm = pn.widgets.Button(label="Yes, close it", color="danger", width=130, margin=(5, 5))
        self.cancel = pn.widgets.Button(label="Cancel", width=90, margin=(5, 5))
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
        audit = self.audit if self.audit is not None else AuditLog()
        try:
            closed = close_run(self.monitor.target, run.run_id, api=run.api, audit=audit, user=self.user,
                               client=self.client)
        except CloseRunAuditError as exc:
            logger.error("%s", exc)
            self._say(f"Run '{run.run_id}' is closed.", "good", f"{exc}", "bad")
            return
        except CloseRunError as exc:
            logger.warning("%s", exc)
            self._say(str(exc), "bad", *(self._audit_line(audit, exc.audit.sentence()) if exc.audit else ()))
            return
        line = closed.audit.sentence() if closed.audit else ""
        logging.getLogger("rdzv.audit").info("%s", line)
        self._say(f"Run '{run.run_id}' is closed.", "good", *self._audit_line(audit, line))

    @staticmethod
    def _audit_line(audit: AuditLog, line: str) -> tuple[str, str]:
        return f"Audit log ({audit.path}): {line}", "muted"

    def _say(self, text: str, tone: str, note: str = "", note_tone: str = "muted") -> None:
        """Show ``text``, and ``note`` (e.g. the audit line) on a line of its own below it."""
        shown = f"<span class='rdzv-{tone}'>{html.escape(text)}</span>" if text else ""
        if note:
            shown += f"<div class='rdzv-{note_tone}' data-role='audit'>{html.escape(note)}</div>"
        self.message.object = shown

    @param.depends("run_id", watch=True)
    def _enable(self) -> None:
        self.ask.disabled = not self.run_id
        self._cancel(None)

    def _refresh(self, now: datetime) -> None:
        """Nothing to show from the monitor; the action reads it when confirmed."""

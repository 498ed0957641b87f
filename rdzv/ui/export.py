"""HistoryExport: download the selected run's history as CSV or JSON, one click each."""

from __future__ import annotations

import io
import re
from datetime import datetime

import panel as pn
import param

from .base import RunScopedView

FORMATS = ("csv", "json")


def export_filename(run_id: str, fmt: str) -> str:
    """A safe file name for a run's history: characters other than letters, digits, ``-_.``
    become ``_``."""
    return f"{re.sub(r'[^A-Za-z0-9_.-]', '_', run_id) or 'run'}-history.{fmt}"


class HistoryExport(RunScopedView):
    """Two download buttons; the file is made from ``monitor.export_history`` when clicked."""

    def __init__(self, **params) -> None:
        super().__init__(**params)
        self.buttons = {
            fmt: pn.widgets.FileDownload(
                callback=(lambda fmt=fmt: self.history_file(fmt)), filename=export_filename("run", fmt),
                label=f"History as {fmt.upper()}", embed=False, color="default", disabled=True,
                width=170, margin=(5, 5),
            )
            for fmt in FORMATS
        }
        self._rename()

    def _build(self) -> pn.viewable.Viewable:
        return pn.Row(*self.buttons.values(), margin=0)

    def history_file(self, fmt: str) -> io.StringIO:
        """The selected run's history in ``fmt`` (``"csv"`` or ``"json"``), as a file object."""
        if not self.run_id:
            raise ValueError("Select a run before downloading its history.")
        return io.StringIO(self.monitor.export_history(self.run_id, fmt))

    @param.depends("run_id", watch=True)
    def _rename(self) -> None:
        for fmt, button in self.buttons.items():
            button.filename = export_filename(self.run_id or "run", fmt)
            button.disabled = not self.run_id

    def _refresh(self, now: datetime) -> None:
        """The history is made on click; nothing follows the monitor's version."""

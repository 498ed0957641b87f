"""The dashboard as it was before changes were pushed, for the ``sessions`` benchmark to compare:
``panel serve benchmarks/polling_app.py --args ...`` (the same arguments as app/dashboard.py).

It is app/dashboard.py with one difference: each session checks the monitor's version every
``poll_ms`` (300 ms by default) with a periodic callback instead of being told of each change,
which is what a served page did before push (and what a notebook still does). Only this server
process is changed; nothing is patched anywhere else.
"""

import sys

import panel as pn

from rdzv.ui import app
from rdzv.ui.launch import TITLE, page


def _polling_start(self) -> None:
    if self._callback is not None:
        return
    self.refresh()
    self._callback = pn.state.add_periodic_callback(self.refresh, period=self.poll_ms)
    if pn.state.curdoc is not None and pn.state.curdoc.session_context is not None:
        pn.state.on_session_destroyed(lambda _context: self.stop())


app.Dashboard.start = _polling_start
page(sys.argv[1:]).servable(title=TITLE)

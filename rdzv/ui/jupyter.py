"""The dashboard in a Jupyter kernel: the browser code it needs, sent by the first display on
each page, from the installed packages (no CDN), and a fix to what the page sends back.

Panel decides in ``pn.extension()`` how a notebook gets BokehJS and Panel's own code: that call publishes a loader script into the output of the cell that makes it,
from public CDNs unless ``inline=True``. A view displayed without that call renders nothing,
and on a machine without internet not even with it. :func:`load_in_notebook` makes the call
itself, inline, the first time a dashboard is made for a page -- the Jupyter client session
(one per open page, a new one when the page is reloaded) whose request the kernel is
executing -- and never again for that page, so a second dashboard costs no second copy of
the few megabytes of JavaScript. Each kernel sends its own copy (two notebooks open in one
page are two kernels); Panel's loader keeps the page's first BokehJS when a second one arrives.

With the code comes one correction (:data:`NO_ECHO_JS`): Panel's notebook comm manager sends
the kernel every change to the page's Bokeh documents, including the changes it has just
applied *from* the kernel. BokehJS marks those ``sync = false`` and its own server session
never sends them back (this is why ``panel serve`` is not affected); echoed in a notebook, a
change is applied in the kernel a second time: a streamed source (the revisions plot) would
hold its new rows twice. The fix drops, in the browser, what came from the kernel; what a person
does on the page (selecting a row, typing a filter) still goes back.

And one more (:func:`keep_stylesheets_inline`): Panel inlines the stylesheets of a view when it
first renders it in a notebook, but an HTML pane re-resolves them on every change of its text,
as links to Panel's CDN; the page would then fetch them from the internet, and without one lose
them. Those links are put back to the inline stylesheets the page already has.

Last, what goes wrong in the background (a watcher losing etcd, a view failing to update) is
logged; with logging not configured, Python would print each record's traceback into whichever
cell ran last. In a notebook :func:`log_in_one_line` shows rdzv's warnings as one sentence each
instead; configure logging (``logging.basicConfig()``) to get the tracebacks.
"""

from __future__ import annotations

import functools
import logging
import sys
import threading

import panel as pn

LOAD_MIME = "application/vnd.holoviews_load.v0+json"
"""The MIME type Panel's JupyterLab extension runs as a loader script (as Panel's own loader is sent)."""

NO_ECHO_JS = """
(function (root) {
  // rdzv: Panel's notebook comm manager must not send back what it applied from the kernel.
  var deadline = Date.now() + 120000;
  function patch() {
    var Bokeh = root.Bokeh;
    var CommManager = Bokeh != null && Bokeh.Panel != null ? Bokeh.Panel.CommManager : null;
    if (CommManager == null || typeof CommManager.prototype._document_changed !== "function") {
      if (Date.now() < deadline) { setTimeout(patch, 25); }
      return;
    }
    var proto = CommManager.prototype;
    if (proto._rdzv_no_echo) { return; }
    var changed = proto._document_changed;
    proto._document_changed = function (event) {
      if (event != null && event.sync === false) { return; }  // applied from the kernel
      return changed.call(this, event);
    };
    proto._rdzv_no_echo = true;
  }
  patch();
})(window);
"""

_loaded_pages: set[str] = set()
_lock = threading.Lock()


def jupyter_page() -> str | None:
    """The Jupyter client session whose request this kernel is executing now (``""`` when the
    request names none), or None outside a Jupyter kernel (a server, a script, a terminal IPython)."""
    try:
        from IPython import get_ipython
    except ImportError:
        return None
    shell = get_ipython()
    kernel = getattr(shell, "kernel", None)
    if kernel is None:
        return None
    try:
        parent = kernel.get_parent() or {}
    except (AttributeError, TypeError):  # an ipykernel before 6 (no get_parent)
        parent = getattr(kernel, "_parent_header", None) or {}
    return str(parent.get("header", {}).get("session", ""))


def load_in_notebook(page: str) -> bool:
    """Send ``page`` (see :func:`jupyter_page`) BokehJS and Panel inline, and
    :data:`NO_ECHO_JS`, unless it already has them. Returns whether anything was sent."""
    from IPython.display import publish_display_data

    with _lock:
        if page in _loaded_pages:
            return False
        keep_stylesheets_inline()
        log_in_one_line()
        pn.extension(inline=True)
        publish_display_data({LOAD_MIME: NO_ECHO_JS, "application/javascript": NO_ECHO_JS})
        _loaded_pages.add(page)
    return True


def keep_stylesheets_inline() -> None:
    """Make Panel's HTML panes (HTML, Markdown, ...) keep inline stylesheets when their text
    changes in an inline notebook, instead of switching to CDN links. Idempotent; a no-op on a
    Panel without the method it wraps."""
    from panel.pane.markup import HTMLBasePane

    update = getattr(HTMLBasePane, "_update", None)
    if update is None or getattr(update, "_rdzv_inline", False):
        return

    @functools.wraps(update)
    def _update(self, ref, model) -> None:
        before = list(model.stylesheets)
        update(self, ref, model)
        if pn.config.inline:
            inlined = _inlined(model.stylesheets, before)
            if inlined is not None:
                # The document of a notebook view holds its changes and combines two of one
                # property into one, so the links are never sent.
                model.stylesheets = inlined

    _update._rdzv_inline = True
    HTMLBasePane._update = _update


def _inlined(stylesheets: list, before: list) -> list | None:
    """``stylesheets`` with each link to Panel's CDN replaced by the same CSS inline (the very
    stylesheet of ``before`` holding it, when there is one); None when there is no such link."""
    from bokeh.models import ImportedStyleSheet, InlineStyleSheet

    if not any(isinstance(sheet, ImportedStyleSheet) and _dist_css(sheet.url) is not None for sheet in stylesheets):
        return None
    kept = {sheet.css: sheet for sheet in before if isinstance(sheet, InlineStyleSheet)}
    result = []
    for sheet in stylesheets:
        css = _dist_css(sheet.url) if isinstance(sheet, ImportedStyleSheet) else None
        if css is not None:
            sheet = kept.get(css) or InlineStyleSheet(css=css)
        result.append(sheet)
    return result


@functools.lru_cache(maxsize=64)
def _dist_css(url: str) -> str | None:
    """The CSS behind ``url`` when it is a file of Panel's CDN that the installed Panel ships."""
    from bokeh.models import ImportedStyleSheet, InlineStyleSheet
    from panel.io.notebook import replace_inline_css

    inline = replace_inline_css(ImportedStyleSheet(url=url))
    return inline.css if isinstance(inline, InlineStyleSheet) else None


class _OneLineHandler(logging.Handler):
    """Writes a record to the ``sys.stderr`` of the moment (a notebook's: the running cell) as
    ``rdzv: <message> (<exception type>: <exception>)``, without the traceback."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)

    def format(self, record: logging.LogRecord) -> str:
        text = f"rdzv: {record.getMessage()}"
        error = record.exc_info[1] if record.exc_info else None
        return text + (f" ({type(error).__name__}: {error})" if error is not None else "")

    def emit(self, record: logging.LogRecord) -> None:
        try:
            sys.stderr.write(self.format(record) + "\n")
        except Exception:
            self.handleError(record)


def log_in_one_line() -> None:
    """Unless logging is configured (a handler on the root or the ``rdzv`` logger), show the
    ``rdzv`` loggers' warnings and errors one line each, without tracebacks. Idempotent."""
    logger = logging.getLogger("rdzv")
    if not logger.handlers and not logging.getLogger().handlers:
        logger.addHandler(_OneLineHandler())

"""MarkupPane: an HTML pane for markup that changes often, whose new markup is all it sends."""

from __future__ import annotations

import panel as pn


class MarkupPane(pn.pane.HTML):
    """Panel's HTML pane, except that a new ``object`` sets only its model's text.

    Panel's own pane answers each new object by working out every property of its model again
    (design, styles, stylesheets, margins) and setting them all, which costs every open session
    on every change far more than the text itself; and in an inline notebook it swaps the
    inline stylesheets for links to files that are not there (see :mod:`.jupyter`). The text
    set is the one Panel's pane would set (its ``_transform_object``: the markup, sanitized if
    asked, escaped for Panel's HTML model, which reads it back in the page). Every other
    parameter goes through Panel as usual.
    """

    def _update(self, ref: str, model) -> None:
        model.text = self._transform_object(self.object)["object"]

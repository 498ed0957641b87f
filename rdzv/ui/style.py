"""The dashboard's look: one stylesheet, applied inside each component's shadow root."""

from __future__ import annotations

import html

from .. import time_marks

ACCENT = "#ee4c2c"

STYLESHEET = """
:host { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: #1f2328; }
.rdzv-title { font-size: 15px; font-weight: 600; margin: 6px 0 4px 0; color: #1f2328; }
.rdzv-muted { color: #57606a; font-size: 12px; }
.rdzv-tiles { display: flex; flex-wrap: wrap; gap: 8px; }
.rdzv-tile { border: 1px solid #d0d7de; border-radius: 6px; padding: 6px 12px; min-width: 84px; background: #f6f8fa; }
.rdzv-tile-value { font-size: 20px; font-weight: 600; white-space: nowrap; overflow: hidden; text-overflow: ellipsis; max-width: 260px; }
.rdzv-tile-label { font-size: 11px; text-transform: uppercase; letter-spacing: .04em; color: #57606a; }
.rdzv-good { color: #1a7f37; } .rdzv-warn { color: #9a6700; } .rdzv-bad { color: #cf222e; } .rdzv-idle { color: #57606a; }
.rdzv-banner { border-radius: 6px; padding: 6px 12px; font-size: 13px; border: 1px solid; }
.rdzv-banner-connected { background: #dafbe1; border-color: #aceebb; color: #116329; }
.rdzv-banner-connecting { background: #f6f8fa; border-color: #d0d7de; color: #57606a; }
.rdzv-banner-recovered { background: #fff8c5; border-color: #eedc82; color: #7d4e00; }
.rdzv-banner-unreachable { background: #ffebe9; border-color: #ffb8b0; color: #82071e; font-weight: 600; }
.rdzv-header { display: flex; align-items: baseline; gap: 14px; }
.rdzv-brand { font-size: 20px; font-weight: 700; color: """ + ACCENT + """; }
.rdzv-finding { font-size: 13px; margin: 2px 0 8px 0; line-height: 1.35; }
.rdzv-error { background: #ffebe9; border: 1px solid #ffb8b0; color: #82071e; border-radius: 6px; padding: 10px 14px; font-size: 14px; }
"""

PANEL_STYLES = {"border": "1px solid #d0d7de", "border-radius": "8px", "padding": "4px 8px", "background": "white"}
"""Inline styles of the bordered box around each section."""


def tile(label: str, value: object, tone: str = "") -> str:
    """One labelled figure of a card, every piece escaped (``tone``: good, warn, bad, idle)."""
    css = f"rdzv-tile-value rdzv-{tone}" if tone else "rdzv-tile-value"
    text = str(value)
    # A time mark becomes a span the page keeps current; an attribute cannot hold one.
    tooltip = "" if time_marks.has_marks(text) else f" title='{html.escape(text)}'"
    return (
        f"<div class='rdzv-tile'><div class='{css}'{tooltip}>{html.escape(text)}</div>"
        f"<div class='rdzv-tile-label'>{html.escape(label)}</div></div>"
    )


def title(text: str) -> str:
    """A section title, escaped."""
    return f"<div class='rdzv-title'>{html.escape(text)}</div>"

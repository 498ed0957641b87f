"""Turning monitor data into the short plain-text strings the dashboard and `rdzv status` display.

Everything here returns text for text-only widgets; nothing returns HTML. Where a
view does need markup (the round card, the banner) it escapes with :func:`html.escape`.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

NO_VALUE = "—"
"""What a cell shows when there is nothing to show (no heartbeat, no deadline)."""

VALUE_PREVIEW_CHARS = 80
"""Store values longer than this are cut in the table; the full value shows on select."""


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


def age(delta: timedelta | float | None) -> str:
    """A duration in whole units, coarse enough that the text changes at most once a second:
    ``"4 s"``, ``"2 min 05 s"``, ``"1 h 02 min"``; negative durations (clock skew) read ``"0 s"``."""
    if delta is None:
        return NO_VALUE
    seconds = int(max(0.0, delta.total_seconds() if isinstance(delta, timedelta) else delta))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    if seconds < 86400:
        return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"
    return f"{seconds // 86400} d {seconds % 86400 // 3600:02d} h"


def countdown(deadline: datetime | None, now: datetime) -> str:
    """Time left until ``deadline``: ``"in 3 s"``, ``"passed"``, or :data:`NO_VALUE`."""
    if deadline is None:
        return NO_VALUE
    left = deadline - now
    return f"in {age(left)}" if left.total_seconds() >= 1 else "passed"


def clock(moment: datetime) -> str:
    """``moment`` as a UTC wall-clock time with milliseconds: ``"12:03:04.250"``."""
    return moment.astimezone(timezone.utc).strftime("%H:%M:%S.%f")[:-3]


def utc_time(moment: datetime) -> str:
    """``moment`` as a UTC wall-clock time to the second: ``"12:03:04 UTC"``."""
    return f"{moment.astimezone(timezone.utc):%H:%M:%S} UTC"


def clip(text: str, limit: int = VALUE_PREVIEW_CHARS) -> str:
    """``text`` cut to ``limit`` characters, an ellipsis marking the cut."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def value_text(value: bytes) -> str:
    """A store value as readable text: the UTF-8 text when it is printable, else the bytes' repr."""
    try:
        text = value.decode("utf-8")
    except UnicodeDecodeError:
        return repr(value)
    return text if text.isprintable() else repr(value)


def run_state(run) -> str:
    """One word for where a run stands: forming, complete, closed, deleted or undecodable."""
    if run.deleted:
        return "deleted"
    if run.snapshot is None:
        return "undecodable"
    if run.snapshot.closed:
        return "closed"
    return "complete" if run.snapshot.complete else "forming"


def printable(text: str) -> str:
    """``text`` with every non-printable character (terminal escapes, newlines) written as an
    escape sequence, so a hostile node name cannot rewrite a terminal."""
    return text if text.isprintable() else "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)

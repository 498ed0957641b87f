"""Time marks: the words of a sentence that time alone changes, kept as the moment they count from.

"Node a has sent no keep-alive for 2 min 05 s" reads differently every second, though nothing
in the run changed. Written with :func:`since` instead (``f"... for {since(last)}"``), the
sentence stays the same from one second to the next, and :func:`expand` turns it into the
words of any ``now``. A view that keeps the marked spans current itself (the dashboard's page
does, see ``rdzv.ui.browser_clock``) then needs the sentence only when it really changes.

A mark is ``START``, a kind letter, a moment or an offset in whole microseconds, ``END``: two
private-use characters around a few ASCII ones. Text from outside (a node name, a run id)
passes through :func:`plain` before it joins a marked sentence, so it never forms a mark.

The kinds, each the words of a function of :mod:`rdzv.text`:

``since``        :func:`rdzv.text.age` of ``now - moment``: "2 min 05 s".
``ahead``        :func:`rdzv.text.age` of ``moment - now``: "3 s" (a clock ahead of ours).
``countdown``    :func:`rdzv.text.countdown` of ``moment`` at ``now``: "in 12 s", "passed".
``clock_after``  :func:`rdzv.text.utc_time` of ``now + offset``: "04:10:35 UTC".
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone

from .text import age, countdown as countdown_text, utc_time

START = "\ue000"
END = "\ue001"

SINCE, AHEAD, COUNTDOWN, CLOCK_AFTER = "s", "a", "c", "k"
KINDS = (SINCE, AHEAD, COUNTDOWN, CLOCK_AFTER)

PATTERN = re.compile(f"{START}([{''.join(KINDS)}])(-?[0-9]{{1,20}}){END}")
"""A mark: its kind (group 1) and its microseconds (group 2)."""

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_REPLACEMENT = "\ufffd"


def _micros(moment: datetime) -> int:
    moment = moment if moment.tzinfo is not None else moment.replace(tzinfo=timezone.utc)
    return (moment - _EPOCH) // timedelta(microseconds=1)


def _moment(micros: int) -> datetime:
    return _EPOCH + timedelta(microseconds=micros)


def since(moment: datetime) -> str:
    """How long before ``now`` ``moment`` was."""
    return f"{START}{SINCE}{_micros(moment)}{END}"


def ahead(moment: datetime) -> str:
    """How long after ``now`` ``moment`` is."""
    return f"{START}{AHEAD}{_micros(moment)}{END}"


def countdown(moment: datetime) -> str:
    """The time left until ``moment``, or "passed"."""
    return f"{START}{COUNTDOWN}{_micros(moment)}{END}"


def clock_after(offset: timedelta) -> str:
    """The UTC wall-clock time ``offset`` after ``now``."""
    return f"{START}{CLOCK_AFTER}{offset // timedelta(microseconds=1)}{END}"


def plain(text: str) -> str:
    """``text`` with the two mark characters replaced (U+FFFD), so it can never form a mark."""
    if START in text or END in text:
        return text.replace(START, _REPLACEMENT).replace(END, _REPLACEMENT)
    return text


def has_marks(text: str) -> bool:
    return START in text


def words(kind: str, micros: int, now: datetime) -> str:
    """What one mark reads at ``now`` (aware)."""
    if kind == SINCE:
        return age(now - _moment(micros))
    if kind == AHEAD:
        return age(_moment(micros) - now)
    if kind == COUNTDOWN:
        return countdown_text(_moment(micros), now)
    if kind == CLOCK_AFTER:
        return utc_time(now + timedelta(microseconds=micros))
    raise ValueError(f"unknown time mark kind {kind!r}")


def expand(text: str, now: datetime) -> str:
    """``text`` as it reads at ``now``: every mark replaced by its words."""
    if START not in text:
        return text
    return PATTERN.sub(lambda mark: words(mark[1], int(mark[2]), now), text)


def pieces(text: str) -> Iterator[tuple[str, str | None, int]]:
    """``text`` cut at its marks: ``(text before, kind, micros)`` for each mark, then
    ``(the rest, None, 0)``."""
    position = 0
    for mark in PATTERN.finditer(text):
        yield text[position:mark.start()], mark[1], int(mark[2])
        position = mark.end()
    yield text[position:], None, 0

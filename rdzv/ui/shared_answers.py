"""SharedAnswers: the last few answers worked out for the server's sessions, so that sessions
asking the same question in turn (the same objects, the same settings) share one answer."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

Answer = TypeVar("Answer")


class SharedAnswers(Generic[Answer]):
    """Up to ``kept`` answers, the least recently asked dropped first. Safe from any thread.

    A question is some objects, matched by identity (``id`` alone could name a new object at a
    dropped one's address, so the objects themselves are kept and compared with ``is``), and a
    hashable rest matched by equality. An answer is shared as it is: nobody may change it.
    """

    def __init__(self, kept: int) -> None:
        self.kept = kept
        self._answers: OrderedDict[tuple, tuple[tuple, Answer]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, objects: tuple, rest: Hashable, work_out: Callable[[], Answer]) -> Answer:
        """The answer kept for ``objects`` and ``rest``, else ``work_out()``, kept. Two threads
        asking at once may both work it out (outside the lock); either answer is right."""
        key = (tuple(map(id, objects)), rest)
        with self._lock:
            kept = self._answers.get(key)
            if kept is not None and all(a is b for a, b in zip(kept[0], objects, strict=True)):
                self._answers.move_to_end(key)
                return kept[1]
        answer = work_out()
        with self._lock:
            self._answers[key] = (objects, answer)
            while len(self._answers) > self.kept:
                self._answers.popitem(last=False)
        return answer

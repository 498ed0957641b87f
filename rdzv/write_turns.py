"""Turns for retrying a lost compare-and-swap, among the writers of one process.

When many rendezvous handlers share a process (a simulated cluster, tests, the
demo), they share one interpreter lock, and each attempt of torch's handler costs
milliseconds of Python work. If every loser of a compare-and-swap retried at once,
all but one would lose again on the same state, and the round would cost about
N²/2 attempts. Instead a loser waits here for its turn, is handed the newest state
this process has seen, and keeps the turn until its next call on the key (its
retry) or until the turn lapses. Retries then follow one another and mostly win.

Correctness never depends on a turn: every write is still a compare-and-swap in
etcd, and writers in other processes never wait. A lone handler in a process,
as under torchrun, always finds the turn free.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Hashable
from dataclasses import dataclass

from .kv import KeyValue

#: How long a turn lasts if its holder does not come back (it may have decided not to write).
TURN_LAPSES_AFTER_S = 0.1
#: The longest a loser waits for its turn before it returns without one.
LONGEST_WAIT_S = 2.0
#: Keys kept before idle ones are dropped (one per run and cluster the process has written to).
KEYS_KEPT = 256


@dataclass(slots=True)
class _Key:
    turn_ended: threading.Condition
    holder: int | None = None
    lapses_at: float = 0.0
    newest: KeyValue | None = None

    def remember(self, value: KeyValue) -> None:
        if self.newest is None or value.revision > self.newest.revision:
            self.newest = value


class WriteTurns:
    """Per key: who may retry now, and the newest value this process has seen.

    Keys are any hashable naming one etcd key on one cluster. Thread-safe.
    """

    def __init__(self, lapses_after_s: float = TURN_LAPSES_AFTER_S, longest_wait_s: float = LONGEST_WAIT_S) -> None:
        self._lapses_after_s = lapses_after_s
        self._longest_wait_s = longest_wait_s
        self._lock = threading.Lock()
        self._keys: dict[Hashable, _Key] = {}

    def seen(self, key: Hashable, value: KeyValue | None) -> None:
        """Record a value read from or written to etcd, if it is newer than the last one."""
        if value is None:
            return
        with self._lock:
            self._entry(key).remember(value)

    def end_turn(self, key: Hashable) -> None:
        """The calling thread is done with its turn on ``key`` (if it had one)."""
        with self._lock:
            entry = self._keys.get(key)
            if entry is not None and entry.holder == threading.get_ident():
                entry.holder = None
                entry.turn_ended.notify()

    def take_turn(self, key: Hashable, lost_to: KeyValue | None) -> KeyValue | None:
        """Wait for the calling thread's turn to retry on ``key``; return the value to retry on.

        ``lost_to`` is the value the failed compare-and-swap returned (``None``: the key
        is gone, and so is the answer). Otherwise the answer is the newest of that and
        of everything recorded since, so the retry starts from the latest state this
        process knows. After ``longest_wait_s`` without a turn, it returns anyway.
        """
        me = threading.get_ident()
        gives_up_at = time.monotonic() + self._longest_wait_s
        with self._lock:
            entry = self._entry(key)
            if lost_to is not None:
                entry.remember(lost_to)
            while True:
                now = time.monotonic()
                if entry.holder in (None, me) or entry.lapses_at <= now:
                    entry.holder = me
                    entry.lapses_at = now + self._lapses_after_s
                    break
                if now >= gives_up_at:
                    break
                entry.turn_ended.wait(min(entry.lapses_at, gives_up_at) - now)
            return None if lost_to is None else entry.newest

    def reset_after_fork(self) -> None:
        """In a forked child: start afresh (the parent's threads and its lock state do not exist here)."""
        self._lock = threading.Lock()
        self._keys = {}

    def _entry(self, key: Hashable) -> _Key:
        entry = self._keys.get(key)
        if entry is None:
            if len(self._keys) >= KEYS_KEPT:
                self._keys = {k: e for k, e in self._keys.items() if e.holder is not None}
            entry = self._keys[key] = _Key(threading.Condition(self._lock))
        return entry


#: The one instance shared by every backend in the process.
WRITE_TURNS = WriteTurns()
os.register_at_fork(after_in_child=WRITE_TURNS.reset_after_fork)

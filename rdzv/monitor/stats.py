"""Histograms of durations, for Prometheus: how long each state decode takes (the monitor's),
and any other durations a part of rdzv times about itself (the dashboard's serving)."""

from __future__ import annotations

import bisect
import threading
from collections.abc import Sequence

#: Upper bounds (seconds) of the decode-time buckets; the last bucket is everything slower.
DECODE_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 1.0)


class Durations:
    """A histogram of durations: counts per bucket of ``bounds`` (upper bounds in seconds; a
    last bucket for slower than every bound), their sum and count. Any thread observes; any
    thread reads a copy."""

    def __init__(self, bounds: Sequence[float] = DECODE_BUCKETS) -> None:
        self.bounds = tuple(bounds)
        self._lock = threading.Lock()
        self._counts = [0] * (len(self.bounds) + 1)
        self._sum = 0.0

    def observe(self, seconds: float) -> None:
        with self._lock:
            self._counts[bisect.bisect_left(self.bounds, seconds)] += 1
            self._sum += seconds

    def snapshot(self) -> tuple[list[int], float]:
        """``(counts per bucket, the last one for slower than every bound; sum of seconds)``."""
        with self._lock:
            return list(self._counts), self._sum

    def buckets(self) -> tuple[list[tuple[str, int]], int, float]:
        """Prometheus' view: ``([(le, count at or under it)..., ("+Inf", count)], count, sum)``."""
        counts, total = self.snapshot()
        running, buckets = 0, []
        for bound, count in zip((*map(str, self.bounds), "+Inf"), counts, strict=True):
            running += count
            buckets.append((bound, running))
        return buckets, running, total


DecodeTimes = Durations
"""The monitor's decode times: :class:`Durations` over :data:`DECODE_BUCKETS`."""

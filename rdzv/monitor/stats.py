"""What the monitor measures about itself: how long each state decode takes (for metrics)."""

from __future__ import annotations

import bisect
import threading

#: Upper bounds (seconds) of the decode-time buckets; the last bucket is everything slower.
DECODE_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 1.0)


class DecodeTimes:
    """A histogram of decode durations: counts per bucket of :data:`DECODE_BUCKETS` (not
    cumulative), their sum and count. Watcher threads observe; any thread reads a copy."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts = [0] * (len(DECODE_BUCKETS) + 1)
        self._sum = 0.0

    def observe(self, seconds: float) -> None:
        with self._lock:
            self._counts[bisect.bisect_left(DECODE_BUCKETS, seconds)] += 1
            self._sum += seconds

    def snapshot(self) -> tuple[list[int], float]:
        """``(counts per bucket, the last one for slower than every bound; sum of seconds)``."""
        with self._lock:
            return list(self._counts), self._sum

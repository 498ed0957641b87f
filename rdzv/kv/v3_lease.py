"""Key TTLs on etcd v3, where a key expires with the lease it is attached to.

The KV contract says a key written with ``ttl`` expires ``ttl`` seconds after
that write. Granting a lease per write would keep that promise exactly, but
costs a round trip per write and leaves one live lease per write in etcd (a
rendezvous state with a 2 h TTL, rewritten on every heartbeat of every node,
would pile up millions).

So writes with the same ``ttl`` share a lease for a short while. A lease for
``ttl`` is granted with ``ttl + slack`` seconds and shared only by writes sent
within ``slack / 2`` seconds of asking for it, so a key never expires earlier
than ``ttl`` seconds after its last write, and at most ``slack`` seconds later
(plus etcd's own expiry tick of about half a second; etcd also rounds TTLs
below its minimum, 2 s by default, up to that minimum). ``slack`` is 2 % of
``ttl``, at least 1 s. One client then holds at most about 100 live leases
per TTL value, whatever its write rate.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable

#: Keys may expire this fraction of their TTL late (but never early).
SLACK_FRACTION = 0.02
#: ...and at least this many seconds late, since etcd lease TTLs are whole seconds.
MIN_SLACK = 1


def lease_slack(ttl: int) -> int:
    """How many seconds a lease for ``ttl`` outlives the TTL it stands for."""
    return max(MIN_SLACK, math.ceil(ttl * SLACK_FRACTION))


class LeaseCache:
    """Leases for key TTLs, shared by writes with the same TTL sent close together.

    ``grant(seconds)`` must grant an etcd lease of that TTL and return its id.
    Thread-safe; grants happen outside the lock (two threads may both grant).
    """

    def __init__(self, grant: Callable[[int], int]) -> None:
        self._grant = grant
        self._leases: dict[int, tuple[int, float]] = {}  # ttl -> (lease id, shareable until)
        self._lock = threading.Lock()

    def lease_for(self, ttl: int) -> int:
        """A lease under which a key written now expires no earlier than ``ttl`` seconds from now."""
        with self._lock:
            cached = self._leases.get(ttl)
        if cached is not None and time.monotonic() < cached[1]:
            return cached[0]
        slack = lease_slack(ttl)
        asked_at = time.monotonic()
        lease_id = self._grant(ttl + slack)
        with self._lock:
            self._leases[ttl] = (lease_id, asked_at + slack / 2)
        return lease_id

    def forget(self, lease_id: int) -> None:
        """Stop sharing ``lease_id`` (etcd no longer knows it, e.g. it was revoked)."""
        with self._lock:
            for ttl, (cached_id, _) in list(self._leases.items()):
                if cached_id == lease_id:
                    del self._leases[ttl]

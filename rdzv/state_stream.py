"""Decoding the successive values of one run's state key, with a cheap path for heartbeats.

Every keep-alive of every node rewrites the whole state, and nearly all of those writes change
nothing but one node's heartbeat: the same pickle, byte for byte, except the ten bytes of one
``datetime`` (a ``SHORT_BINBYTES`` argument). :class:`StateStream` keeps the previous value that
:func:`rdzv.state.decode_state` fully checked, with the offsets of the heartbeats' (and the
deadline's) datetime bytes. A new value of the same length whose every other byte is identical
has the very same opcodes, memo and structure, so all the decoder's structural checks hold for
it as they held for the previous one; only the changed datetimes are built, by the same
``datetime`` constructor the unpickler calls, and patched into the previous snapshot. Any other
difference (a join, a rank, a flag, a datetime the mapping cannot place) takes the full path.
"""

from __future__ import annotations

import bisect
from collections import Counter
from datetime import datetime

from .state import (
    DATETIME_PAYLOAD,
    MAX_STATE_BYTES,
    Node,
    RendezvousSnapshot,
    UndecodableStateError,
    _check_opcodes,
    _load,
    _Refusal,
    _snapshot_of,
)

__all__ = ["StateStream"]

DEADLINE = None
"""The target of the deadline's datetime in a stream's map (heartbeats map to their node)."""


class StateStream:
    """Decodes one run's successive state values; not thread-safe (one watcher owns it).

    :meth:`decode` returns the snapshot and, when the value differs from the previous one only
    in heartbeats, the nodes whose heartbeat changed (else ``None``). It refuses exactly what
    :func:`rdzv.state.decode_state` refuses.
    """

    def __init__(self, run_id: str | None = None) -> None:
        self.run_id = run_id
        self._data: bytes | None = None
        self._number = 0
        self._snapshot: RendezvousSnapshot | None = None
        self._targets: dict[int, tuple[Node | None, object]] = {}  # payload offset -> (node or DEADLINE, tzinfo)
        self._fixed = 0  # every byte that must not change, as one big integer mask
        self._offsets: list[int] = []
        #: How many values took the cheap path (for benchmarks and tests).
        self.patched = 0

    def decode(self, data: bytes) -> tuple[RendezvousSnapshot, frozenset[Node] | None]:
        """Decode ``data`` (a pickled state). Raises :class:`UndecodableStateError`."""
        if self._data is not None and len(data) == len(self._data):
            patched = self._patch(data)
            if patched is not None:
                return patched
        return self._full(data), None

    def _full(self, data: bytes) -> RendezvousSnapshot:
        payloads: list[int] = []
        try:
            if len(data) > MAX_STATE_BYTES:
                raise _Refusal(f"larger than {MAX_STATE_BYTES // (1024 * 1024)} MiB")
            _check_opcodes(data, payloads)
            snapshot = _snapshot_of(_load(data))
        except _Refusal as refusal:
            raise UndecodableStateError(refusal.reason, self.run_id) from None
        self._remember(data, snapshot, payloads)
        return snapshot

    def _remember(self, data: bytes, snapshot: RendezvousSnapshot, payloads: list[int]) -> None:
        """Map each datetime's bytes to the field it holds; a datetime whose bytes occur more
        than once (shared, or equal instants) is left out, so a change there takes the full path."""
        occurrences = Counter(data[offset:offset + DATETIME_PAYLOAD] for offset in payloads)
        unique = {data[offset:offset + DATETIME_PAYLOAD]: offset for offset in payloads}
        targets: dict[int, tuple[Node | None, object]] = {}
        moments = [(node, moment) for node, moment in snapshot.last_heartbeats.items()]
        if snapshot.deadline is not None:
            moments.append((DEADLINE, snapshot.deadline))
        for target, moment in moments:
            reduced = moment.__reduce__()[1]
            payload = reduced[0]
            if type(payload) is bytes and occurrences.get(payload) == 1:
                targets[unique[payload]] = (target, reduced[1] if len(reduced) > 1 else None)
        mask = bytearray(b"\xff") * len(data)
        for offset in targets:
            mask[offset:offset + DATETIME_PAYLOAD] = bytes(DATETIME_PAYLOAD)
        self._data, self._number = data, int.from_bytes(data, "big")
        self._snapshot, self._targets, self._fixed = snapshot, targets, int.from_bytes(mask, "big")
        self._offsets = sorted(targets)

    def _patch(self, data: bytes) -> tuple[RendezvousSnapshot, frozenset[Node] | None] | None:
        number = int.from_bytes(data, "big")
        difference = number ^ self._number
        if difference & self._fixed:
            return None
        snapshot, size = self._snapshot, len(data)
        deadline, changed = snapshot.deadline, {}
        try:
            while difference:  # from the last changed byte backwards, one datetime at a time
                last_changed = size - 1 - (difference.bit_length() - 1) // 8
                offset = self._offsets[bisect.bisect_right(self._offsets, last_changed) - 1]
                target, tz = self._targets[offset]
                payload = data[offset:offset + DATETIME_PAYLOAD]
                moment = datetime(payload, tz) if tz is not None else datetime(payload)
                if target is DEADLINE:
                    deadline = moment
                else:
                    changed[target] = moment
                difference &= ~(_PAYLOAD_MASK << (8 * (size - offset - DATETIME_PAYLOAD)))
        except (TypeError, ValueError):
            return None  # the full path refuses it with the decoder's own reason
        patched = snapshot.with_heartbeats(changed, deadline)
        self._data, self._number, self._snapshot = data, number, patched
        self.patched += 1
        return patched, (frozenset(changed) if deadline == snapshot.deadline else None)


_PAYLOAD_MASK = (1 << (8 * DATETIME_PAYLOAD)) - 1

"""How a node of a run is shown: one row per node, the same columns in the same order everywhere.

The dashboard's node table, the notebook's ``Lab.state_table()`` and ``rdzv status --run-id``
all take their rows from :func:`node_rows`. Participants come first, by rank, then the waiting,
the redundant and the heartbeat-only nodes. A node is stale by the run's settings
(:meth:`RendezvousSettings.is_stale`, torch's dead-node rule).

torch gives every participant a placeholder rank until the round completes (``_add_to_participants``
stores 0; ``_RendezvousJoinOp`` assigns the real ranks on completion): the row's ``rank`` is
``None`` until then, never the placeholder.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from .rendezvous_settings import RendezvousSettings
from .state import Node, RendezvousSnapshot

__all__ = ["COLUMNS", "HEARTBEAT_ONLY", "NodeRow", "node_rows"]

HEARTBEAT_ONLY = "heartbeat only"
"""The list of a node the state holds a heartbeat for but that is on no list (it left)."""

#: (field of :class:`NodeRow`, heading) of every column, in the order every view shows them.
COLUMNS = (
    ("addr", "node"),
    ("pid", "pid"),
    ("local_id", "local id"),
    ("rank", "rank"),
    ("list", "list"),
    ("heartbeat_age", "heartbeat age"),
    ("stale", "stale"),
)

_LIST_ORDER = {"participant": 0, "waiting": 1, "redundant": 2, HEARTBEAT_ONLY: 3}


@dataclass(frozen=True)
class NodeRow:
    """One node as shown: who it is, its rank (``None`` before completion), which list holds
    it, when it last sent a heartbeat, how long ago that was at ``now``, and whether it is stale."""

    node: Node
    rank: int | None
    list: str
    last_heartbeat: datetime | None
    heartbeat_age: timedelta | None
    stale: bool

    @property
    def addr(self) -> str:
        return self.node.addr

    @property
    def pid(self) -> int:
        return self.node.pid

    @property
    def local_id(self) -> int:
        return self.node.local_id


def node_rows(snapshot: RendezvousSnapshot, settings: RendezvousSettings | None, now: datetime) -> list[NodeRow]:
    """The rows of every node ``snapshot`` mentions, in display order, aged at ``now`` under
    ``settings`` (default: torch's keep-alive defaults)."""
    settings = settings or RendezvousSettings()
    stale = settings.stale_among(snapshot.last_heartbeats, now)
    rows = []
    for node in snapshot.nodes:
        where = snapshot.membership(node) or HEARTBEAT_ONLY
        held_rank = snapshot.participants.get(node)
        last = snapshot.last_heartbeats.get(node)
        rows.append(NodeRow(
            node=node,
            rank=held_rank if held_rank is not None and snapshot.complete else None,
            list=where,
            last_heartbeat=last,
            heartbeat_age=None if last is None else now - last,
            stale=node in stale,
        ))
    rows.sort(key=lambda row: (_LIST_ORDER[row.list], snapshot.participants.get(row.node, 0), row.node))
    return rows

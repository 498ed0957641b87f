"""What changed between two readings of a run's rendezvous state, as a list of :class:`Change`.

:func:`diff_states` reports each transition once. A node moving between the participants,
the wait list and the redundancy list gets one change named after where it went (``joined``,
``waiting``, ``redundant``, with where it came from in ``detail``); a node gone from all of them
gets ``left``; a node dropped from a list while staying on another gets ``left_...``. Heartbeats
are reported only for nodes without another change (joining implies a heartbeat), so a write
that only refreshed heartbeats is :func:`is_heartbeat_only`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import Enum

from .state import Node, RendezvousSnapshot, node_order

__all__ = ["Change", "ChangeKind", "diff_states", "heartbeat_changes", "is_heartbeat_only"]


class ChangeKind(str, Enum):
    """The kinds of :class:`Change`; each compares equal to its string value."""

    CREATED = "created"
    ROUND_ADVANCED = "round_advanced"
    REOPENED = "reopened"
    JOINED = "joined"
    RANK_CHANGED = "rank_changed"
    WAITING = "waiting"
    REDUNDANT = "redundant"
    LEFT_PARTICIPANTS = "left_participants"
    LEFT_WAIT_LIST = "left_wait_list"
    LEFT_REDUNDANCY_LIST = "left_redundancy_list"
    LEFT = "left"
    DEADLINE_SET = "deadline_set"
    DEADLINE_CLEARED = "deadline_cleared"
    COMPLETED = "completed"
    CLOSED = "closed"
    HEARTBEAT = "heartbeat"

    def __str__(self) -> str:
        return self.value


_SENTENCES = {
    ChangeKind.CREATED: "The rendezvous state appeared {detail}.",
    ChangeKind.ROUND_ADVANCED: "The rendezvous moved {detail}.",
    ChangeKind.REOPENED: "The rendezvous reopened {detail} for nodes to join.",
    ChangeKind.JOINED: "Node {node} joined the participants{clause}.",
    ChangeKind.RANK_CHANGED: "Node {node} changed rank {detail}.",
    ChangeKind.WAITING: "Node {node} is waiting for the next round{clause}.",
    ChangeKind.REDUNDANT: "Node {node} is redundant until the next round{clause}.",
    ChangeKind.LEFT_PARTICIPANTS: "Node {node} stopped participating {detail}.",
    ChangeKind.LEFT_WAIT_LIST: "Node {node} left the wait list {detail}.",
    ChangeKind.LEFT_REDUNDANCY_LIST: "Node {node} left the redundancy list {detail}.",
    ChangeKind.LEFT: "Node {node} left the rendezvous {detail}.",
    ChangeKind.DEADLINE_SET: "The round's last call ends at {detail}; it then completes with the nodes that joined.",
    ChangeKind.DEADLINE_CLEARED: "The round's deadline was cleared.",
    ChangeKind.COMPLETED: "The rendezvous completed {detail}.",
    ChangeKind.CLOSED: "The rendezvous was closed; no further rounds will start.",
    ChangeKind.HEARTBEAT: "Node {node} {detail}.",
}


@dataclass(frozen=True)
class Change:
    """One transition: its ``kind``, the ``node`` it concerns (``None`` for the run itself), and
    ``detail``, the specifics in a few words (``"as rank 3"``, ``"from round 2 to round 3"``)."""

    kind: ChangeKind
    node: Node | None = None
    detail: str = ""

    def describe(self) -> str:
        """The change as one sentence, e.g. ``"Node host-a_123_0 joined the participants as rank 0."``"""
        clause = (f" {self.detail}" if self.detail.startswith("as ") else f", {self.detail}") if self.detail else ""
        return _SENTENCES[self.kind].format(node=self.node, detail=self.detail, clause=clause)


def is_heartbeat_only(changes: Sequence[Change]) -> bool:
    """Whether ``changes`` (non-empty) are all heartbeats: the write changed nothing else."""
    return bool(changes) and all(change.kind is ChangeKind.HEARTBEAT for change in changes)


def diff_states(old: RendezvousSnapshot | None, new: RendezvousSnapshot) -> list[Change]:
    """The changes that turn ``old`` into ``new``; ``old=None`` means the state was just created.

    Order: the run (created, round, reopened), then node memberships by node, then deadline,
    completion and closing, then heartbeats by node. Equal snapshots give ``[]``.
    """
    changes: list[Change] = []
    if old is None:
        changes.append(Change(ChangeKind.CREATED, detail=_created_detail(new)))
        old = RendezvousSnapshot(round=new.round)
    elif new.round != old.round:
        changes.append(Change(ChangeKind.ROUND_ADVANCED, detail=f"from round {old.round} to round {new.round}"))
    if old.complete and not new.complete:
        changes.append(Change(ChangeKind.REOPENED, detail=f"round {new.round}"))

    moved = _membership_changes(old, new)
    changes.extend(moved)

    if new.deadline is not None and new.deadline != old.deadline:
        changes.append(Change(ChangeKind.DEADLINE_SET, detail=_time(new.deadline)))
    elif new.deadline is None and old.deadline is not None:
        changes.append(Change(ChangeKind.DEADLINE_CLEARED))
    if new.complete and not old.complete:
        changes.append(Change(ChangeKind.COMPLETED, detail=f"round {new.round} with {_count(new.world_size)}"))
    if new.closed and not old.closed:
        changes.append(Change(ChangeKind.CLOSED))

    changes.extend(_heartbeat_changes(old, new, {change.node for change in moved}))
    return changes


_LIST_NAMES = {"participant": "the participants", "waiting": "the wait list", "redundant": "the redundancy list"}


def _membership_changes(old: RendezvousSnapshot, new: RendezvousSnapshot) -> list[Change]:
    if (old.participants == new.participants and old.wait_list == new.wait_list
            and old.redundancy_list == new.redundancy_list):
        return []
    changes = []
    touched = (
        (old.participants.keys() ^ new.participants.keys())
        | (old.wait_list ^ new.wait_list)
        | (old.redundancy_list ^ new.redundancy_list)
        | {node for node, rank in new.participants.items() if old.participants.get(node, rank) != rank}
    )
    for node in sorted(touched, key=node_order):
        was, now = _lists_of(old, node), _lists_of(new, node)
        if was and not now:
            changes.append(Change(ChangeKind.LEFT, node, f"(was {_where(old, node, was)})"))
            continue
        entered, exited = now - was, was - now
        came_from = f"from {_LIST_NAMES[min(exited)]}" if exited else ""
        if "participant" in entered:
            # Until the round completes every participant holds torch's placeholder rank 0.
            rank = f"as rank {new.participants[node]}" if new.complete else ""
            detail = ", ".join(part for part in (rank, came_from) if part)
            changes.append(Change(ChangeKind.JOINED, node, detail))
        if "waiting" in entered:
            changes.append(Change(ChangeKind.WAITING, node, came_from))
        if "redundant" in entered:
            changes.append(Change(ChangeKind.REDUNDANT, node, came_from))
        if "participant" in was and "participant" in now and old.participants[node] != new.participants[node]:
            detail = (f"from {old.participants[node]} to {new.participants[node]}" if old.complete
                      else f"to {new.participants[node]}, assigned as the round completed")
            changes.append(Change(ChangeKind.RANK_CHANGED, node, detail))
        if not entered:
            still = f"(still on {_LIST_NAMES[min(now)]})"
            for left in sorted(exited):
                changes.append(Change(_LEFT_KIND[left], node, still))
    return changes


_LEFT_KIND = {
    "participant": ChangeKind.LEFT_PARTICIPANTS,
    "waiting": ChangeKind.LEFT_WAIT_LIST,
    "redundant": ChangeKind.LEFT_REDUNDANCY_LIST,
}


def _lists_of(snapshot: RendezvousSnapshot, node: Node) -> frozenset[str]:
    """The lists ``node`` is on; ordered by name, ``min`` of them is the most significant."""
    return frozenset(
        name for name, members in (
            ("participant", snapshot.participants), ("waiting", snapshot.wait_list),
            ("redundant", snapshot.redundancy_list),
        ) if node in members
    )


def _where(snapshot: RendezvousSnapshot, node: Node, lists: Iterable[str]) -> str:
    if "participant" in lists:
        return f"a participant with rank {snapshot.participants[node]}"
    return "waiting" if "waiting" in lists else "redundant"


def _heartbeat_changes(old: RendezvousSnapshot, new: RendezvousSnapshot, moved: set[Node | None]) -> list[Change]:
    if old.last_heartbeats == new.last_heartbeats:
        return []
    before, after = old.last_heartbeats, new.last_heartbeats
    beating = [node for node, moment in after.items() if before.get(node) != moment and node not in moved]
    stopped = [node for node in before.keys() - after.keys() if node not in moved]
    changes = [Change(ChangeKind.HEARTBEAT, node, f"sent a heartbeat at {_time(after[node])}") for node in beating]
    changes.extend(Change(ChangeKind.HEARTBEAT, node, "has no heartbeat any more") for node in stopped)
    changes.sort(key=lambda change: node_order(change.node))
    return changes


def heartbeat_changes(new: RendezvousSnapshot, nodes: Iterable[Node]) -> list[Change]:
    """The changes of a revision that only refreshed the heartbeats of ``nodes`` (what
    :func:`diff_states` gives for it, without comparing the rest of the state)."""
    changes = [Change(ChangeKind.HEARTBEAT, node, f"sent a heartbeat at {_time(new.last_heartbeats[node])}")
               for node in nodes]
    changes.sort(key=lambda change: node_order(change.node))
    return changes


def _created_detail(snapshot: RendezvousSnapshot) -> str:
    state = "closed" if snapshot.closed else "complete" if snapshot.complete else "open"
    return f"at round {snapshot.round} with {_count(snapshot.world_size)} ({state})"


def _count(participants: int) -> str:
    return f"{participants} participant{'' if participants == 1 else 's'}"


def _time(moment: datetime) -> str:
    return moment.isoformat(sep=" ", timespec="milliseconds")

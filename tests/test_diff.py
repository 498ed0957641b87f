"""rdzv.diff on the transitions torch's own rendezvous code makes: each step of a run, driven by
torch's ``_DistributedRendezvousOpExecutor`` actions on a shared state, pickled as the handler
writes it, decoded, and compared with the previous step."""

from __future__ import annotations

import pickle
from datetime import datetime, timedelta, timezone

import pytest
from torch.distributed.elastic.rendezvous.dynamic_rendezvous import (
    RendezvousSettings,
    RendezvousTimeout,
    _BackendRendezvousStateHolder,
    _DistributedRendezvousOpExecutor,
    _NodeDesc,
    _RendezvousState,
    _RendezvousStateHolder,
)

from rdzv.diff import Change, ChangeKind, diff_states, is_heartbeat_only
from rdzv.state import Node, RendezvousSnapshot, decode_state

SETTINGS = RendezvousSettings("job1", 2, 3, RendezvousTimeout(last_call=timedelta(seconds=30)),
                              timedelta(seconds=5), 3)
A, B, C, D = (_NodeDesc(f"host-{name}", 100 + i, 0) for i, name in enumerate("abcd"))


def node(desc: _NodeDesc) -> Node:
    return Node(desc.addr, desc.pid, desc.local_id)


class SharedState(_RendezvousStateHolder):
    """torch's state-holder interface over one in-process state, shared by all nodes; every
    ``mark_dirty`` (what the handler does before writing to the backend) keeps its pickle."""

    def __init__(self) -> None:
        self._state = _RendezvousState()
        self.writes: list[bytes] = []

    @property
    def state(self) -> _RendezvousState:
        return self._state

    def sync(self) -> None:
        return None

    def mark_dirty(self) -> None:
        self.writes.append(pickle.dumps(self._state))


class Run:
    """Applies torch's own actions, node by node, and diffs each write against the one before."""

    def __init__(self) -> None:
        self.holder = SharedState()
        self.snapshot: RendezvousSnapshot | None = None

    def act(self, desc: _NodeDesc, action: str) -> list[Change]:
        executor = _DistributedRendezvousOpExecutor(desc, self.holder, SETTINGS)
        executor._state = self.holder.state  # what executor.run() does before each action
        getattr(executor, f"_{action}")()
        self.holder.mark_dirty()
        previous, self.snapshot = self.snapshot, decode_state(self.holder.writes[-1])
        return diff_states(previous, self.snapshot)


def kinds(changes: list[Change]) -> list[tuple[str, str | None]]:
    return [(str(change.kind), None if change.node is None else str(change.node)) for change in changes]


def test_a_whole_run_as_torch_plays_it():
    run = Run()
    a, b, c, d = (str(node(x)) for x in (A, B, C, D))

    changes = run.act(A, "add_to_participants")
    assert kinds(changes) == [("created", None), ("joined", a)]
    assert changes[0].describe() == "The rendezvous state appeared at round 0 with 1 participant (open)."
    # The round is open: torch's placeholder rank 0 is not a rank, and is not told as one.
    assert changes[1].describe() == f"Node {a} joined the participants."

    changes = run.act(B, "add_to_participants")  # min_nodes reached: the last call starts
    assert kinds(changes) == [("joined", b), ("deadline_set", None)]
    assert changes[1].detail == run.snapshot.deadline.isoformat(sep=" ", timespec="milliseconds")

    changes = run.act(C, "add_to_participants")  # max_nodes reached: complete, ranks assigned
    assert kinds(changes) == [("rank_changed", b), ("joined", c), ("deadline_cleared", None), ("completed", None)]
    assert changes[0].describe() == f"Node {b} changed rank to 1, assigned as the round completed."
    assert changes[1].detail == "as rank 2"
    assert changes[3].describe() == "The rendezvous completed round 0 with 3 participants."

    changes = run.act(D, "add_to_redundancy_list")
    assert kinds(changes) == [("redundant", d)]

    changes = run.act(A, "keep_alive")
    assert kinds(changes) == [("heartbeat", a)] and is_heartbeat_only(changes)
    assert changes[0].describe().startswith(f"Node {a} sent a heartbeat at ")

    changes = run.act(C, "remove_from_participants")
    assert kinds(changes) == [("left", c)]
    assert changes[0].describe() == f"Node {c} left the rendezvous (was a participant with rank 2)."

    changes = run.act(D, "add_to_wait_list")  # torch moves it off the redundancy list
    assert kinds(changes) == [("waiting", d)]
    assert changes[0].describe() == f"Node {d} is waiting for the next round, from the redundancy list."

    assert kinds(run.act(A, "remove_from_participants")) == [("left", a)]
    changes = run.act(B, "remove_from_participants")  # the last one out: the next round starts
    assert kinds(changes) == [("round_advanced", None), ("reopened", None), ("left", b)]
    assert [change.describe() for change in changes[:2]] == [
        "The rendezvous moved from round 0 to round 1.", "The rendezvous reopened round 1 for nodes to join.",
    ]

    changes = run.act(D, "add_to_participants")
    assert kinds(changes) == [("joined", d)]
    assert changes[0].describe() == f"Node {d} joined the participants, from the wait list."

    changes = run.act(D, "remove_from_participants")
    assert kinds(changes) == [("left", d)]
    assert kinds(run.act(A, "mark_rendezvous_closed")) == [("closed", None)]
    assert run.act(A, "mark_rendezvous_closed") == []  # the same state again: nothing changed


def test_dead_nodes_removed_by_torchs_sanitizer_have_left():
    run = Run()
    for desc in (A, B, C):
        run.act(desc, "add_to_participants")
    run.act(D, "add_to_redundancy_list")
    state = run.holder.state
    state.last_heartbeats[B] -= timedelta(seconds=60)
    state.last_heartbeats[D] -= timedelta(seconds=60)
    before = decode_state(pickle.dumps(state))
    holder = _BackendRendezvousStateHolder(backend=None, settings=SETTINGS)  # _sanitize never calls the backend
    holder._state = state
    holder._sanitize()
    after = decode_state(pickle.dumps(state))
    assert kinds(diff_states(before, after)) == [("left", str(node(B))), ("left", str(node(D)))]
    assert before.stale() == {node(B), node(D)}


def test_moves_between_lists_and_partial_exits():
    a, b = node(A), node(B)
    base = RendezvousSnapshot(participants={a: 0}, wait_list={b})
    both = RendezvousSnapshot(participants={a: 0}, wait_list={a, b})
    assert kinds(diff_states(base, both)) == [("waiting", str(a))]
    assert kinds(diff_states(both, base)) == [("left_wait_list", str(a))]
    assert diff_states(both, base)[0].describe() == f"Node {a} left the wait list (still on the participants)."
    waiting_only = RendezvousSnapshot(wait_list={a, b})
    assert kinds(diff_states(both, waiting_only)) == [("left_participants", str(a))]
    redundant = RendezvousSnapshot(participants={a: 0}, redundancy_list={b})
    assert kinds(diff_states(base, redundant)) == [("redundant", str(b))]
    assert diff_states(base, redundant)[0].detail == "from the wait list"
    assert kinds(diff_states(redundant, base)) == [("waiting", str(b))]
    with_both = RendezvousSnapshot(participants={a: 0}, wait_list={b}, redundancy_list={b})
    assert kinds(diff_states(with_both, base)) == [("left_redundancy_list", str(b))]


def test_heartbeats_alone_and_with_other_changes():
    a, b = node(A), node(B)
    t = datetime(2024, 5, 1, tzinfo=timezone.utc)
    old = RendezvousSnapshot(participants={a: 0, b: 1}, last_heartbeats={a: t, b: t})
    beat = RendezvousSnapshot(participants={a: 0, b: 1}, last_heartbeats={a: t, b: t + timedelta(seconds=5)})
    assert kinds(diff_states(old, beat)) == [("heartbeat", str(b))] and is_heartbeat_only(diff_states(old, beat))
    gone = RendezvousSnapshot(participants={a: 0, b: 1}, last_heartbeats={a: t})
    assert diff_states(old, gone)[0].describe() == f"Node {b} has no heartbeat any more."
    left = RendezvousSnapshot(participants={a: 0}, last_heartbeats={a: t + timedelta(seconds=1)})
    assert kinds(diff_states(old, left)) == [("left", str(b)), ("heartbeat", str(a))]
    assert not is_heartbeat_only(diff_states(old, left))
    assert not is_heartbeat_only([])
    assert diff_states(old, old) == []


def test_kinds_are_strings_and_every_kind_has_a_sentence():
    assert ChangeKind.JOINED == "joined" and str(ChangeKind.JOINED) == "joined" and f"{ChangeKind.LEFT}" == "left"
    for kind in ChangeKind:
        sentence = Change(kind, node(A), "x").describe()
        assert sentence.endswith(".") and "{" not in sentence


def test_created_closed_and_complete():
    a = node(A)
    closed = RendezvousSnapshot(round=4, complete=True, closed=True, participants={a: 0})
    assert kinds(diff_states(None, closed)) == [("created", None), ("joined", str(a)), ("completed", None),
                                                ("closed", None)]
    assert diff_states(None, closed)[0].detail == "at round 4 with 1 participant (closed)"


@pytest.mark.parametrize("size", [100, 1000])
def test_large_snapshots_diff_to_just_what_changed(size):
    nodes = [Node(f"node-{i:05d}", 1000 + i, 0) for i in range(size)]
    t = datetime(2024, 5, 1, tzinfo=timezone.utc)
    old = RendezvousSnapshot(round=1, complete=True, participants={n: i for i, n in enumerate(nodes)},
                             last_heartbeats=dict.fromkeys(nodes, t))
    beats = dict(old.last_heartbeats)
    beats[nodes[7]] = t + timedelta(seconds=5)
    new = RendezvousSnapshot(round=1, complete=True, participants=old.participants, last_heartbeats=beats)
    assert kinds(diff_states(old, new)) == [("heartbeat", str(nodes[7]))]
    assert len(diff_states(None, old)) == size + 2  # created, completed, and every participant joined

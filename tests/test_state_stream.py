"""The cheap path for heartbeat-only revisions gives exactly what the full decoder gives, takes the
full path for anything else, and refuses what the full decoder refuses."""

from __future__ import annotations

import pickle
import random
from datetime import datetime, timedelta, timezone

import pytest
from torch.distributed.elastic.rendezvous.dynamic_rendezvous import _NodeDesc, _RendezvousState

from rdzv.diff import diff_states, heartbeat_changes
from rdzv.rendezvous_settings import RendezvousSettings
from rdzv.state import UndecodableStateError, decode_state
from rdzv.state_stream import StateStream

START = datetime(2026, 1, 1, 12, tzinfo=timezone.utc)


def torch_state(count: int) -> tuple[_RendezvousState, list[_NodeDesc]]:
    state = _RendezvousState()
    nodes = [_NodeDesc(f"host-{index}", 100 + index, 0) for index in range(count)]
    for index, node in enumerate(nodes):
        state.participants[node] = 0
        state.last_heartbeats[node] = START + timedelta(milliseconds=index)
    return state, nodes


def test_heartbeat_only_revisions_take_the_cheap_path_and_match_the_full_decoder():
    random.seed(7)
    state, nodes = torch_state(50)
    stream = StateStream("run")
    previous, _ = stream.decode(pickle.dumps(state))
    for step in range(300):
        beating = random.sample(nodes, random.choice((1, 1, 1, 3)))
        for node in beating:
            state.last_heartbeats[node] = START + timedelta(seconds=step + 1, microseconds=random.randrange(10 ** 6))
        data = pickle.dumps(state)
        previous.stale_count(START)  # what a snapshot works out from its heartbeats is not carried over
        snapshot, heartbeats = stream.decode(data)
        assert snapshot == decode_state(data)
        assert heartbeats is not None and {node.addr for node in heartbeats} == {node.addr for node in beating}
        assert heartbeat_changes(snapshot, heartbeats) == diff_states(previous, snapshot)
        moment = START + timedelta(seconds=step // 2) + RendezvousSettings().heartbeat_expiry
        assert snapshot.stale_count(moment) == decode_state(data).stale_count(moment) == len(snapshot.stale(moment))
        previous = snapshot
    assert stream.patched == 300


def test_anything_but_heartbeats_takes_the_full_path():
    state, nodes = torch_state(10)
    stream = StateStream("run")
    stream.decode(pickle.dumps(state))
    state.participants[nodes[3]] = 3  # a rank: same length, a byte outside any datetime
    state.complete = True
    data = pickle.dumps(state)
    snapshot, heartbeats = stream.decode(data)
    assert heartbeats is None and stream.patched == 0 and snapshot == decode_state(data)
    state.deadline = START + timedelta(seconds=30)  # a deadline appears: another length
    snapshot, heartbeats = stream.decode(pickle.dumps(state))
    assert heartbeats is None and snapshot.deadline == state.deadline
    state.deadline = START + timedelta(seconds=31)  # the deadline moves: cheap, but not heartbeat-only
    snapshot, heartbeats = stream.decode(pickle.dumps(state))
    assert heartbeats is None and stream.patched == 1 and snapshot.deadline == state.deadline


def test_equal_instants_are_not_patched_by_guesswork():
    state, nodes = torch_state(4)
    state.last_heartbeats[nodes[1]] = state.last_heartbeats[nodes[0]]  # two nodes, one instant
    stream = StateStream("run")
    stream.decode(pickle.dumps(state))
    state.last_heartbeats[nodes[1]] = START + timedelta(seconds=5)
    data = pickle.dumps(state)
    snapshot, heartbeats = stream.decode(data)
    assert snapshot == decode_state(data) and stream.patched == 0


def test_a_corrupted_datetime_is_refused_as_the_full_decoder_refuses_it():
    state, nodes = torch_state(3)
    stream = StateStream("run")
    good = pickle.dumps(state)
    stream.decode(good)
    payload = pickle.dumps(state.last_heartbeats[nodes[2]])[-40:]
    moment_bytes = state.last_heartbeats[nodes[2]].__reduce__()[1][0]
    offset = good.rindex(moment_bytes)
    broken = bytearray(good)
    broken[offset + 2] = 13  # month 13
    with pytest.raises(UndecodableStateError) as full:
        decode_state(bytes(broken), run_id="run")
    with pytest.raises(UndecodableStateError) as cheap:
        stream.decode(bytes(broken))
    assert str(cheap.value) == str(full.value) and payload
    assert stream.decode(good)[0] == decode_state(good)  # the stream carries on after a refusal

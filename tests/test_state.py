"""rdzv.state: states pickled by torch's own classes (and by a real handler on torch's own etcd-v2
backend) decode field for field into immutable snapshots, without torch, and bad bytes of every
kind are refused with one clear error."""

from __future__ import annotations

import base64
import dataclasses
import json
import os
import pickle
import resource
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone

import pytest
from conftest import subprocess_env
from rendezvous_helpers import params, rendezvous_all, torch_handler
from torch.distributed.elastic.rendezvous.api import RendezvousTimeoutError
from torch.distributed.elastic.rendezvous.dynamic_rendezvous import (
    RendezvousSettings,
    RendezvousTimeout,
    _BackendRendezvousStateHolder,
    _NodeDesc,
    _RendezvousState,
)

from rdzv.diff import diff_states
from rdzv.rendezvous_settings import RendezvousSettings as RdzvSettings
from rdzv.state import (
    MAX_NESTING,
    MAX_OPERATIONS,
    MAX_STATE_BYTES,
    Node,
    RendezvousSnapshot,
    UndecodableStateError,
    decode_state,
    decode_state_b64,
)

A, B, C, D = (_NodeDesc(f"host-{name}.example.com", 1000 + i, i) for i, name in enumerate("abcd"))


def as_node(desc: _NodeDesc) -> Node:
    return Node(desc.addr, desc.pid, desc.local_id)


def torch_state(**fields) -> _RendezvousState:
    """A state as torch's handler leaves it after a completed round with a waiting and a
    redundant node: ranks by sorted node, aware UTC heartbeats, a deadline."""
    now = datetime.now(timezone.utc)
    state = _RendezvousState()
    state.round = 3
    state.complete = True
    state.deadline = now + timedelta(seconds=30)
    state.participants = {node: rank for rank, node in enumerate(sorted([B, A]))}
    state.wait_list = {C}
    state.redundancy_list = {D}
    state.last_heartbeats = {node: now - timedelta(seconds=i) for i, node in enumerate([A, B, C, D])}
    for name, value in fields.items():
        setattr(state, name, value)
    return state


def assert_same(snapshot: RendezvousSnapshot, state: _RendezvousState) -> None:
    assert snapshot.round == state.round
    assert snapshot.complete is state.complete
    assert snapshot.closed is state.closed
    assert snapshot.deadline == state.deadline
    assert dict(snapshot.participants) == {as_node(n): rank for n, rank in state.participants.items()}
    assert snapshot.wait_list == frozenset(map(as_node, state.wait_list))
    assert snapshot.redundancy_list == frozenset(map(as_node, state.redundancy_list))
    assert dict(snapshot.last_heartbeats) == {as_node(n): t for n, t in state.last_heartbeats.items()}


# --- real torch states --------------------------------------------------------------------


def test_every_field_of_a_torch_state_is_decoded():
    state = torch_state()
    snapshot = decode_state(pickle.dumps(state))
    assert_same(snapshot, state)
    assert all(t.tzinfo is not None for t in snapshot.last_heartbeats.values())


def test_a_new_torch_state_is_the_default_snapshot():
    assert decode_state(pickle.dumps(_RendezvousState())) == RendezvousSnapshot()


@pytest.mark.parametrize("protocol", range(4, pickle.HIGHEST_PROTOCOL + 1))
def test_every_protocol_torch_may_use(protocol):
    state = torch_state()
    assert_same(decode_state(pickle.dumps(state, protocol=protocol)), state)


def test_etcd_value_base64_str_and_bytes():
    data = pickle.dumps(torch_state())
    expected = decode_state(data)
    encoded = base64.b64encode(data)
    assert decode_state_b64(encoded.decode()) == expected
    assert decode_state_b64(encoded) == expected
    assert decode_state(bytearray(data)) == decode_state(memoryview(data)) == expected


def test_closed_state_with_a_pending_round():
    state = torch_state(complete=False, closed=True, deadline=None, wait_list=set(), redundancy_list=set())
    assert_same(decode_state(pickle.dumps(state)), state)


def test_a_node_in_two_places_stays_one_node():
    """torch adds its own _NodeDesc objects to a state it unpickled: equal but distinct objects."""
    state = torch_state()
    twin = _NodeDesc(A.addr, A.pid, A.local_id)
    state.wait_list = {twin, C}
    state.last_heartbeats[twin] = state.last_heartbeats.pop(A)
    snapshot = decode_state(pickle.dumps(state))
    assert snapshot.membership(as_node(A)) == "participant" and as_node(A) in snapshot.wait_list
    assert len(snapshot.nodes) == 4


def test_a_state_from_before_redundancy_lists_decodes():
    state = torch_state()
    del state.redundancy_list
    snapshot = decode_state(pickle.dumps(state))
    assert snapshot.redundancy_list == frozenset() and snapshot.world_size == 2


def test_naive_datetimes_are_read_as_utc():
    moment = datetime(2024, 5, 1, 12, 0, 0)
    snapshot = decode_state(pickle.dumps(torch_state(deadline=moment, last_heartbeats={A: moment})))
    assert snapshot.deadline == moment.replace(tzinfo=timezone.utc)
    assert snapshot.last_heartbeats[as_node(A)] == moment.replace(tzinfo=timezone.utc)


def test_the_same_bytes_give_the_same_snapshot_without_torch_and_torch_is_never_imported(tmp_path):
    state_file = tmp_path / "state.b64"
    data = pickle.dumps(torch_state())
    state_file.write_bytes(base64.b64encode(data))
    script = (
        "import json, sys\n"
        "import rdzv.state, rdzv.diff\n"
        f"snapshot = rdzv.state.decode_state_b64(open({str(state_file)!r}).read(), run_id='job1')\n"
        "rdzv.diff.diff_states(None, snapshot)\n"
        "assert not [m for m in sys.modules if m == 'torch' or m.startswith('torch.')], 'torch was imported'\n"
        "print(json.dumps(snapshot.to_dict()))\n"
    )
    result = subprocess.run([sys.executable, "-c", script], env=subprocess_env(), capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == decode_state(data).to_dict()


def etcd_history(client, key: str) -> list[str]:
    """Every value ``key`` has had, oldest first, from etcd v2's event log."""
    current = client.read(key)
    values, index = [], current.createdIndex
    while index <= current.modifiedIndex:
        event = client.read(key, wait=True, waitIndex=index, timeout=10)
        values.append(event.value)
        index = event.modifiedIndex + 1
    return values


@pytest.mark.timeout(120)
def test_states_written_by_torchs_handler_on_torchs_own_etcd_backend(etcd_server, unique, monkeypatch):
    monkeypatch.setenv("TORCH_DISABLE_SHARE_RDZV_TCP_STORE", "1")
    client, key = etcd_server.get_client(), f"/torch/elastic/rendezvous/{unique}"
    first = torch_handler(params(etcd_server.get_endpoint(), unique, backend="etcd-v2", min_nodes=1, max_nodes=2))
    (info,) = rendezvous_all([first])

    history = [decode_state_b64(value, run_id=unique) for value in etcd_history(client, key)]
    for snapshot, value in zip(history, etcd_history(client, key)):
        assert_same(snapshot, pickle.loads(base64.b64decode(value)))  # torch's own reading of torch's bytes
    me = as_node(first._this_node)
    assert me.addr == "127.0.0.1" and me.pid == os.getpid()
    assert history[0].participants == {me: 0} and history[0].deadline is not None and not history[0].complete
    final = history[-1]
    assert final.complete and final.ranked() == ((me, info.rank),) and final.deadline is None
    assert timedelta(0) <= final.heartbeat_age(me) < timedelta(seconds=60) and not final.stale()
    changes = [change for old, new in zip([None, *history], history) for change in diff_states(old, new)]
    assert [str(change.kind) for change in changes if change.kind != "heartbeat"] == [
        "created", "joined", "deadline_set", "deadline_cleared", "completed",
    ]

    # A second node finds the round complete and waits for the next one, until its join times out.
    second = torch_handler(params(etcd_server.get_endpoint(), unique, backend="etcd-v2", min_nodes=1, max_nodes=2,
                                  join_timeout=3))
    with ThreadPoolExecutor(1) as pool, pytest.raises(RendezvousTimeoutError):
        pool.submit(second.next_rendezvous).result(timeout=60)
    seen = [decode_state_b64(value, run_id=unique) for value in etcd_history(client, key)]
    assert any(snapshot.membership(as_node(second._this_node)) == "waiting" for snapshot in seen)

    assert first.shutdown()
    closed = decode_state_b64(client.read(key).value, run_id=unique)
    assert closed.closed and closed.membership(as_node(second._this_node)) is None


# --- the snapshot ---------------------------------------------------------------------------


def test_node_prints_and_orders_like_torchs():
    descs = [C, _NodeDesc("host-a.example.com", 5, 9), A, _NodeDesc("host-a.example.com", 1000, 1), B]
    assert [str(as_node(d)) for d in descs] == [repr(d) for d in descs]
    assert [as_node(d) for d in sorted(descs)] == sorted(map(as_node, descs))


def test_ranked_membership_and_world_size():
    snapshot = decode_state(pickle.dumps(torch_state()))
    assert snapshot.world_size == 2
    assert snapshot.ranked() == ((as_node(A), 0), (as_node(B), 1))
    assert [snapshot.membership(as_node(n)) for n in (A, B, C, D)] == ["participant", "participant", "waiting",
                                                                       "redundant"]
    assert snapshot.membership(Node("elsewhere", 1, 0)) is None
    assert snapshot.nodes == frozenset(map(as_node, (A, B, C, D)))


def test_heartbeat_age():
    beat = datetime(2024, 5, 1, 12, 0, 0, tzinfo=timezone.utc)
    snapshot = decode_state(pickle.dumps(torch_state(last_heartbeats={A: beat})))
    assert snapshot.heartbeat_age(as_node(A), beat + timedelta(seconds=7)) == timedelta(seconds=7)
    assert snapshot.heartbeat_age(as_node(A), datetime(2024, 5, 1, 12, 0, 2)) == timedelta(seconds=2)  # naive: UTC
    assert snapshot.heartbeat_age(as_node(B), beat) is None
    assert snapshot.heartbeat_age(as_node(A)) > timedelta(days=1)  # default: now


def test_stale_follows_torchs_rule():
    beat = datetime(2024, 5, 1, 12, 0, 0, tzinfo=timezone.utc)
    snapshot = decode_state(pickle.dumps(torch_state(last_heartbeats={A: beat, B: beat - timedelta(seconds=10)})))
    assert snapshot.stale(beat + timedelta(seconds=5)) == frozenset()
    assert snapshot.stale(beat + timedelta(seconds=6)) == {as_node(B)}  # 16 s > 5 s * 3
    assert snapshot.stale(beat + timedelta(seconds=15)) == {as_node(B)}  # exactly 15 s: still alive
    assert snapshot.stale(beat + timedelta(seconds=16)) == {as_node(A), as_node(B)}
    assert snapshot.stale(beat + timedelta(seconds=2), RdzvSettings(keep_alive_interval=1, keep_alive_max_attempt=2)) == {as_node(B)}
    assert snapshot.stale(beat + timedelta(seconds=3), RdzvSettings(keep_alive_interval=4, keep_alive_max_attempt=3)) == {as_node(B)}
    for seconds in (5, 6, 15, 15.000001, 16):  # the count, by bisection, agrees at and around each cut-off
        for settings in (None, RdzvSettings(keep_alive_interval=1, keep_alive_max_attempt=2)):
            at = beat + timedelta(seconds=seconds)
            assert snapshot.stale_count(at, settings) == len(snapshot.stale(at, settings)), (seconds, settings)


def test_stale_agrees_with_torchs_own_sanitizer():
    now = datetime.now(timezone.utc)
    state = torch_state(last_heartbeats={A: now, B: now - timedelta(seconds=60), C: now - timedelta(seconds=2),
                                         D: now - timedelta(seconds=30)})
    snapshot = decode_state(pickle.dumps(state))
    settings = RendezvousSettings("job1", 1, 4, RendezvousTimeout(), timedelta(seconds=5), 3)
    holder = _BackendRendezvousStateHolder(backend=None, settings=settings)  # _sanitize never calls the backend
    holder._state = state
    holder._sanitize()
    assert snapshot.stale() == frozenset(map(as_node, holder._dead_nodes)) == {as_node(B), as_node(D)}


def test_to_dict_is_json_and_round_trips():
    snapshot = decode_state(pickle.dumps(torch_state()))
    data = json.loads(json.dumps(snapshot.to_dict()))
    assert data["participants"][1] == {"addr": B.addr, "pid": B.pid, "local_id": B.local_id, "rank": 1}
    assert data["wait_list"] == [{"addr": C.addr, "pid": C.pid, "local_id": C.local_id}]
    assert RendezvousSnapshot.from_dict(data) == snapshot


def test_snapshots_are_immutable_copies():
    participants = {as_node(A): 0}
    snapshot = RendezvousSnapshot(participants=participants, wait_list={as_node(B)})
    participants[as_node(C)] = 1
    assert dict(snapshot.participants) == {as_node(A): 0}
    with pytest.raises(TypeError):
        snapshot.participants[as_node(C)] = 1  # type: ignore[index]
    with pytest.raises(dataclasses.FrozenInstanceError):
        snapshot.round = 4  # type: ignore[misc]
    assert isinstance(snapshot.wait_list, frozenset)
    with pytest.raises(dataclasses.FrozenInstanceError):
        as_node(A).pid = 1  # type: ignore[misc]


def test_equal_snapshots_are_equal_and_hash_alike():
    data = pickle.dumps(torch_state())
    first, second = decode_state(data), decode_state(data)
    assert first == second and hash(first) == hash(second) and len({first, second}) == 1
    assert first != RendezvousSnapshot() and "participants=2" in repr(first)


def test_nodes_survive_pickling_between_processes():
    node = as_node(A)
    assert pickle.loads(pickle.dumps(node)) == node and hash(pickle.loads(pickle.dumps(node))) == hash(node)


# --- refusals ----------------------------------------------------------------------------------


class RunsCommand:
    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


def refusal(data: bytes) -> str:
    with pytest.raises(UndecodableStateError) as info:
        decode_state(data, run_id="job1")
    return info.value.reason


def test_error_is_one_sentence_naming_the_run_and_what_to_do():
    with pytest.raises(UndecodableStateError) as info:
        decode_state(pickle.dumps(torch_state())[:-9], run_id="job1")
    message = str(info.value)
    assert message == (
        "The rendezvous state of run 'job1' is undecodable (truncated pickle); it is not a state written by "
        "torch's DynamicRendezvousHandler, so find what wrote it or delete it to start the run afresh."
    )
    assert isinstance(info.value, ValueError) and info.value.run_id == "job1" and message.count(". ") == 0
    with pytest.raises(UndecodableStateError, match=r"^The rendezvous state is undecodable \(not base64\)"):
        decode_state_b64("not base64!")


def test_no_code_from_the_bytes_runs(tmp_path):
    canary = tmp_path / "CANARY"
    data = pickle.dumps(torch_state(round=RunsCommand(f"touch {canary}")))
    assert refusal(data) == f"forbidden global '{os.system.__module__}.system'"
    assert not canary.exists()
    pickle.loads(data)  # the payload is live: plain pickle runs it
    assert canary.exists()


@pytest.mark.parametrize(
    "data, reason",
    [
        (b"", "not a pickle of protocol 4 or later"),
        (b"{'round': 3}", "not a pickle of protocol 4 or later"),
        (pickle.dumps(torch_state(), protocol=2), "not a pickle of protocol 4 or later"),
        (pickle.dumps(torch_state()) + b"\x00", "bytes after the end of the pickle"),
        (pickle.dumps([1, 2]), "the pickle holds list, not a _RendezvousState"),
        (pickle.dumps(A), "the pickle holds _NodeDesc, not a _RendezvousState"),
        (b"\x80\x04N" + b"r\xff\xff\xff\x7f" + b".", "a memo index out of sequence"),
        (b"\x80\x04K\x01P" + b"." , "unsupported pickle opcode 0x50"),
        (b"\x80\x04\x8c\x08builtins\x8c\x04eval\x93.", "forbidden global 'builtins.eval'"),
        (b"\x80\x04\x8c\x08datetime\x8c\x10datetime.__new__\x93.", "forbidden global 'datetime.datetime.__new__'"),
    ],
)
def test_refusals_say_what_is_wrong(data, reason):
    assert refusal(data) == reason


@pytest.mark.parametrize(
    "fields, reason",
    [
        ({"round": "3"}, "'round' is str, expected int"),
        ({"round": True}, "'round' is bool, expected int"),
        ({"round": 2**64}, "'round' is out of the 64-bit range"),
        ({"complete": 1}, "'complete' is int, expected bool"),
        ({"deadline": "soon"}, "'deadline' is str, expected datetime or None"),
        ({"participants": [A, B]}, "'participants' is list, expected dict"),
        ({"participants": {A: "0"}}, "a participant's rank is str, expected int"),
        ({"participants": {"host-a": 0}}, "'participants' holds str, expected _NodeDesc"),
        ({"wait_list": [C]}, "'wait_list' is list, expected set or frozenset"),
        ({"redundancy_list": {D: 1}}, "'redundancy_list' is dict, expected set or frozenset"),
        ({"last_heartbeats": {A: 5.0}}, "a heartbeat is float, expected datetime"),
        ({"participants": {_NodeDesc(7, 1, 0): 0}}, "a _NodeDesc's 'addr' is int, expected str"),
        ({"participants": {_NodeDesc("h", "1", 0): 0}}, "a _NodeDesc's 'pid' is str, expected int"),
    ],
)
def test_wrong_field_types_are_refused(fields, reason):
    assert refusal(pickle.dumps(torch_state(**fields))) == reason


def test_missing_fields_are_refused():
    state = torch_state()
    del state.participants
    assert refusal(pickle.dumps(state)) == "a _RendezvousState without 'participants'"
    renamed = pickle.dumps(torch_state()).replace(b"\x8c\x03pid", b"\x8c\x03pig")
    assert refusal(renamed) == "a _NodeDesc without 'pid'"


def test_size_limits():
    too_big = b"\x80\x04" + b"N" * MAX_STATE_BYTES
    assert refusal(too_big) == "larger than 64 MiB"
    assert refusal(b"\x80\x04" + b"]" * MAX_OPERATIONS + b".") == "more than 4,000,000 pickle operations"
    with pytest.raises(UndecodableStateError, match="larger than 64 MiB"):
        decode_state_b64(base64.b64encode(too_big))


def deep_tuple_as_dict_key(depth: int) -> bytes:
    """A dict whose key is a tuple nested ``depth`` deep: hashing it overflows CPython's C stack."""
    return b"\x80\x04}" + b")" + b"\x85" * depth + b"Ns."


def no_core_dumps() -> None:
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def test_nesting_limit_stops_what_would_crash_the_interpreter():
    data = deep_tuple_as_dict_key(300_000)
    assert refusal(data) == f"nested deeper than {MAX_NESTING} levels"
    crash = subprocess.run([sys.executable, "-c", "import pickle, sys; pickle.loads(sys.stdin.buffer.read())"],
                           input=data, capture_output=True, timeout=60, preexec_fn=no_core_dumps)
    assert crash.returncode != 0  # plain pickle cannot load these bytes: SIGSEGV on CPython 3.11


def test_deep_payloads_are_refused_in_a_thread_with_a_small_stack():
    payloads = [deep_tuple_as_dict_key(200_000), b"\x80\x04" + b"]" * 200_000 + b"a" * 199_999 + b".",
                b"\x80\x04" + b"(" * 200_000 + b"(\x91" + b"\x91" * 200_000 + b"."]
    reasons: list[str] = []

    def decode_all() -> None:
        for data in payloads:
            try:
                decode_state(data)
            except UndecodableStateError as exc:
                reasons.append(exc.reason)

    previous = threading.stack_size(256 * 1024)
    try:
        worker = threading.Thread(target=decode_all)
        worker.start()
    finally:
        threading.stack_size(previous)
    worker.join(60)
    assert reasons == [f"nested deeper than {MAX_NESTING} levels"] * 3


def test_type_errors_for_what_is_not_bytes():
    with pytest.raises(TypeError, match="bytes, not str"):
        decode_state("gASV")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="str or bytes, not NoneType"):
        decode_state_b64(None)  # type: ignore[arg-type]

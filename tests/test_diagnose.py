"""rdzv.diagnosis on hand-built states: every code, its severity, its ``at``, its nodes and the
numbers in its message; a few checks against torch's own rules (its join op, its ``_sanitize``)
on the same states; and the module never imports torch."""

from __future__ import annotations

import json
import pickle
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone

import pytest
from conftest import subprocess_env

from rdzv.diagnosis import CODES, NAMED_WRITERS, STATE_TTL, Finding, diagnose, headline
from rdzv.rendezvous_settings import RendezvousSettings
from rdzv.state import Node, RendezvousSnapshot, UndecodableStateError, decode_state

NOW = datetime(2026, 1, 1, 12, 0, tzinfo=timezone.utc)
A, B, C, D, E = (Node(f"host-{name}", 100 + index, 0) for index, name in enumerate("abcde"))
KNOWN = RendezvousSettings.from_torchrun(
    "2:4", "join_timeout=600,last_call_timeout=30,keep_alive_interval=5,keep_alive_max_attempt=3")


def ago(seconds: float) -> datetime:
    return NOW - timedelta(seconds=seconds)


def beats(*pairs: tuple[Node, float]) -> dict[Node, datetime]:
    """Heartbeats ``seconds`` before NOW."""
    return {node: ago(seconds) for node, seconds in pairs}


def only(findings: tuple[Finding, ...], code: str) -> Finding:
    found = [finding for finding in findings if finding.code == code]
    assert len(found) == 1, [f.code for f in findings]
    return found[0]


def codes(findings: tuple[Finding, ...]) -> list[str]:
    return [finding.code for finding in findings]


def test_importing_and_running_the_diagnosis_never_imports_torch():
    script = (
        "import sys\n"
        "from datetime import datetime, timezone\n"
        "import rdzv.diagnosis\n"
        "from rdzv.rendezvous_settings import RendezvousSettings\n"
        "from rdzv.state import RendezvousSnapshot\n"
        "rdzv.diagnosis.diagnose(RendezvousSnapshot(), RendezvousSettings(), datetime.now(timezone.utc))\n"
        "assert not [m for m in sys.modules if m == 'torch' or m.startswith('torch.')], 'torch was imported'\n"
    )
    result = subprocess.run([sys.executable, "-c", script], env=subprocess_env(), capture_output=True, text=True,
                            timeout=60, check=False)
    assert result.returncode == 0, result.stderr


# -- no state, undecodable ---------------------------------------------------------------------


def test_no_state_is_a_round_forming_with_nobody_joined():
    findings = diagnose(None, KNOWN, NOW)
    assert codes(findings) == ["forming"]
    forming = findings[0]
    assert forming.severity == "info" and forming.at is None and forming.nodes == ()
    assert "0 of 2 nodes" in forming.message and "2 more are needed" in forming.message
    assert "12:10:00 UTC" in forming.next  # every agent waiting now gives up within join_timeout


def test_undecodable_state_names_the_refused_check():
    findings = diagnose(UndecodableStateError("forbidden global 'posix.system'"), KNOWN, NOW)
    assert codes(findings) == ["undecodable"]
    assert findings[0].severity == "error" and findings[0].at is None
    assert "forbidden global 'posix.system'" in findings[0].message
    assert "RendezvousStateError" in findings[0].next


def test_anything_else_is_refused():
    with pytest.raises(TypeError):
        diagnose(b"bytes", KNOWN, NOW)  # type: ignore[arg-type]


# -- rounds ---------------------------------------------------------------------------------


def test_forming_counts_who_joined_and_how_many_more_are_needed_and_shows_no_rank():
    settings = RendezvousSettings.from_torchrun("4:8", "join_timeout=300,keep_alive_interval=5,"
                                                "keep_alive_max_attempt=3")
    snapshot = RendezvousSnapshot(round=2, participants={B: 0, A: 0}, last_heartbeats=beats((A, 1), (B, 2)))
    forming = only(diagnose(snapshot, settings, NOW), "forming")
    assert forming.severity == "info" and forming.at is None
    assert forming.nodes == (A, B)
    assert "2 of 4 nodes have joined round 2; 2 more are needed before the last call can start" in forming.message
    assert "rank" not in forming.message
    assert "5 min" in forming.next and "12:05:00 UTC" in forming.next and "RendezvousTimeoutError" in forming.next


def test_forming_with_min_equal_to_max_completes_rather_than_starting_a_last_call():
    settings = RendezvousSettings.from_torchrun("3", "join_timeout=600")
    snapshot = RendezvousSnapshot(participants={A: 0}, last_heartbeats=beats((A, 1)))
    assert "2 more are needed to complete the round" in only(diagnose(snapshot, settings, NOW), "forming").message


def test_a_dead_participant_does_not_count_towards_min_nodes():
    # torch's participants judge the round on their _sanitize'd copy: the dead are gone, and
    # below min_nodes the deadline with them.
    snapshot = RendezvousSnapshot(participants={A: 0, B: 0}, deadline=NOW + timedelta(seconds=20),
                                  last_heartbeats=beats((A, 1), (B, 40)))
    findings = diagnose(snapshot, KNOWN, NOW)
    forming = only(findings, "forming")
    assert "1 of 2 nodes has joined round 0 (not counting 1 dead node); 1 more is needed" in forming.message
    assert forming.nodes == (A,)
    assert "last-call" not in codes(findings)


def test_last_call_completes_at_the_deadline_or_at_once_at_max():
    deadline = NOW + timedelta(seconds=20)
    snapshot = RendezvousSnapshot(participants={C: 0, A: 0, B: 0}, deadline=deadline,
                                  last_heartbeats=beats((A, 1), (B, 2), (C, 3)))
    findings = diagnose(snapshot, KNOWN, NOW)
    assert codes(findings) == ["last-call"]
    last_call = findings[0]
    assert last_call.severity == "info" and last_call.at == deadline and last_call.nodes == (A, B, C)
    assert "3 nodes have joined round 0, at least the minimum of 2" in last_call.message
    assert "12:00:20 UTC" in last_call.message and "1 more joins (the maximum is 4)" in last_call.message
    assert "rank 0" not in last_call.message + last_call.next


def test_last_call_past_its_deadline_is_completed_by_the_next_participant_to_read():
    snapshot = RendezvousSnapshot(participants={A: 0, B: 0}, deadline=ago(3), last_heartbeats=beats((A, 1), (B, 2)))
    last_call = only(diagnose(snapshot, KNOWN, NOW), "last-call")
    assert last_call.at == ago(3)
    assert "ended at 11:59:57 UTC, 3 s ago" in last_call.message and "completes the round" in last_call.message


def test_enough_participants_but_no_deadline_means_other_settings():
    snapshot = RendezvousSnapshot(participants={A: 0, B: 0, C: 0}, last_heartbeats=beats((A, 1), (B, 1), (C, 1)))
    last_call = only(diagnose(snapshot, KNOWN, NOW), "last-call")
    assert last_call.severity == "warning" and last_call.at is None
    assert "only once 4 have joined" in last_call.message


def test_without_min_nodes_the_deadline_still_tells_a_last_call_from_forming():
    unknown = RendezvousSettings()
    open_round = RendezvousSnapshot(participants={A: 0}, last_heartbeats=beats((A, 1)))
    forming = only(diagnose(open_round, unknown, NOW), "forming")
    assert "1 node has joined round 0" in forming.message and "not known without min_nodes" in forming.message
    deadline = NOW + timedelta(seconds=5)
    calling = RendezvousSnapshot(participants={A: 0}, deadline=deadline, last_heartbeats=beats((A, 1)))
    assert only(diagnose(calling, unknown, NOW), "last-call").at == deadline


def test_complete_gives_world_size_and_ranks_in_rank_order():
    snapshot = RendezvousSnapshot(round=5, complete=True, participants={C: 2, A: 0, B: 1},
                                  last_heartbeats=beats((A, 1), (B, 2), (C, 3)))
    findings = diagnose(snapshot, KNOWN, NOW)
    assert codes(findings) == ["complete"]
    complete = findings[0]
    assert complete.severity == "info" and complete.at is None and complete.nodes == (A, B, C)
    assert complete.message == "Round 5 is complete: 3 nodes, with ranks 0 to 2 in node order."
    assert "round 6" in complete.next and "1 more fit" in complete.next


def test_a_rank_gone_from_a_completed_round_does_not_end_it():
    snapshot = RendezvousSnapshot(round=1, complete=True, participants={A: 0, C: 2, D: 3},
                                  last_heartbeats=beats((A, 1), (C, 1), (D, 1)))
    complete = only(diagnose(snapshot, KNOWN, NOW), "complete")
    assert complete.severity == "warning"
    assert "at least 4 nodes, but 3 remain: rank 1 left" in complete.message
    assert "111646" in complete.next and "round 2" in complete.next


def test_a_rank_gone_while_nodes_wait_is_a_re_rendezvous_under_way():
    snapshot = RendezvousSnapshot(round=1, complete=True, participants={A: 0, C: 2}, wait_list={B},
                                  last_heartbeats=beats((A, 1), (B, 1), (C, 1)))
    assert only(diagnose(snapshot, KNOWN, NOW), "complete").severity == "info"


# -- the lists ----------------------------------------------------------------------------------


def test_nodes_waiting_on_a_completed_round_trigger_the_next_round():
    snapshot = RendezvousSnapshot(round=3, complete=True, participants={A: 0, B: 1}, wait_list={D, C},
                                  last_heartbeats=beats((A, 1), (B, 1), (C, 1), (D, 1)))
    findings = diagnose(snapshot, KNOWN, NOW)
    assert codes(findings) == ["nodes-waiting", "complete"]
    waiting = findings[0]
    assert waiting.severity == "info" and waiting.at is None and waiting.nodes == (C, D)
    assert waiting.message == "2 nodes wait to join round 4: host-c_102_0, host-d_103_0."
    assert "num_nodes_waiting()" in waiting.next and "round 4 starts" in waiting.next


def test_nodes_waiting_on_an_open_round_join_it():
    snapshot = RendezvousSnapshot(round=4, participants={A: 0}, wait_list={B}, last_heartbeats=beats((A, 1), (B, 1)))
    waiting = only(diagnose(snapshot, KNOWN, NOW), "nodes-waiting")
    assert "1 node on the wait list has not yet joined round 4" in waiting.message


def test_redundant_nodes_wait_for_a_participant_to_leave():
    full = {A: 0, B: 1, C: 2, D: 3}
    snapshot = RendezvousSnapshot(round=2, complete=True, participants=full, redundancy_list={E},
                                  last_heartbeats=beats(*((node, 1) for node in [*full, E])))
    findings = diagnose(snapshot, KNOWN, NOW)
    assert codes(findings) == ["redundant", "complete"]
    redundant = findings[0]
    assert redundant.severity == "info" and redundant.nodes == (E,)
    assert redundant.message == "1 node (host-e_104_0) is redundant: round 2 already has its maximum of 4 participants."
    assert "It stays idle with no join timeout" in redundant.next and "joins the wait list" in redundant.next
    assert "would be redundant" in only(findings, "complete").next

    room = RendezvousSnapshot(round=2, complete=True, participants={A: 0, B: 1, C: 2}, redundancy_list={E},
                              last_heartbeats=beats((A, 1), (B, 1), (C, 1), (E, 1)))
    redundant = only(diagnose(room, KNOWN, NOW), "redundant")
    assert "now has 3 of at most 4 participants" in redundant.message
    assert "leaves the redundancy list" in redundant.next


# -- heartbeats ---------------------------------------------------------------------------------


def test_a_late_node_counts_as_dead_interval_times_attempts_after_its_last_heartbeat():
    snapshot = RendezvousSnapshot(round=1, complete=True, participants={A: 0, B: 1, C: 2},
                                  last_heartbeats=beats((A, 1), (B, 3), (C, 8)))
    stale = only(diagnose(snapshot, KNOWN, NOW), "stale-heartbeat")
    assert stale.severity == "warning" and stale.nodes == (C,)
    assert stale.at == ago(8) + timedelta(seconds=15)
    assert "Node host-c_102_0 has sent no keep-alive for 8 s, though one is due every 5 s" in stale.message
    assert "12:00:07 UTC" in stale.message
    # The first keep-alive after 12:00:07: B (heard 3 s ago) writes at 12:00:02, 12:00:07 (not after), 12:00:12;
    # A (heard 1 s ago) at 12:00:04, 12:00:09.
    assert "host-a_100_0's keep-alive due about 12:00:09 UTC" in stale.next


def test_a_heartbeat_just_past_due_is_not_late():
    snapshot = RendezvousSnapshot(participants={A: 0}, last_heartbeats=beats((A, 6.5)))
    assert "stale-heartbeat" not in codes(diagnose(snapshot, KNOWN, NOW))


def test_dead_nodes_are_removed_by_the_next_write_of_a_live_node():
    snapshot = RendezvousSnapshot(round=1, complete=True, participants={A: 0, B: 1, C: 2},
                                  last_heartbeats=beats((A, 1), (B, 2), (C, 16)))
    findings = diagnose(snapshot, KNOWN, NOW)
    stale = findings[0]
    assert stale.code == "stale-heartbeat" and stale.severity == "warning" and stale.nodes == (C,)
    assert "16 s, longer than the 15 s after which torch counts a node as dead" in stale.message
    assert stale.at == NOW + timedelta(seconds=3)  # B, heard 2 s ago, keeps alive every 5 s
    assert "host-b_101_0's keep-alive due about 12:00:03 UTC" in stale.next
    assert "does not end round 1" in stale.next and "111646" in stale.next


def test_with_many_nodes_keeping_alive_the_removal_reads_the_same_from_one_keep_alive_to_the_next():
    """Past NAMED_WRITERS nodes keeping alive on time, the next writer changes with nearly every
    write: the dead and late findings then say how soon at the latest, not who and when, so what
    the page shows stays put while the job heartbeats (1,000 nodes write 200 times a second)."""
    writers = [Node(f"worker-{index}", 300 + index, 0) for index in range(NAMED_WRITERS + 2)]
    participants = {node: rank for rank, node in enumerate([*writers, C, D])}
    seen = []
    for step in range(len(writers)):
        # Each step one more writer has just kept alive: the next one due is always another node.
        snapshot = RendezvousSnapshot(round=1, complete=True, participants=participants, last_heartbeats={
            **{node: ago(0.5 if index < step else 1 + index * 0.5) for index, node in enumerate(writers)},
            C: ago(16), D: ago(8)})
        findings = [f for f in diagnose(snapshot, KNOWN, NOW) if f.code == "stale-heartbeat"]
        dead, late = (next(f for f in findings if f.nodes == (node,)) for node in (C, D))
        assert dead.at is None and late.at == ago(8) + timedelta(seconds=15)
        seen.append((dead.next, late.next))
    assert len(set(seen)) == 1, seen
    dead_next, late_next = seen[0]
    assert (f"removes it (_sanitize), within 5 s at the latest: each of the {len(writers)} nodes heard from on "
            "time writes a keep-alive every 5 s; removing a participant does not end round 1") in dead_next
    assert "the first state write after that removes it (_sanitize), within 5 s of that at the latest" in late_next
    assert "worker-" not in dead_next + late_next
    # With few writers the finding still names the next one, as above.
    few = RendezvousSnapshot(round=1, complete=True, participants={A: 0, C: 1},
                             last_heartbeats=beats((A, 2), (C, 16)))
    assert "host-a_100_0's keep-alive due about 12:00:03 UTC" in only(diagnose(few, KNOWN, NOW), "stale-heartbeat").next


def test_every_node_dead_is_an_error_nobody_is_left_to_fix():
    snapshot = RendezvousSnapshot(round=1, complete=True, participants={A: 0, B: 1},
                                  last_heartbeats=beats((A, 60), (B, 90)))
    findings = diagnose(snapshot, KNOWN, NOW, revision_time=ago(60))
    assert codes(findings) == ["stale-heartbeat", "complete", "expiring"]
    stale = findings[0]
    assert stale.severity == "error" and stale.at is None and stale.nodes == (A, B)
    assert "2 nodes (host-a_100_0, host-b_101_0) have sent no keep-alive for 1 min 00 s to 1 min 30 s" in stale.message
    assert "No live node is left" in stale.next and "new agent" in stale.next
    assert headline(findings) is stale


def test_every_node_dead_in_a_closed_run_is_how_a_finished_job_looks():
    snapshot = RendezvousSnapshot(round=1, complete=True, closed=True, participants={A: 0, B: 1},
                                  last_heartbeats=beats((A, 60), (B, 60)))
    findings = diagnose(snapshot, KNOWN, NOW)
    assert codes(findings) == ["closed", "stale-heartbeat", "complete", "expiring"]
    assert only(findings, "stale-heartbeat").severity == "info"
    assert "no new agent can join" in only(findings, "complete").next


def test_late_and_dead_nodes_are_two_findings():
    snapshot = RendezvousSnapshot(round=1, complete=True, participants={A: 0, B: 1, C: 2},
                                  last_heartbeats=beats((A, 1), (B, 9), (C, 30)))
    stale = [finding for finding in diagnose(snapshot, KNOWN, NOW) if finding.code == "stale-heartbeat"]
    assert [finding.nodes for finding in stale] == [(C,), (B,)]


def test_heartbeats_from_the_future_are_clock_skew():
    snapshot = RendezvousSnapshot(participants={A: 0, B: 0}, deadline=NOW + timedelta(seconds=9),
                                  last_heartbeats={A: NOW + timedelta(seconds=12), B: NOW + timedelta(seconds=0.5)})
    skew = only(diagnose(snapshot, KNOWN, NOW), "clock-skew")
    assert skew.severity == "warning" and skew.nodes == (A,) and skew.at is None
    assert "stamped 12 s ahead of this machine's clock" in skew.message
    assert "15 s" in skew.next


# -- closed, expiring ---------------------------------------------------------------------------


def test_closed_run_refuses_new_agents_and_its_open_round_never_completes():
    snapshot = RendezvousSnapshot(round=2, closed=True, participants={A: 0}, wait_list={B}, redundancy_list={C},
                                  deadline=NOW + timedelta(seconds=5), last_heartbeats=beats((A, 1), (B, 1), (C, 1)))
    findings = diagnose(snapshot, KNOWN, NOW)
    assert codes(findings) == ["closed"]
    closed = findings[0]
    assert closed.severity == "warning" and closed.nodes == (B, C)
    assert "RendezvousClosedError" in closed.message and "round 2 will not complete" in closed.message
    assert "1 redundant node exits with RendezvousGracefulExitError" in closed.message
    assert "--rdzv-id" in closed.next


def test_expiring_when_nobody_is_left_to_write_is_ttl_after_the_last_write():
    snapshot = RendezvousSnapshot(round=7)
    expiring = only(diagnose(snapshot, KNOWN, NOW, revision_time=ago(600)), "expiring")
    assert expiring.severity == "info" and expiring.at == ago(600) + timedelta(seconds=STATE_TTL)
    assert "last written at 11:50:00 UTC: etcd deletes it at 13:50:00 UTC, 2 h after that write" in expiring.message
    assert "round 0" in expiring.next

    shorter = only(diagnose(snapshot, KNOWN, NOW, revision_time=ago(600), ttl=3600), "expiring")
    assert shorter.at == ago(600) + timedelta(hours=1) and "1 h after that write" in shorter.message

    unknown_write = RendezvousSnapshot(round=1, complete=True, participants={A: 0}, last_heartbeats=beats((A, 100)))
    expiring = only(diagnose(unknown_write, KNOWN, NOW), "expiring")
    assert expiring.at is None and "not before 13:58:20 UTC" in expiring.message


def test_a_live_node_keeps_the_state_from_expiring():
    snapshot = RendezvousSnapshot(round=1, complete=True, participants={A: 0}, last_heartbeats=beats((A, 1)))
    assert "expiring" not in codes(diagnose(snapshot, KNOWN, NOW, revision_time=ago(1)))


def test_state_ttl_is_the_backends():
    from torch.distributed.elastic.rendezvous.etcd_rendezvous_backend import EtcdRendezvousBackend

    from rdzv.backend import DEFAULT_TTL

    assert STATE_TTL == DEFAULT_TTL == EtcdRendezvousBackend._DEFAULT_TTL


# -- settings -----------------------------------------------------------------------------------


def test_settings_not_given_are_named_with_how_to_give_them_and_decide_no_time():
    snapshot = RendezvousSnapshot(participants={A: 0, B: 0}, last_heartbeats=beats((A, 1), (B, 9)))
    findings = diagnose(snapshot, RendezvousSettings(), NOW)
    unknown = only(findings, "settings-unknown")
    assert unknown.severity == "info"
    assert unknown.message.startswith(
        "Without min_nodes, join_timeout, max_nodes, keep_alive_interval and keep_alive_max_attempt, rdzv cannot say")
    assert "--nnodes MIN:MAX" in unknown.next and "keep_alive_max_attempt=" in unknown.next
    late = only(findings, "stale-heartbeat")
    assert late.at is None and "torch's defaults" in late.message
    assert "torch's default is 10 min" in only(findings, "forming").next

    given = RendezvousSettings.from_torchrun("2:4", "join_timeout=600,keep_alive_interval=5,keep_alive_max_attempt=3")
    assert "settings-unknown" not in codes(diagnose(snapshot, given, NOW))


def test_only_the_settings_a_state_needs_are_asked_for():
    closed = RendezvousSnapshot(closed=True)
    assert "settings-unknown" not in codes(diagnose(closed, RendezvousSettings(), NOW))


# -- the findings as a whole --------------------------------------------------------------------


def test_findings_come_most_important_first_and_headline_picks_the_first():
    snapshot = RendezvousSnapshot(round=1, complete=True, participants={A: 0, B: 1}, wait_list={C},
                                  last_heartbeats={**beats((A, 1), (B, 30), (C, 1)), D: NOW + timedelta(seconds=5)})
    findings = diagnose(snapshot, RendezvousSettings(), NOW)
    assert codes(findings) == ["stale-heartbeat", "clock-skew", "nodes-waiting", "complete", "settings-unknown"]
    ranks = ["error", "warning", "info"]
    assert [ranks.index(f.severity) for f in findings] == sorted(ranks.index(f.severity) for f in findings)
    assert headline(findings) is findings[0]
    assert headline(reversed(findings)) is findings[0]
    assert headline(()) is None
    assert set(codes(findings)) <= set(CODES)


def test_findings_are_json_ready():
    snapshot = RendezvousSnapshot(participants={A: 0, B: 0}, deadline=NOW + timedelta(seconds=5),
                                  last_heartbeats=beats((A, 1), (B, 1)))
    data = json.loads(json.dumps([finding.to_dict() for finding in diagnose(snapshot, KNOWN, NOW)]))
    assert data == [{
        "code": "last-call", "severity": "info", "message": data[0]["message"], "next": data[0]["next"],
        "at": "2026-01-01T12:00:05+00:00",
        "nodes": [{"addr": "host-a", "pid": 100, "local_id": 0}, {"addr": "host-b", "pid": 101, "local_id": 0}],
    }]


def test_node_names_are_plain_text_as_the_state_holds_them():
    hostile = Node("<img src=x onerror=alert(1)>", 1, 0)
    snapshot = RendezvousSnapshot(round=1, complete=True, participants={A: 0}, wait_list={hostile},
                                  last_heartbeats=beats((A, 1), (hostile, 1)))
    waiting = only(diagnose(snapshot, KNOWN, NOW), "nodes-waiting")
    assert "<img src=x onerror=alert(1)>_1_0" in waiting.message
    long_name = Node("x" * 5000, 1, 0)
    snapshot = RendezvousSnapshot(round=1, complete=True, participants={A: 0}, wait_list={long_name},
                                  last_heartbeats=beats((A, 1), (long_name, 1)))
    assert len(only(diagnose(snapshot, KNOWN, NOW), "nodes-waiting").message) < 200


def test_naive_times_are_utc_and_the_diagnosis_is_pure():
    snapshot = RendezvousSnapshot(participants={A: 0, B: 0}, deadline=NOW + timedelta(seconds=5),
                                  last_heartbeats=beats((A, 1), (B, 1)))
    assert diagnose(snapshot, KNOWN, NOW.replace(tzinfo=None)) == diagnose(snapshot, KNOWN, NOW)


# -- against torch's own rules -------------------------------------------------------------------


def torch_settings(min_nodes: int, max_nodes: int):
    from torch.distributed.elastic.rendezvous.dynamic_rendezvous import RendezvousSettings as TorchSettings
    from torch.distributed.elastic.rendezvous.dynamic_rendezvous import RendezvousTimeout

    return TorchSettings("job", min_nodes, max_nodes, RendezvousTimeout(last_call=timedelta(seconds=30)),
                         timedelta(seconds=5), 3)


def snapshot_of(state) -> RendezvousSnapshot:
    return decode_state(pickle.dumps(state))


def test_k_more_needed_is_what_torch_needs_to_set_the_last_call_and_complete_it():
    from torch.distributed.elastic.rendezvous.dynamic_rendezvous import (
        _Action,
        _DistributedRendezvousOpExecutor,
        _NodeDesc,
        _RendezvousContext,
        _RendezvousJoinOp,
        _RendezvousState,
    )

    settings = RendezvousSettings.from_torchrun("3:5", "keep_alive_interval=5,keep_alive_max_attempt=3")
    torch_rules = torch_settings(3, 5)

    class Holder:  # the executor's view of a shared state, without a backend
        state = _RendezvousState()

    holder = Holder()
    descs = [_NodeDesc(f"host-{index}", 100 + index, 0) for index in range(3)]
    added = 0
    while True:
        now = datetime.now(timezone.utc)
        findings = diagnose(snapshot_of(holder.state), settings, now)
        if holder.state.deadline is not None:
            break
        forming = only(findings, "forming")
        more = 3 - added
        assert f"{added} of 3 nodes" in forming.message and f"; {more} more" in forming.message
        executor = _DistributedRendezvousOpExecutor(descs[added], holder, torch_rules)
        executor._state = holder.state  # what executor.run() does before each action
        executor._add_to_participants()
        added += 1
    assert added == 3
    last_call = only(findings, "last-call")
    assert last_call.at == holder.state.deadline

    # At the deadline torch's join op marks the round complete, as the finding says.
    join = _RendezvousJoinOp()
    ctx = _RendezvousContext(descs[0], holder.state, torch_rules)
    assert join(ctx, time.monotonic() + 60) in (_Action.SYNC, _Action.KEEP_ALIVE)
    holder.state.deadline = datetime.now(timezone.utc) - timedelta(seconds=1)
    assert join(ctx, time.monotonic() + 60) == _Action.MARK_RENDEZVOUS_COMPLETE


def test_the_dead_are_who_torchs_sanitize_removes_and_a_completed_round_stays_complete():
    from torch.distributed.elastic.rendezvous.dynamic_rendezvous import (
        _BackendRendezvousStateHolder,
        _NodeDesc,
        _RendezvousState,
    )

    settings = RendezvousSettings.from_torchrun("2:4", "keep_alive_interval=5,keep_alive_max_attempt=3")
    now = datetime.now(timezone.utc)
    state = _RendezvousState()
    state.round, state.complete = 2, True
    ages = {"live": 1, "dead": 25, "late": 9}
    for rank, (addr, seconds) in enumerate(ages.items()):
        desc = _NodeDesc(addr, 100 + rank, 0)
        state.participants[desc] = rank
        state.last_heartbeats[desc] = now - timedelta(seconds=seconds)
    findings = diagnose(snapshot_of(state), settings, now)
    dead, late = (finding for finding in findings if finding.code == "stale-heartbeat")
    assert [node.addr for node in dead.nodes] == ["dead"] and [node.addr for node in late.nodes] == ["late"]

    holder = _BackendRendezvousStateHolder(None, torch_settings(2, 4))
    holder._state = state
    holder._sanitize()
    assert {desc.addr for desc in state.last_heartbeats} == {"live", "late"}
    assert state.complete and state.round == 2  # nothing marks the round: pytorch issue 111646
    after = only(diagnose(snapshot_of(state), settings, datetime.now(timezone.utc)), "complete")
    assert after.severity == "warning" and "rank 1 left" in after.message

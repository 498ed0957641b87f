"""The load generator (rdzv.demo.load) against a real etcd, followed by a real Monitor: every
state it writes decodes, and the monitor's diffs are what it did — joins as waiting, admissions
as joined, leaves as left, crashes as a heartbeat that stops and then a removal, heartbeats as
the heartbeat of the node it moved. Speed is measured in benchmarks/, never asserted here."""

from __future__ import annotations

import pytest
from waiting import wait_for

from rdzv.demo.load import LoadGenerator, build_state, node_name
from rdzv.diff import ChangeKind, diff_states
from rdzv.monitor import Monitor
from rdzv.state import decode_state

NODES = 50


def changes_of(entry) -> set[tuple[str, str | None]]:
    return {(str(change.kind), None if change.node is None else str(change.node)) for change in entry.changes}


def expected_changes(record) -> set[tuple[str, str | None]]:
    """The diff one write makes, for the kinds whose diff is exact (not an admission)."""
    removed = {("left", node) for node in record.removed}
    mine = {"heartbeat": "heartbeat", "join": "waiting", "leave": "left"}[record.kind]
    return {(mine, record.node)} | removed


def check_admission(entry, record) -> None:
    found = changes_of(entry)
    assert ("round_advanced", None) in found
    joined = {node for kind, node in found if kind == "joined"}
    assert joined == set(record.admitted), (entry.changes, record)
    for kind, node in found:
        assert kind in ("round_advanced", "joined", "rank_changed", "heartbeat", "left"), (kind, node)
        if kind == "rank_changed":
            assert node not in record.admitted
        if kind == "heartbeat":
            assert node == record.node
        if kind == "left":
            assert node in record.removed
    for change in entry.changes:
        if change.kind == ChangeKind.JOINED:
            assert "from the wait list" in change.detail and "as rank" in change.detail


@pytest.mark.parametrize("api", ["v2", "v3"])
def test_a_monitor_sees_what_the_load_generator_did(etcd_server, api, unique):
    prefix = f"/{unique}"
    run_id = f"load-{api}"
    monitor = Monitor(etcd_server.get_endpoint(), prefix, api=api, history_limit=5000).start()
    generator = LoadGenerator(etcd_server.get_endpoint(), api=api, run_id=run_id, prefix=prefix, nodes=NODES,
                              keep_alive=2.0, duration=3.0, churn=5.0, dead_after=0.4, admit_after=0.8,
                              keep_data=True, seed=3)
    try:
        stats = generator.run()
        view = wait_for(lambda: (v := monitor.run(run_id, api)) is not None and v.revision == stats.last_revision
                        and v, "the monitor seeing the last write")
        history = monitor.history(run_id, api)
    finally:
        monitor.stop()
        with etcd_server.kv(api) as kv:
            kv.delete(stats_key(prefix, run_id))

    assert stats.writes == len([r for r in stats.records if r.revision is not None]) > 20
    assert stats.cas_lost == 0 and stats.stopped_by == "duration"
    for kind in ("join", "leave", "crash", "removal", "admit", "heartbeat"):
        assert stats.ops.get(kind, 0) >= 1, f"the generator made no {kind}: {stats.ops}"

    written = {record.revision: record for record in stats.records if record.revision is not None}
    # every state written decodes, and the monitor holds what was written at each revision
    decoded = {revision: decode_state(record.data) for revision, record in written.items()}
    assert view.snapshot == decoded[stats.last_revision]
    assert [entry.revision for entry in history] == sorted(entry.revision for entry in history)
    assert history[0].revision == min(written) and history[0].changes[0].kind == ChangeKind.CREATED
    assert len(history[0].snapshot.participants) == NODES and history[0].snapshot.complete

    exact = {"heartbeat": 0, "join": 0, "leave": 0, "admit": 0, "removal": 0}
    previous = None
    for entry in history:
        assert entry.error is None and entry.snapshot is not None, entry
        assert entry.snapshot == decoded[entry.revision]
        assert entry.revision in written, f"revision {entry.revision} was not written by the generator"
        record = written[entry.revision]
        between = [r for r in written if previous is not None and previous.revision < r <= entry.revision]
        if previous is None or entry.skipped:  # a creation, or writes coalesced: the diff spans them
            assert entry.skipped == max(0, len(between) - 1)
            if previous is not None:
                assert list(entry.changes) == diff_states(previous.snapshot, entry.snapshot)
        else:
            assert between == [entry.revision], f"the monitor missed writes before {entry.revision}"
            if record.kind == "admit":
                check_admission(entry, record)
            else:
                assert changes_of(entry) == expected_changes(record), (record, entry.changes)
                assert entry.heartbeat_only == (record.kind == "heartbeat" and not record.removed)
            exact[record.kind] += 1
            exact["removal"] += len(record.removed)
        previous = entry
    for kind, count in exact.items():
        assert count >= 1, f"no {kind} was checked write by write: {exact} ({stats.ops})"

    # a crash writes nothing: its node's heartbeat stops, and a later write removes it
    for index, crash in enumerate(stats.records):
        if crash.kind != "crash":
            continue
        later = [r for r in stats.records[index + 1:] if r.revision is not None]
        beats = [entry for entry in history if entry.revision >= later[0].revision
                 and ("heartbeat", crash.node) in changes_of(entry)] if later else []
        assert beats == [], f"{crash.node} crashed but its heartbeat moved at {beats[0].revision}"
        removal = next((r for r in later if crash.node in r.removed), None)
        if removal is not None:
            shown = next(entry for entry in history if entry.revision >= removal.revision)
            assert ("left", crash.node) in changes_of(shown)
            assert crash.node not in {str(node) for node in shown.snapshot.nodes}


def stats_key(prefix: str, run_id: str) -> str:
    return f"{prefix}/rendezvous/{run_id}"


def test_built_states_are_torch_states_with_distinct_heartbeats():
    from torch.distributed.elastic.rendezvous.dynamic_rendezvous import _RendezvousState

    state, nodes = build_state(1000)
    assert isinstance(state, _RendezvousState) and state.complete and len(state.participants) == 1000
    assert [state.participants[node] for node in sorted(state.participants)] == list(range(1000))
    assert len(set(state.last_heartbeats.values())) == 1000
    assert nodes[0].addr == node_name(0) < node_name(999) == nodes[-1].addr


def test_bad_settings_are_refused():
    for options in ({"nodes": 0}, {"nodes": 10_001}, {"duration": 0}, {"api": "v4"}, {"churn": -1}):
        with pytest.raises(ValueError):
            LoadGenerator("127.0.0.1:2379", run_id="r", **options)

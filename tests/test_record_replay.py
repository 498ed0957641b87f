"""Recordings that outlive etcd: ``rdzv record`` writes every revision of a real run (and what
etcd kept from before it started); a replay needs no etcd and shows the same story through the
same decoder; a killed recorder, a cut or bit-flipped file, and a hostile recording are safe."""

from __future__ import annotations

import base64
import os
import pickle
import signal
import subprocess
import sys
from datetime import datetime, timezone

import pytest
from waiting import wait_for
from conftest import subprocess_env

from rdzv.demo import DemoCluster
from rdzv.kv import KeyLayout
from rdzv.monitor import Monitor, ReplayMonitor
from rdzv.recording import RecordedEvent, Recorder, load_recording




def start_recorder(endpoint: str, out, *extra: str) -> subprocess.Popen:
    process = subprocess.Popen([sys.executable, "-m", "rdzv", "record", "--endpoint", endpoint, "--out", str(out),
                                *extra], env=subprocess_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, start_new_session=True)
    assert process.stdout.readline().startswith("Recording"), process.stderr.read()
    return process


def recorded_revisions(path, key: str) -> set[int]:
    try:
        return {event.revision for event in load_recording(path).events if event.key == key}
    except ValueError:  # the header is not written yet
        return set()


@pytest.mark.timeout(240)
@pytest.mark.parametrize("backend", ["rdzv-etcd-v3", "rdzv-etcd-v2"])
def test_record_then_replay_gives_the_same_story_as_live(etcd_server, unique, tmp_path, backend):
    endpoint = etcd_server.get_endpoint()
    api = "v3" if backend.endswith("v3") else "v2"
    key = KeyLayout().state_key(unique)
    out = tmp_path / "run.rdzv"
    cluster = DemoCluster(endpoint, unique, backend=backend, min_nodes=2, max_nodes=3, last_call_timeout=1,
                          keep_alive_interval=1, keep_alive_max_attempt=2)
    live = Monitor(endpoint, api=api)
    try:
        cluster.add_node("alpha")
        cluster.add_node("beta")
        with etcd_server.kv(api=api) as kv:
            before = wait_for(lambda: (current := kv.get(key)) and current.revision, what="the run starting")
        recorder = start_recorder(endpoint, out, "--run-id", unique)
        try:
            wait_for(lambda: before in recorded_revisions(out, key), what="the recorder reading the run back")
            cluster.add_node("gamma")  # seen live by the recorder
            cluster.crash("beta")
            with etcd_server.kv(api=api) as kv:
                wait_for(lambda: "beta" not in (kv.get(key).value and _addrs(kv.get(key).value)),
                         what="beta being removed")
                last = kv.get(key).revision
            wait_for(lambda: last in recorded_revisions(out, key), what="the recorder seeing the last revision")
        finally:
            os.killpg(recorder.pid, signal.SIGTERM)
            recorder.wait(timeout=30)
        assert recorder.returncode == 0, recorder.stderr.read()
        live.start()
        wait_for(lambda: live.history(unique) and live.history(unique)[-1].revision >= last, what="live monitor")
        live_story = {entry.revision: entry.snapshot for entry in live.history(unique)}
    finally:
        live.stop()
        cluster.close()

    recording = load_recording(out)
    assert recording.damage is None and recording.endpoint == endpoint
    assert any(event.read_back for event in recording.events) and any(not event.read_back for event in recording.events)
    replayed = ReplayMonitor(recording).start()
    story = replayed.history(unique)
    assert story and all(entry.revision in live_story for entry in story if entry.revision <= last)
    for entry in story:
        if entry.revision in live_story:
            assert entry.snapshot == live_story[entry.revision], f"revision {entry.revision} differs from live"
    kinds = [(str(change.kind), change.node.addr if change.node else None) for entry in story
             for change in entry.changes if change.kind != "heartbeat"]
    assert ("waiting", "gamma") in kinds or ("joined", "gamma") in kinds
    assert any(kind == "left" and node == "beta" for kind, node in kinds)
    assert replayed.connection.state == "connected" and "Replaying" in replayed.connection.message
    assert replayed.state_at(unique, before) == live_story.get(before)

    history = subprocess.run([sys.executable, "-m", "rdzv", "history", "--replay", str(out), "--run-id", unique],
                             capture_output=True, text=True, timeout=60, env=subprocess_env())
    assert history.returncode == 0 and str(last) in history.stdout, history.stderr
    report = tmp_path / "report.html"
    made = subprocess.run([sys.executable, "-m", "rdzv", "report", "--replay", str(out), "--run-id", unique,
                           "--out", str(report)], capture_output=True, text=True, timeout=60, env=subprocess_env())
    assert made.returncode == 0 and "gamma" in report.read_text(), made.stderr


def _addrs(value: str) -> set[str]:
    from rdzv.state import decode_state_b64

    return {node.addr for node in decode_state_b64(value).nodes}


@pytest.mark.timeout(180)
def test_a_sigkilled_recorder_loses_at_most_the_record_it_was_writing(etcd_server, unique, tmp_path):
    endpoint = etcd_server.get_endpoint()
    out = tmp_path / "killed.rdzv"
    cluster = DemoCluster(endpoint, unique, backend="rdzv-etcd-v3", min_nodes=1, max_nodes=4, last_call_timeout=1,
                          keep_alive_interval=1, keep_alive_max_attempt=3)
    try:
        cluster.add_node("one")
        recorder = start_recorder(endpoint, out, "--run-id", unique)
        key = KeyLayout().state_key(unique)
        wait_for(lambda: len(recorded_revisions(out, key)) >= 3, what="a few recorded revisions")
        os.killpg(recorder.pid, signal.SIGKILL)
        recorder.wait(timeout=30)
    finally:
        cluster.close()
    recording = load_recording(out)
    assert recording.damage is None or "cut short" in recording.damage
    replayed = ReplayMonitor(recording).start()
    assert len(replayed.history(unique)) >= 3
    # a restarted recorder appends after the last complete record, and the file reads cleanly
    with Recorder(out, endpoint=recording.endpoint, prefix=recording.prefix) as again:
        again.write(RecordedEvent("v3", key, "delete", None, 10 ** 9, datetime.now(timezone.utc)))
    assert load_recording(out).damage is None


def _recording_of(path, values: list[str]) -> None:
    with Recorder(path, endpoint="localhost:2379", prefix="/torch/elastic") as recorder:
        for revision, value in enumerate(values, start=1):
            recorder.write(RecordedEvent("v3", KeyLayout().state_key("job"), "put", value, revision,
                                         datetime(2026, 1, 1, 12, 0, revision, tzinfo=timezone.utc)))


def test_a_damaged_recording_replays_up_to_the_damage_and_says_where(tmp_path):
    from rendezvous_helpers import torch_state_b64

    path = tmp_path / "damaged.rdzv"
    _recording_of(path, [torch_state_b64({(f"host-{i}", 1, 0): 0 for i in range(n)}) for n in (1, 2, 3, 4)])
    data = bytearray(path.read_bytes())
    lines = data.split(b"\n")
    third = len(b"\n".join(lines[:3])) + 1  # the header and two records come first
    data[third + 20] ^= 0x04  # one bit flipped in the third record
    path.write_bytes(bytes(data))
    replayed = ReplayMonitor(load_recording(path)).start()
    assert [len(entry.snapshot.participants) for entry in replayed.history("job")] == [1, 2]
    assert "record 3" in replayed.connection.message and "checksum" in replayed.connection.message

    path.write_bytes(bytes(data[:third + 30]))  # cut in the middle of the third record
    replayed = ReplayMonitor(load_recording(path)).start()
    assert len(replayed.history("job")) == 2 and "cut short" in replayed.connection.message


class _Marker:
    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (os.system, (f"touch {self.path}",))


def test_a_recording_of_hostile_pickles_replays_without_running_anything(tmp_path):
    marker = tmp_path / "ran"
    hostile = base64.b64encode(pickle.dumps(_Marker(str(marker)))).decode()
    path = tmp_path / "hostile.rdzv"
    _recording_of(path, [hostile, "not base64 at all!", base64.b64encode(b"\x80\x04junk").decode()])
    replayed = ReplayMonitor(load_recording(path)).start()
    story = replayed.history("job")
    assert len(story) == 3 and all(entry.snapshot is None and entry.error for entry in story)
    assert "forbidden global" in story[0].error and not marker.exists()
    assert replayed.diagnose("job")[0].code == "undecodable"


@pytest.mark.browser
@pytest.mark.timeout(180)
def test_the_dashboard_replays_a_recording_without_etcd(tmp_path, serve, page):
    from browser_helpers import WAIT_MS
    from playwright.sync_api import expect
    from rendezvous_helpers import torch_state_b64

    path = tmp_path / "replayed.rdzv"
    _recording_of(path, [torch_state_b64({("first-host", 1, 0): 0}),
                         torch_state_b64({("first-host", 1, 0): 0, ("second-host", 2, 0): 1})])
    dashboard = serve(["--replay", str(path)])
    page.goto(dashboard.url)
    expect(page.get_by_text("second-host", exact=True).first).to_be_visible(timeout=WAIT_MS)
    expect(page.get_by_text("Replaying").first).to_be_visible(timeout=WAIT_MS)
    page.get_by_role("button", name="◀ Previous change").click()
    expect(page.locator("[data-role=as-of]").first).to_contain_text("As of revision 1", timeout=WAIT_MS)
    expect(page.get_by_text("second-host", exact=True)).to_have_count(0, timeout=WAIT_MS)

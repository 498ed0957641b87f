"""The whole story of a run: revisions read back from etcd when a monitor first sees a run (on
v3 from its revision history, on v2 from its last-1,000-events window), marked as read back with
estimated times; what was compacted away is said, never invented; ``rdzv history``; time travel.

Every scenario is real torch handlers on a real etcd; a test-side reader samples the state key
while the scenario runs, and every sample must appear in the story read back afterwards with the
same revision and the same state.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
import urllib.request

import pytest
from waiting import wait_for
from conftest import subprocess_env

from rdzv.demo import DemoCluster
from rdzv.kv import KeyLayout
from rdzv.monitor import Monitor, change_sentences
from rdzv.state import decode_state_b64

BACKENDS = ["rdzv-etcd-v3", "rdzv-etcd-v2", "etcd-v2"]


class Sampler:
    """Reads the state key as fast as it can in a thread: (revision -> snapshot) of what it saw."""

    def __init__(self, kv, key: str) -> None:
        self.kv, self.key, self.seen = kv, key, {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            current = self.kv.get(self.key)
            if current is not None and current.revision not in self.seen:
                self.seen[current.revision] = decode_state_b64(current.value)
            self._stop.wait(0.01)

    def stop(self) -> dict:
        self._stop.set()
        self._thread.join(10)
        return self.seen




def kinds(history) -> list[tuple[str, str | None]]:
    return [(str(change.kind), None if change.node is None else change.node.addr)
            for entry in history for change in entry.changes if change.kind != "heartbeat"]


@pytest.mark.timeout(240)
@pytest.mark.parametrize("backend", BACKENDS)
def test_a_monitor_started_afterwards_reads_the_whole_story_back(etcd_server, unique, backend):
    endpoint = etcd_server.get_endpoint()
    api = "v3" if backend.endswith("v3") else "v2"
    key = KeyLayout().state_key(unique)
    with etcd_server.kv(api=api) as kv:
        sampler = Sampler(kv, key)
        cluster = DemoCluster(endpoint, unique, backend=backend, min_nodes=2, max_nodes=2, last_call_timeout=1,
                              keep_alive_interval=1, keep_alive_max_attempt=2)
        try:
            cluster.add_node("alpha")
            cluster.add_node("beta")
            wait_for(lambda: any(snap.complete for snap in sampler.seen.values()), what="the round completing")
            cluster.crash("beta")  # beta stops heartbeating; alpha's next write removes it (2 s later)
            wait_for(lambda: any(not any(n.addr == "beta" for n in snap.nodes) and snap.last_heartbeats
                                 for snap in list(sampler.seen.values())[-1:]),
                     what="alpha removing the crashed beta")
            seen = sampler.stop()
            monitor = Monitor(endpoint, api=api).start()
            try:
                monitor.wait_for_version(0, 30)
                history = wait_for(lambda: monitor.history(unique), what="the monitor reading the run")
            finally:
                monitor.stop()
        finally:
            sampler.stop()
            cluster.close()

    by_revision = {entry.revision: entry for entry in history}
    assert [entry.revision for entry in history] == sorted(by_revision), "the story is out of order"
    for revision, snapshot in seen.items():  # everything the sampler saw is in the story, as it was
        if revision <= history[-1].revision:
            assert revision in by_revision, f"revision {revision} is missing from the story read back"
            assert by_revision[revision].snapshot == snapshot
    read_back = [entry for entry in history if entry.read_back]
    assert read_back and all(entry.time_estimated for entry in read_back)
    assert history[0].complete_from is None and history[0].changes[0].kind == "created"
    story = kinds(history)
    assert story.index(("joined", "alpha")) < story.index(("completed", None)) < len(story) - 1 - story[::-1].index(
        ("left", "beta"))
    assert ("joined", "beta") in story
    # estimated times never run backwards, and the first sentence of a read-back entry is its change
    times = [entry.seen_at for entry in history]
    assert times == sorted(times)
    assert any("completed round 0" in sentence for entry in history for sentence in change_sentences(entry))
    complete = next(entry for entry in history if any(change.kind == "completed" for change in entry.changes))
    assert complete.snapshot.complete and not history[history.index(complete) - 1].snapshot.complete


@pytest.mark.timeout(120)
def test_state_at_travels_back_to_any_revision_seen(etcd_server, unique):
    endpoint = etcd_server.get_endpoint()
    with etcd_server.kv(api="v3") as kv:
        sampler = Sampler(kv, KeyLayout().state_key(unique))
        cluster = DemoCluster(endpoint, unique, backend="rdzv-etcd-v3", min_nodes=1, max_nodes=3, last_call_timeout=1)
        try:
            cluster.add_node("one")
            wait_for(lambda: any(snap.complete for snap in sampler.seen.values()), what="round 0 completing")
            cluster.add_node("two")
            wait_for(lambda: any(snap.round == 1 and snap.complete for snap in sampler.seen.values()),
                     what="round 1 completing with the second node")
            seen = sampler.stop()
            monitor = Monitor(endpoint, api="v3").start()
            try:
                wait_for(lambda: monitor.history(unique) and monitor.history(unique)[-1].revision >= max(seen),
                         what="the monitor reading the run")
                for revision, snapshot in seen.items():
                    assert monitor.state_at(unique, revision) == snapshot
                    assert monitor.revision_at(unique, revision).revision == revision
                first = min(seen)
                assert monitor.state_at(unique, first - 1) is None or monitor.revision_at(unique, first - 1).revision < first
            finally:
                monitor.stop()
        finally:
            sampler.stop()
            cluster.close()


def _compact(endpoint: str, revision: int) -> None:
    body = json.dumps({"revision": str(revision), "physical": True}).encode()
    request = urllib.request.Request(f"http://{endpoint}/v3/kv/compaction", data=body, method="POST")
    with urllib.request.urlopen(request, timeout=30) as answer:
        assert answer.status == 200


@pytest.mark.timeout(120)
def test_after_v3_compaction_the_story_starts_where_etcd_history_does(etcd_server, unique):
    from rendezvous_helpers import torch_state_b64

    key = KeyLayout(f"/{unique}").state_key("job")
    with etcd_server.kv(api="v3") as kv:
        revisions = [kv.put(key, torch_state_b64({(f"host-{i}", 1, 0): 0 for i in range(n)})).revision
                     for n in range(1, 7)]
        _compact(etcd_server.get_endpoint(), revisions[3])  # revisions[3] is still kept; [0..2] are gone
        monitor = Monitor(etcd_server.get_endpoint(), f"/{unique}", api="v3").start()
        try:
            history = wait_for(lambda: monitor.history("job"), what="the monitor reading the run")
        finally:
            monitor.stop()
    assert [entry.revision for entry in history] == revisions[3:], "a compacted revision was invented or lost"
    assert history[0].complete_from == revisions[3] and all(entry.complete_from is None for entry in history[1:])
    assert "complete from revision" in change_sentences(history[0])[0]
    assert [len(entry.snapshot.participants) for entry in history] == [4, 5, 6]


@pytest.mark.timeout(120)
def test_past_the_v2_window_the_story_starts_where_etcd_keeps_events(etcd_server, unique):
    from rendezvous_helpers import torch_state_b64

    key = KeyLayout(f"/{unique}").state_key("job")
    with etcd_server.kv(api="v2") as kv:
        early = [kv.put(key, torch_state_b64({(f"host-{i}", 1, 0): 0 for i in range(n)})).revision for n in (1, 2)]
        for index in range(1005):  # pushes both early writes out of v2's 1,000-event window
            kv.put(f"/{unique}/noise", str(index))
        late = [kv.put(key, torch_state_b64({(f"host-{i}", 1, 0): 0 for i in range(n)})).revision for n in (3, 4)]
        monitor = Monitor(etcd_server.get_endpoint(), f"/{unique}", api="v2").start()
        try:
            history = wait_for(lambda: monitor.history("job"), what="the monitor reading the run")
        finally:
            monitor.stop()
    assert [entry.revision for entry in history] == late, "an evicted revision was invented or kept"
    assert history[0].complete_from is not None and early[-1] < history[0].complete_from <= late[0]
    assert history[0].read_back and not history[-1].read_back


def _rdzv(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "rdzv", *argv], capture_output=True, text=True, timeout=120,
                          env=subprocess_env())


@pytest.mark.timeout(180)
def test_rdzv_history_prints_every_revision_and_the_state_at_one(etcd_server, unique):
    endpoint = etcd_server.get_endpoint()
    with etcd_server.kv(api="v3") as kv:
        sampler = Sampler(kv, KeyLayout().state_key(unique))
        cluster = DemoCluster(endpoint, unique, backend="rdzv-etcd-v3", min_nodes=2, max_nodes=2, last_call_timeout=1)
        try:
            cluster.add_node("alpha")
            cluster.add_node("beta")
            wait_for(lambda: any(snap.complete for snap in sampler.seen.values()), what="the round completing")
            seen = sampler.stop()
            shown = _rdzv("history", "--endpoint", endpoint, "--run-id", unique)
            as_json = _rdzv("history", "--endpoint", endpoint, "--run-id", unique, "--json")
            forming = [entry["revision"] for entry in json.loads(as_json.stdout)["revisions"]
                       if entry["snapshot"] and not entry["snapshot"]["complete"]]
            before = max(forming)
            at = _rdzv("history", "--endpoint", endpoint, "--run-id", unique, "--at", str(before))
            too_old = _rdzv("history", "--endpoint", endpoint, "--run-id", unique, "--at", "1")
            missing = _rdzv("history", "--endpoint", endpoint, "--run-id", unique + "-none")
        finally:
            sampler.stop()
            cluster.close()
    assert shown.returncode == 0, shown.stderr
    assert "complete since the state was created" in shown.stdout
    lines = {int(line.split()[0]): line for line in shown.stdout.splitlines()[1:] if line.split()[0].isdigit()}
    assert set(seen) <= set(lines), "a revision seen is missing from rdzv history"
    assert any("completed round 0" in line for line in lines.values())
    assert "↳ [info] Round 0 is complete" in shown.stdout
    data = json.loads(as_json.stdout)
    revisions = [entry["revision"] for entry in data["revisions"]]
    # The nodes keep heartbeating: a revision written between the two reads can only be newer.
    assert revisions[:len(lines)] == sorted(lines) and all(r > max(lines) for r in revisions[len(lines):])
    assert all(entry["time_estimated"] for entry in data["revisions"][:-1])
    assert data["revisions"][-1]["findings"][0]["code"] == "complete"
    assert at.returncode == 0 and f"As of revision {before}" in at.stdout
    # Whichever node wrote the state first is the one participant of the last forming revision.
    joined = next(entry["snapshot"]["participants"] for entry in data["revisions"] if entry["revision"] == before)
    assert joined and all(node["addr"] in at.stdout for node in joined) and "complete=False" in at.stdout
    assert too_old.returncode == 4 and "is older" in too_old.stderr and "Traceback" not in too_old.stderr
    assert missing.returncode == 4 and unique in missing.stderr


@pytest.mark.browser
@pytest.mark.timeout(240)
def test_picking_an_old_revision_shows_that_revisions_nodes_then_live(etcd_server, unique, serve, page):
    from browser_helpers import WAIT_MS
    from playwright.sync_api import expect

    endpoint = etcd_server.get_endpoint()
    cluster = DemoCluster(endpoint, unique, backend="rdzv-etcd-v3", min_nodes=1, max_nodes=3, last_call_timeout=1)
    try:
        cluster.add_node("first-node")
        with etcd_server.kv(api="v3") as kv:
            key = KeyLayout().state_key(unique)
            wait_for(lambda: (current := kv.get(key)) and decode_state_b64(current.value).complete,
                     what="round 0 completing")
            cluster.add_node("late-node")
            wait_for(lambda: (current := kv.get(key)) and decode_state_b64(current.value).complete
                     and len(decode_state_b64(current.value).participants) == 2, what="round 1 with both nodes")
        dashboard = serve(["--endpoint", endpoint, "--run-id", unique])
        page.goto(dashboard.url)
        late = page.get_by_text("late-node", exact=True)
        expect(late.first).to_be_visible(timeout=WAIT_MS)
        as_of = page.locator("[data-role=as-of]")
        expect(as_of.first).to_have_text("Live", timeout=WAIT_MS)
        older = page.get_by_role("button", name="◀ Previous change")
        for _ in range(30):  # step back change by change until the late node is not in the run yet
            older.click()
            expect(as_of.first).to_contain_text("As of revision", timeout=WAIT_MS)
            if late.count() == 0:
                break
        expect(late).to_have_count(0, timeout=WAIT_MS)
        expect(page.get_by_text("first-node", exact=True).first).to_be_visible(timeout=WAIT_MS)
        told_late = page.get_by_text(re.compile(r"Node late-node_\d+_\d+ "))  # the event log's sentences
        expect(told_late).to_have_count(0, timeout=WAIT_MS)  # the log ends at the revision shown
        page.get_by_role("button", name="Back to live").click()
        expect(as_of.first).to_have_text("Live", timeout=WAIT_MS)
        expect(late.first).to_be_visible(timeout=WAIT_MS)
        expect(told_late.first).to_be_visible(timeout=WAIT_MS)
    finally:
        cluster.close()


@pytest.mark.browser
@pytest.mark.timeout(180)
def test_a_node_name_with_html_stays_text_in_whats_happening(etcd_server, unique, serve, page):
    from browser_helpers import WAIT_MS
    from playwright.sync_api import expect
    from rendezvous_helpers import torch_state_b64

    hostile = "<img src=x onerror=alert(1)>"
    layout = KeyLayout(f"/{unique}")
    with etcd_server.kv(api="v3") as kv:
        kv.put(layout.state_key("job"), torch_state_b64({(hostile, 1, 0): 0}, complete=False))
        dashboard = serve(["--endpoint", etcd_server.get_endpoint(), "--prefix", layout.prefix, "--run-id", "job",
                           "--nnodes", "2:3"])
        page.goto(dashboard.url)
        card = page.locator("[data-code=forming]")
        expect(card.first).to_contain_text("1 of 2 nodes has joined round 0", timeout=WAIT_MS)
        expect(page.get_by_text(hostile, exact=True).first).to_be_visible(timeout=WAIT_MS)  # the node table
        assert page.locator("img[src=x]").count() == 0  # nothing the name says became markup
        kv.delete(layout.state_key("job"))


def test_stepping_back_before_the_history_is_read_says_so(etcd_server, unique):
    from rendezvous_helpers import torch_state_b64

    from rdzv.ui.time_travel import TimeTravelBar

    layout = KeyLayout(f"/{unique}")
    monitor = Monitor(etcd_server.get_endpoint(), layout.prefix, api="v3").start()
    try:
        bar = TimeTravelBar(monitor=monitor, run_id="job")
        bar.step(-1)
        assert bar.as_of is None and "nothing-to-step" in bar.label.object

        version = monitor.version
        with etcd_server.kv(api="v3") as kv:
            kv.put(layout.state_key("job"), torch_state_b64({("host-a", 1, 0): 0}))
        wait_for(lambda: monitor.history("job"), timeout=30, what="the run's history")
        monitor.wait_for_version(version, timeout=10)
        bar.update()
        assert "nothing-to-step" not in bar.label.object
        bar.step(-1)
        assert bar.as_of == monitor.history("job")[0].revision
    finally:
        monitor.stop()

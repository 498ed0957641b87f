"""``rdzv report``: one run's story as one self-contained HTML file that opens offline.

The end-to-end tests run real torch handlers (the demo cluster) on the real etcd, write the report
through the command line, and open it in Chromium with every network request refused: the run's
nodes, its completion, the crash and the diagnosis must be there, a hostile node name must stay
text, and the page must ask for nothing but its own file. The unit tests render synthetic stories
(escaping, the heartbeat summary, the size of a 1,000-revision story of a 1,000-node run).
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
from dataclasses import replace
from datetime import datetime, timedelta, timezone

import pytest
from waiting import wait_for
from conftest import subprocess_env

from rdzv.demo import DemoCluster
from rdzv.diff import diff_states, is_heartbeat_only
from rdzv.kv import KeyLayout
from rdzv.monitor import Revision, RunHistory, RunView
from rdzv.rendezvous_settings import RendezvousSettings
from rdzv.report import MAX_ROUND_TABLES, render_report
from rdzv.state import Node, RendezvousSnapshot, decode_state_b64

HOSTILE = "<img src=x onerror=alert(1)><b>x</b>"
START = datetime(2024, 5, 1, 3, 0, tzinfo=timezone.utc)
SETTINGS = RendezvousSettings.provided(min_nodes=2, max_nodes=4, last_call_timeout=1, keep_alive_interval=1,
                                       keep_alive_max_attempt=2)




def rdzv(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "rdzv", *argv], check=False, capture_output=True, text=True,
                          timeout=120, env=subprocess_env())


def one_sentence(result: subprocess.CompletedProcess) -> str:
    error = result.stderr.strip()
    assert error.startswith("rdzv: ") and "\n" not in error and "Traceback" not in error, result.stderr
    return error


# --- synthetic stories ------------------------------------------------------------------------


def synthetic_history(nodes: int, revisions: int, *, hostile: tuple[str, ...] = (), run_id: str = "synthetic",
                      read_back: int | None = None) -> RunHistory:
    """A run of ``nodes`` nodes (plus ``hostile`` names) over ``revisions`` revisions, built from
    :class:`RendezvousSnapshot` objects: round 0 forms and completes, then mostly heartbeat-only
    writes, a node leaving or joining the wait list every 10th revision, and every 100th a new
    round opening with everyone still there (and completing at the next revision). The first ``read_back`` (default: half) are marked
    read back with estimated times."""
    read_back = revisions // 2 if read_back is None else read_back
    everyone = [Node(f"host-{index:04d}.cluster.example", 10_000 + index, 0) for index in range(nodes)]
    everyone += [Node(name, 1, 0) for name in hostile]
    heartbeats = {node: START for node in everyone}
    snapshots = [RendezvousSnapshot(round=0, participants={node: 0 for node in everyone}, last_heartbeats=heartbeats)]
    live, waiting, round_ = list(everyone), set(), 0
    ranks = {node: rank for rank, node in enumerate(sorted(everyone))}
    snapshots.append(RendezvousSnapshot(round=0, complete=True, participants=ranks, last_heartbeats=heartbeats))
    for index in range(2, revisions):
        now = START + timedelta(seconds=index * 0.5)
        complete = True
        if index % 100 == 0:  # the waiting nodes make everyone re-rendezvous: a new round opens ...
            round_ += 1
            live = live + sorted(waiting)
            waiting = set()
            ranks = {node: 0 for node in live}
            heartbeats = {node: now for node in live}
            complete = False
        elif index % 100 == 1:  # ... and completes
            ranks = {node: rank for rank, node in enumerate(sorted(live))}
        elif index % 20 == 0 and len(live) > 1:
            gone = live.pop(index % len(live))
            ranks = {node: rank for node, rank in ranks.items() if node != gone}
            heartbeats = {node: last for node, last in heartbeats.items() if node != gone}
        elif index % 10 == 0:
            newcomer = Node(f"late-{index:04d}", 20_000 + index, 0)
            waiting = waiting | {newcomer}
            heartbeats = {**heartbeats, newcomer: now}
        else:
            node = live[index % len(live)]
            heartbeats = {**heartbeats, node: now}
        snapshots.append(RendezvousSnapshot(round=round_, complete=complete, participants=ranks, wait_list=waiting,
                                            last_heartbeats=heartbeats))
    entries, previous = [], None
    for index, snapshot in enumerate(snapshots[:revisions]):
        changes = tuple(diff_states(previous, snapshot))
        estimated = index < read_back
        entries.append(Revision(
            run_id=run_id, revision=100 + index, seen_at=START + timedelta(seconds=index * 0.5), size=0,
            snapshot=snapshot, error=None, changes=changes, heartbeat_only=is_heartbeat_only(changes), resync=False,
            read_back=estimated, time_estimated=estimated))
        previous = snapshot
    last = entries[-1]
    view = RunView(run_id, "v3", KeyLayout().state_key(run_id), last.revision, last.snapshot, None, last.seen_at,
                   False)
    return RunHistory(run_id, "v3", view, tuple(entries), None)


def test_a_synthetic_report_escapes_everything_from_etcd_and_requests_nothing():
    history = synthetic_history(4, 250, hostile=(HOSTILE, "tab\there\x1b[31m"), run_id="<script>run</script>")
    html = render_report(history, SETTINGS, source="recording <evil>.rdzv", generated_at=START + timedelta(hours=1))

    assert html.startswith("<!DOCTYPE html>") and html.rstrip().endswith("</html>")
    assert "<img" not in html and "<script" not in html and "<b>" not in html
    assert "&lt;img src=x onerror=alert(1)&gt;&lt;b&gt;x&lt;/b&gt;" in html
    assert "&lt;script&gt;run&lt;/script&gt;" in html and "recording &lt;evil&gt;.rdzv" in html
    assert "\x1b" not in html and "\\x1b[31m" in html, "a terminal escape reached the page"
    # nothing that could make a request: no URL, no source attribute, a policy that forbids every fetch
    assert not re.search(r"https?://|\bsrc=|\bhref=\"(?!#)|@import|url\(", html.replace("src=x", ""))
    assert "default-src 'none'" in html
    # the story's parts
    for heading in ("What's happening", "Timeline", "Event log", "State at each round's completion",
                    "State at the last revision"):
        assert f">{heading}</h2>" in html
    assert "complete since the state was created at revision 100" in html
    assert "heartbeat-only revisions (revisions" in html
    assert "The rendezvous completed round 0 with 6 participants." in html
    assert "≈" in html and html.count("<circle") == sum(
        1 for entry in history.revisions if not entry.heartbeat_only)


def test_a_story_cut_by_the_limit_or_by_compaction_says_so():
    history = synthetic_history(3, 30)
    cut = render_report(replace(history, limited=True), SETTINGS, source="s", generated_at=START)
    assert "only the newest revisions were read" in cut and "complete since" not in cut
    first = history.revisions[0]
    compacted = RunHistory(history.run_id, history.api, history.view,
                           (replace(first, complete_from=first.revision), *history.revisions[1:]), None)
    told = render_report(compacted, SETTINGS, source="s", generated_at=START)
    assert f"the story is complete from revision {first.revision} on" in told


def test_undecodable_and_deleted_states_are_told_in_every_part():
    history = synthetic_history(3, 12)
    last = history.revisions[-1]
    later = dict(run_id=last.run_id, size=0, snapshot=None, changes=(), heartbeat_only=False, resync=False)
    bad = Revision(revision=last.revision + 1, seen_at=last.seen_at + timedelta(seconds=1),
                   error="The state is not a pickle: <script>alert(1)</script>.", **later)
    gone = Revision(revision=last.revision + 2, seen_at=last.seen_at + timedelta(seconds=2), error=None, **later)
    undecodable = render_report(replace(history, revisions=(*history.revisions, bad)), SETTINGS, source="s",
                                generated_at=START)
    deleted = render_report(replace(history, revisions=(*history.revisions, bad, gone)), SETTINGS, source="s",
                            generated_at=START)
    told = "The state is not a pickle: &lt;script&gt;alert(1)&lt;/script&gt;."
    assert "<script" not in undecodable and undecodable.count(told) >= 3  # event log, timeline, last state
    assert "circle class=\"undecodable\"" in undecodable and "The rendezvous state cannot be decoded" in undecodable
    last_state = deleted[deleted.index("<section id=\"last\">"):]
    assert "The run&#x27;s state was deleted or expired." in last_state
    assert "circle class=\"deleted\"" in deleted


def test_a_thousand_revisions_of_a_thousand_nodes_make_a_reasonable_file(capsys):
    history = synthetic_history(1000, 1000)
    started = time.perf_counter()
    html = render_report(history, SETTINGS, source="etcd at 127.0.0.1:2379 below /torch/elastic",
                         generated_at=START + timedelta(hours=1))
    seconds = time.perf_counter() - started
    size = len(html.encode())
    completions = sum(1 for entry in history.revisions if any(c.kind == "completed" for c in entry.changes))
    with capsys.disabled():
        print(f"\n  report of 1,000 revisions x 1,000 nodes: {size / 2**20:.2f} MiB, rendered in {seconds:.2f} s "
              f"({completions} completions)")
    assert completions <= MAX_ROUND_TABLES  # so every completion has its table here
    assert html.count("<table class=\"nodes\">") == completions + 1
    assert size < 4 * 2**20, f"the report is {size} bytes"


# --- real etcd, real torch handlers, real Chromium --------------------------------------------


@pytest.mark.browser
@pytest.mark.timeout(240)
@pytest.mark.parametrize("backend", ["rdzv-etcd-v3", "rdzv-etcd-v2"])
def test_the_report_opens_offline_and_shows_the_runs_nodes_and_events(etcd_server, unique, backend, page, tmp_path):
    from browser_helpers import WAIT_MS
    from playwright.sync_api import expect

    endpoint = etcd_server.get_endpoint()
    api = "v3" if backend.endswith("v3") else "v2"
    key = KeyLayout().state_key(unique)
    out = tmp_path / "report.html"
    with etcd_server.kv(api=api) as kv:
        def state():
            current = kv.get(key)
            return None if current is None else decode_state_b64(current.value)

        cluster = DemoCluster(endpoint, unique, backend=backend, min_nodes=2, max_nodes=2, last_call_timeout=1,
                              keep_alive_interval=1, keep_alive_max_attempt=2)
        try:
            cluster.add_node("alpha")
            cluster.add_node(HOSTILE)
            wait_for(lambda: (snap := state()) is not None and snap.complete, what="round 0 completing")
            cluster.crash("alpha")  # alpha stops heartbeating; the other's next write removes it
            wait_for(lambda: (snap := state()) is not None and snap.last_heartbeats
                     and not any(node.addr == "alpha" for node in snap.nodes), what="the crashed alpha removed")
            made = rdzv("report", "--endpoint", endpoint, "--run-id", unique, "--out", str(out))
        finally:
            cluster.close()

    assert made.returncode == 0, made.stderr
    assert made.stdout.count("\n") == 1 and str(out) in made.stdout
    assert [path.name for path in tmp_path.iterdir()] == ["report.html"], "a temp file was left behind"

    url = out.as_uri()
    requests: list[str] = []
    page.on("request", lambda request: requests.append(request.url))
    page.context.route("**/*", lambda route: route.continue_() if route.request.url == url else route.abort())
    page.goto(url)

    expect(page.get_by_role("heading", name="What's happening")).to_be_visible(timeout=WAIT_MS)
    expect(page.locator("#happening .finding").first).to_be_visible()
    expect(page.locator("#events")).to_contain_text("The rendezvous completed round 0 with 2 participants.")
    left = page.locator("#events tr", has_text=re.compile(r"Node alpha_\d+_\d+ left the rendezvous"))
    expect(left.first).to_be_visible()
    completed = page.locator("#completions")
    expect(completed.get_by_role("cell", name="alpha", exact=True)).to_be_visible()
    expect(completed.get_by_role("cell", name=HOSTILE, exact=True)).to_be_visible()
    expect(page.locator("#last").get_by_role("cell", name=HOSTILE, exact=True)).to_be_visible()
    expect(page.locator("#last").get_by_role("cell", name="alpha", exact=True)).to_have_count(0)
    expect(page.locator("svg.timeline circle.completed")).to_have_count(1)
    expect(page.locator("svg.timeline circle.left").first).to_be_attached()
    # the hostile name stayed text: nothing was injected (the page fixture fails on any dialog)
    assert page.locator("img").count() == 0 and page.locator("b").count() == 0
    assert page.locator("script").count() == 0
    assert requests == [url], f"the report made requests: {requests}"


@pytest.mark.timeout(120)
def test_report_errors_are_one_sentence_with_the_exit_codes_of_rdzv_status(etcd_server, unique, tmp_path):
    endpoint = etcd_server.get_endpoint()
    missing_dir = rdzv("report", "--endpoint", endpoint, "--run-id", unique, "--out",
                       str(tmp_path / "nowhere" / "report.html"))
    assert missing_dir.returncode == 2 and "does not exist" in one_sentence(missing_dir)
    no_out = rdzv("report", "--endpoint", endpoint, "--run-id", unique)
    assert no_out.returncode == 2 and "--out" in one_sentence(no_out)
    a_directory = rdzv("report", "--endpoint", endpoint, "--run-id", unique, "--out", str(tmp_path))
    assert a_directory.returncode == 2 and "is a directory" in one_sentence(a_directory)
    unknown = rdzv("report", "--endpoint", endpoint, "--run-id", unique, "--out", str(tmp_path / "r.html"))
    assert unknown.returncode == 4 and unique in one_sentence(unknown)
    unreachable = rdzv("report", "--endpoint", "127.0.0.1:1", "--run-id", unique, "--out", str(tmp_path / "r.html"))
    assert unreachable.returncode == 3 and one_sentence(unreachable)
    assert list(tmp_path.iterdir()) == [], "a failed report left a file"

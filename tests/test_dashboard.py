"""The dashboard: its view models on a real etcd (no browser), its settings, and the served page
in a real headless Chromium (marked ``browser``) against a real etcd and real torch handlers."""

from __future__ import annotations

import base64
import os
import re
import threading

import pytest
from browser_helpers import WAIT_MS
from freezing import frozen
from rendezvous_helpers import params, rdzv_handler, rendezvous_all, torch_state_b64

HOSTILE_ADDR = "<img src=x onerror=alert(1)>"


# --- helpers --------------------------------------------------------------------------------


def run_key(prefix: str, run_id: str) -> str:
    return f"{prefix}/rendezvous/{run_id}"


@pytest.fixture
def no_tcp_store(monkeypatch):
    # Handlers bootstrap through the rendezvous store rather than a side TCPStore.
    monkeypatch.setenv("TORCH_DISABLE_SHARE_RDZV_TCP_STORE", "1")


# --- view models, no browser ----------------------------------------------------------------


@pytest.fixture
def monitor(etcd_server, unique):
    from rdzv.monitor import get_monitor

    watched = get_monitor(etcd_server.get_endpoint(), f"/{unique}", api="v2")
    yield watched
    watched.stop()


def wait_past(monitor, version: int) -> int:
    new = monitor.wait_for_version(version, timeout=10)
    assert new > version, "the monitor did not see the write"
    return new


@pytest.mark.timeout(60)
def test_views_patch_and_stream_instead_of_replacing(etcd_server, unique, monitor):
    from bokeh.document import Document
    from bokeh.document.events import ColumnDataChangedEvent, ColumnsStreamedEvent

    from rdzv.ui.fleet import FleetView
    from rdzv.ui.participants import ParticipantsView
    from rdzv.ui.timeline import TimelineView

    kv = etcd_server.kv(api="v2")
    prefix = f"/{unique}"
    nodes = {("host-a", 1, 0): 0, ("host-b", 2, 0): 1}
    version = monitor.version
    kv.put(run_key(prefix, "job"), torch_state_b64(nodes))
    version = wait_past(monitor, version)
    while monitor.run("job") is None:
        version = wait_past(monitor, version)

    fleet = FleetView(monitor=monitor)
    participants = ParticipantsView(monitor=monitor, run_id="job")
    timeline = TimelineView(monitor=monitor, run_id="job")
    for view in (fleet, participants, timeline):
        view.update()
    assert participants.source.data["addr"] == ["host-a", "host-b"]
    assert participants.source.data["rank"] == [0, 1]
    assert fleet.source.data["run_id"] == ["job"] and fleet.source.data["participants"] == [2]
    columns_before = {name: participants.source.data[name] for name in ("addr", "rank", "heartbeat_ms")}
    fleet_rows_before = fleet.source.data["run_id"]
    points_before = timeline.source.data["revision"]
    count_before = len(points_before)

    # Unchanged version: update does nothing at all.
    assert participants.update() is False and fleet.update() is False and timeline.update() is False
    assert all(participants.source.data[name] is column for name, column in columns_before.items())

    # Same nodes, new ranks: the cells are patched in place, not the table replaced.
    kv.put(run_key(prefix, "job"), torch_state_b64({("host-a", 1, 0): 1, ("host-b", 2, 0): 0}, round_=1))
    wait_past(monitor, version)
    for view in (fleet, participants, timeline):
        assert view.update() is True
    # Rows are ordered by rank, so host-b (now rank 0) comes first: that reorder is a replacement.
    assert participants.source.data["addr"] == ["host-b", "host-a"]
    assert fleet.source.data["round"] == [1]
    assert fleet.source.data["run_id"] is fleet_rows_before, "the fleet table was replaced, not patched"
    assert timeline.source.data["revision"] is points_before, "the timeline was rebuilt, not streamed"
    assert len(timeline.source.data["revision"]) == count_before + 1

    # A node joining after the others: streamed at the end, the table not replaced.
    columns_before = {name: participants.source.data[name] for name in ("addr", "rank")}
    document = Document()
    document.add_root(participants.source)
    sent: list = []
    document.callbacks.on_change(lambda event: sent.append(type(event)))
    three = {("host-a", 1, 0): 1, ("host-b", 2, 0): 0, ("host-c", 3, 0): 2}
    version = monitor.version
    kv.put(run_key(prefix, "job"), torch_state_b64(three, round_=1))
    version = wait_past(monitor, version)
    participants.update()
    assert participants.source.data["addr"] == ["host-b", "host-a", "host-c"]
    assert all(participants.source.data[name] is column for name, column in columns_before.items()), \
        "a node joining at the end must be streamed, not the table replaced"
    assert ColumnsStreamedEvent in sent and ColumnDataChangedEvent not in sent, sent
    assert len(participants.source.data["heartbeat_ms"]) == 3

    # The round reopens (ranks are not final): same rows, the rank cells patched in place.
    kv.put(run_key(prefix, "job"), torch_state_b64(three, round_=1, complete=False))
    wait_past(monitor, version)
    participants.update()
    assert participants.source.data["rank"] == ["", "", ""]
    assert all(participants.source.data[name] is column for name, column in columns_before.items()), \
        "changed cells must be patched, not the table replaced"
    assert ColumnDataChangedEvent not in sent, sent
    kv.close()


@pytest.mark.timeout(60)
def test_every_view_of_a_page_shows_the_one_frame_it_is_refreshed_at(etcd_server, unique, monitor):
    """The parts of one page never mix two versions of the monitor: a dashboard refreshed at a
    frame the monitor has since moved past shows that frame in every view, then the newest."""
    from rdzv.ui.app import Dashboard

    kv = etcd_server.kv(api="v2")
    prefix = f"/{unique}"
    version = monitor.version
    kv.put(run_key(prefix, "job"), torch_state_b64({("early-a", 1, 0): 0}, round_=1))
    while monitor.run("job") is None:
        version = wait_past(monitor, version)
    early = monitor.frame()
    kv.put(run_key(prefix, "job"), torch_state_b64({("early-a", 1, 0): 0, ("later-b", 2, 0): 1}, round_=2))
    kv.put(f"{prefix}/store/later-key", "later-value")
    while len(monitor.store_items()) < 1 or monitor.run("job").snapshot.round != 2:
        version = wait_past(monitor, version)
    board = Dashboard(monitor=monitor, run_id="job")
    assert board.refresh(early) is True
    assert board.participants.source.data["addr"] == ["early-a"]
    assert board.fleet.source.data["participants"] == [1] and board.fleet.source.data["round"] == [1]
    assert board.timeline.source.data["revision"][-1] == early.run("job").revision
    assert board.store.source.data["key"] == [] and board.round_card._run.snapshot.round == 1
    assert board.refresh() is True  # the monitor's newest frame
    assert board.participants.source.data["addr"] == ["early-a", "later-b"]
    assert board.fleet.source.data["participants"] == [2] and board.fleet.source.data["round"] == [2]
    assert board.timeline.source.data["revision"][-1] == monitor.run("job").revision
    assert board.store.source.data["key"] == ["later-key"] and board.round_card._run.snapshot.round == 2
    board.stop()
    kv.close()


@pytest.mark.timeout(60)
def test_the_event_log_shows_the_newest_change_first_and_stops_at_the_revision_travelled_to(
        etcd_server, unique, monitor):
    from rdzv.ui.timeline import TimelineView

    kv = etcd_server.kv(api="v2")
    prefix = f"/{unique}"
    names = [f"host-{index:02d}" for index in range(12)]
    written = []
    for count in range(1, len(names) + 1):  # one more node joins with each write
        version = monitor.version
        kv.put(run_key(prefix, "job"), torch_state_b64({(name, 1, 0): 0 for name in names[:count]}, complete=False))
        wait_past(monitor, version)
        while monitor.run("job") is None or monitor.run("job").revision in written:
            version = wait_past(monitor, version)
        written.append(monitor.run("job").revision)
    timeline = TimelineView(monitor=monitor, run_id="job", max_log_rows=10)
    timeline.update(force=True)
    log = timeline.log_source.data
    shown = [int(revision) for revision in log["revision"]]
    assert len(shown) == 10, "the log keeps max_log_rows rows"
    assert shown == sorted(shown, reverse=True) and shown[0] == written[-1], log
    assert names[-1] in log["change"][0] and not any(names[-1] in change for change in log["change"][1:])

    timeline.as_of = written[5]  # travel back: the log ends at the revision shown
    assert max(int(revision) for revision in timeline.log_source.data["revision"]) == written[5]
    assert not any(names[6] in change for change in timeline.log_source.data["change"])
    timeline.as_of = None
    assert timeline.log_source.data["change"] == log["change"]

    version = monitor.version  # one more node, live: its sentence goes on top, the oldest row off
    kv.put(run_key(prefix, "job"), torch_state_b64({(name, 1, 0): 0 for name in names + ["late"]}, complete=False))
    kv.close()
    wait_past(monitor, version)
    timeline.update()
    assert "late_1_0" in timeline.log_source.data["change"][0]
    assert timeline.log_source.data["change"][1:] == log["change"][:9]


def test_sync_source_sends_only_what_changed():
    from bokeh.models import ColumnDataSource

    from rdzv.ui.sync import sync_source

    source = ColumnDataSource({"key": ["a", "b"], "value": [1, 2]})
    column = source.data["value"]
    assert sync_source(source, {"key": ["a", "b"], "value": [1, 2]}, key="key") == "unchanged"
    assert sync_source(source, {"key": ["a", "b"], "value": [1, 5]}, key="key") == "patched"
    assert source.data["value"] is column and column == [1, 5]
    assert sync_source(source, {"key": ["a", "b", "c"], "value": [1, 5, 7]}, key="key") == "streamed"
    assert source.data["value"] is column and column == [1, 5, 7]
    assert sync_source(source, {"key": ["c", "a"], "value": [7, 1]}, key="key") == "replaced"
    assert source.data["key"] == ["c", "a"]


def test_sync_source_takes_arrays_and_rows_keyed_by_several_columns():
    """Times go as float arrays (NaN, no time, equal to NaN); a row is known by several columns."""
    import numpy as np
    from bokeh.document import Document
    from bokeh.models import ColumnDataSource

    from rdzv.ui.sync import sync_source

    def columns(hosts, times):
        return {"host": list(hosts), "pid": [1] * len(hosts), "ms": np.array(times, dtype=float)}

    source = ColumnDataSource({"host": [], "pid": [], "ms": []})
    key = ("host", "pid")
    assert sync_source(source, columns("ab", [np.nan, 5.0]), key=key) == "streamed"
    assert sync_source(source, columns("ab", [np.nan, 5.0]), key=key) == "unchanged"
    assert sync_source(source, columns("ab", [np.nan, 6.0]), key=key) == "patched"
    assert sync_source(source, columns("abc", [2.0, 6.0, np.nan]), key=key) == "streamed"
    assert np.array_equal(source.data["ms"], [2.0, 6.0, np.nan], equal_nan=True)
    shared = columns("ab", [1.0, 2.0])
    assert sync_source(source, shared, key=key) == "replaced"
    shared["ms"][0] = 9.0  # the source kept a copy of what it was given
    assert source.data["ms"][0] == 1.0
    document = Document()
    document.add_root(source)
    patches = []
    document.callbacks.on_change(lambda event: patches.append(getattr(event, "patches", None)))
    assert sync_source(source, columns("ab", [1.0, 3.0]), key=key) == "patched"
    assert patches == [{"ms": [(1, 3.0)]}] and type(patches[0]["ms"][0][1]) is float  # a plain number


def test_sources_taking_the_same_step_share_the_work_and_each_gets_every_change(monkeypatch):
    """Sessions bring their own sources to the same shared columns: the step between two of them
    is worked out once, each source still receives it (as a patch, a stream or new data), and
    the shared columns stay as they were."""
    import copy

    from bokeh.document import Document
    from bokeh.document.events import ColumnDataChangedEvent, ColumnsPatchedEvent, ColumnsStreamedEvent
    from bokeh.models import ColumnDataSource

    from rdzv.ui import sync

    worked_out = []
    step = sync._step
    monkeypatch.setattr(sync, "_step", lambda *args: worked_out.append(args) or step(*args))
    states = [{"key": ["a", "b"], "value": [1, 2]}, {"key": ["a", "b"], "value": [1, 5]},
              {"key": ["a", "b", "c"], "value": [1, 6, 7]}, {"key": ["c", "a"], "value": [7, 1]}]
    pristine = copy.deepcopy(states)
    sources, sent = [], []
    for _ in range(3):
        source = ColumnDataSource({"key": [], "value": []})
        document = Document()
        document.add_root(source)
        events: list = []
        document.callbacks.on_change(lambda event, events=events: events.append(type(event)))
        sources.append(source)
        sent.append(events)
    shown: list = [None] * len(sources)
    expected = ["streamed", "patched", "streamed", "replaced"]
    kinds = [[ColumnsStreamedEvent], [ColumnsPatchedEvent], [ColumnsPatchedEvent, ColumnsStreamedEvent],
             [ColumnDataChangedEvent]]
    for columns, result, events_sent in zip(states, expected, kinds, strict=True):
        worked_out.clear()
        for index, source in enumerate(sources):
            sent[index].clear()
            assert sync.sync_source(source, columns, key="key", shown=shown[index]) == result
            shown[index] = columns
            assert dict(source.data) == columns and source.data["value"] is not columns["value"]
            assert sent[index] == events_sent
        # the first step starts from each source's own empty data: nothing shared to start from
        assert len(worked_out) == (len(sources) if columns is states[0] else 1)
    assert states == pristine


# --- settings ---------------------------------------------------------------------------------


def test_settings_from_arguments_win_over_environment():
    from rdzv.ui.config import parse_config

    environ = {"RDZV_ENDPOINT": "envhost:2379", "RDZV_RUN_ID": "from-env", "RDZV_PREFIX": "/env"}
    config = parse_config(["--run-id", "from-args"], environ)
    assert (config.target.endpoint, config.run_id, config.target.prefix) == ("envhost:2379", "from-args", "/env")
    assert config.allow_writes is False
    assert parse_config(["--allow-writes", "--endpoint", "h:1"], {}).allow_writes is True
    assert parse_config([], {}).demo is True


@pytest.mark.parametrize("argv, words", [
    (["--endpoint", "h:2379", "--api", "v4"], "must be v2 or v3"),
    (["--api", "v3"], "without an etcd endpoint"),
    (["--endpoint", "bad host:2379"], "invalid host name"),
    (["--endpoint", "h:2379", "--ca-cert", "/nonexistent/ca.pem", "--protocol", "https"], "does not exist"),
    (["--endpoint", "h:2379", "--ssl-cert", __file__, "--ssl-cert-key", __file__], "use protocol https"),
    (["--bogus"], "unrecognized arguments"),
])
@pytest.mark.reliability
def test_bad_settings_are_one_sentence(argv, words):
    from rdzv.ui.config import ConfigError, parse_config

    with pytest.raises(ConfigError) as caught:
        parse_config(argv, {})
    message = str(caught.value)
    assert words in message and "\n" not in message and "Traceback" not in message


# --- the served page, in Chromium ---------------------------------------------------------------


@pytest.mark.browser
@pytest.mark.timeout(180)
def test_participants_then_a_late_joiner_appear_without_reload(etcd_server, unique, serve, page, no_tcp_store):
    from playwright.sync_api import expect

    endpoint = etcd_server.get_endpoint()
    handlers = [rdzv_handler(params(endpoint, unique, min_nodes=2, max_nodes=3)) for _ in range(2)]
    late = rdzv_handler(params(endpoint, unique, min_nodes=2, max_nodes=3))
    late_result: list[object] = []
    try:
        rendezvous_all(handlers)
        dashboard = serve(["--endpoint", endpoint, "--run-id", unique])
        page.goto(dashboard.url)
        pid = str(os.getpid())
        participant_cells = page.get_by_text("participant", exact=True)
        expect(participant_cells).to_have_count(2, timeout=WAIT_MS)
        expect(page.get_by_text(pid, exact=True)).to_have_count(2, timeout=WAIT_MS)
        expect(page.get_by_text(unique, exact=True).first).to_be_visible()
        expect_round_card(page, round=0, participants=2, waiting=0)
        expect(page.locator("[data-code=complete]")).to_be_visible(timeout=WAIT_MS)

        # A third node arrives: it waits for the next round, and the open page shows it, in the
        # table, the round card and what's happening (each pane's new text sent to the open page).
        joiner = threading.Thread(target=lambda: late_result.append(_safely(late.next_rendezvous)), daemon=True)
        joiner.start()
        expect(page.get_by_text("waiting", exact=True).first).to_be_visible(timeout=WAIT_MS)
        expect(page.get_by_text(pid, exact=True)).to_have_count(3, timeout=WAIT_MS)
        expect_round_card(page, round=0, participants=2, waiting=1)
        expect(page.locator("[data-code=nodes-waiting]")).to_contain_text("1 node waits to join round 1",
                                                                         timeout=WAIT_MS)

        # The first two re-rendezvous (as torch's agent does when nodes wait): three participants.
        rendezvous_all(handlers)
        joiner.join(timeout=60)
        expect(participant_cells).to_have_count(3, timeout=WAIT_MS)
        expect(page.get_by_text("Node 127.0.0.1_", exact=False).first).to_be_visible(timeout=WAIT_MS)
        expect_round_card(page, round=1, participants=3, waiting=0)
        expect(page.locator("[data-code=nodes-waiting]")).to_have_count(0, timeout=WAIT_MS)
    finally:
        for handler in (*handlers, late):
            _safely(handler.shutdown)


def expect_round_card(page, **figures) -> None:
    """The served page's round card shows each figure (label=value), waiting for it to."""
    from playwright.sync_api import expect

    for label, value in figures.items():
        tile = page.locator(".rdzv-tile").filter(has=page.locator(".rdzv-tile-label", has_text=re.compile(f"^{label}$", re.I)))
        expect(tile.locator(".rdzv-tile-value")).to_have_text(str(value), timeout=WAIT_MS)


def _safely(call):
    try:
        return call()
    except Exception as exc:  # a handler stopped by the test's cleanup
        return exc


@pytest.mark.reliability
@pytest.mark.browser
@pytest.mark.timeout(120)
def test_html_in_node_names_and_store_values_stays_text(etcd_server, unique, serve, page):
    from playwright.sync_api import expect

    kv = etcd_server.kv(api="v2")
    kv.put(run_key("/torch/elastic", unique), torch_state_b64({(HOSTILE_ADDR, 66, 0): 0, ("host-b", 67, 0): 1}))
    store_key = f"{unique}<img src=y onerror=alert(2)>"
    kv.put(f"/torch/elastic/store/{base64.b64encode(store_key.encode()).decode()}",
           base64.b64encode(b"<script>alert(3)</script>").decode())
    try:
        dashboard = serve(["--endpoint", etcd_server.get_endpoint(), "--run-id", unique])
        page.goto(dashboard.url)
        expect(page.get_by_text(HOSTILE_ADDR, exact=True)).to_be_visible(timeout=WAIT_MS)
        expect(page.get_by_text(store_key, exact=True)).to_be_visible(timeout=WAIT_MS)
        # The event log's sentence naming it is text too, and whole in its tooltip (the column cuts it).
        joined = page.locator("span[title]").filter(has_text=f"Node {HOSTILE_ADDR}_66_0 joined").first
        expect(joined).to_be_visible(timeout=WAIT_MS)
        assert joined.get_attribute("title") == joined.inner_text()
        assert joined.inner_text().startswith(f"Node {HOSTILE_ADDR}_66_0 joined the participants")
        page.get_by_text(store_key, exact=True).click()
        expect(page.get_by_text("<script>alert(3)</script>", exact=True)).to_have_count(2, timeout=WAIT_MS)
        page.wait_for_timeout(1000)  # a dialog, if any, would have fired by now
        assert page.locator("img[src='x'], img[src='y']").count() == 0
        assert page.get_by_role("button", name="Close run…").count() == 0, "writes are offered without --allow-writes"
    finally:
        kv.close()


@pytest.mark.browser
@pytest.mark.timeout(120)
def test_closing_a_run_needs_allow_writes_and_a_confirmation(etcd_server, unique, serve, page):
    from playwright.sync_api import expect

    from rdzv.state import decode_state_b64

    kv = etcd_server.kv(api="v2")
    key = run_key("/torch/elastic", unique)
    kv.put(key, torch_state_b64({("host-a", 1, 0): 0, ("host-b", 2, 0): 1}))
    try:
        dashboard = serve(["--endpoint", etcd_server.get_endpoint(), "--run-id", unique, "--allow-writes"])
        page.goto(dashboard.url)
        page.get_by_role("button", name="Close run…").click(timeout=WAIT_MS)
        confirm = page.get_by_role("button", name="Yes, close it")
        expect(confirm).to_be_visible(timeout=WAIT_MS)
        assert decode_state_b64(kv.get(key).value).closed is False, "closed before the confirmation"
        confirm.click()
        expect(page.get_by_text(f"Run '{unique}' is closed.", exact=True)).to_be_visible(timeout=WAIT_MS)
        assert decode_state_b64(kv.get(key).value).closed is True
        expect(page.get_by_text("closed", exact=True).first).to_be_visible(timeout=WAIT_MS)
    finally:
        kv.close()


@pytest.mark.reliability
@pytest.mark.browser
@pytest.mark.timeout(150)
def test_connection_banner_follows_etcd(serve, page):
    from playwright.sync_api import expect

    from rdzv.server import EtcdServer

    with EtcdServer(enable_v2=True) as server:
        dashboard = serve(["--endpoint", server.get_endpoint()])
        page.goto(dashboard.url)
        banner = page.locator(".rdzv-banner")
        expect(banner).to_have_attribute("data-state", "connected", timeout=WAIT_MS)
        with frozen(server.pid):  # etcd stops answering, its port stays open
            expect(banner).to_have_attribute("data-state", "unreachable", timeout=WAIT_MS)
            expect(page.get_by_text("etcd unreachable", exact=True)).to_be_visible()
        expect(banner).to_have_attribute("data-state", re.compile("recovered|connected"), timeout=WAIT_MS)


@pytest.mark.reliability
@pytest.mark.browser
@pytest.mark.timeout(60)
def test_bad_arguments_show_one_sentence(serve, page):
    from playwright.sync_api import expect

    dashboard = serve(["--endpoint", "127.0.0.1:2379", "--api", "v4"])
    page.goto(dashboard.url)
    message = page.locator("[data-role='config-error']")
    expect(message).to_contain_text("The etcd API must be v2 or v3, not 'v4' (from --api).", timeout=WAIT_MS)
    assert "Traceback" not in message.inner_text()


@pytest.mark.browser
@pytest.mark.timeout(180)
def test_demo_mode_comes_alive(serve, page, tmp_path):
    from playwright.sync_api import expect

    dashboard = serve([], env={"RDZV_ENDPOINT": ""})
    page.goto(dashboard.url, timeout=60_000)
    expect(page.get_by_text("demo", exact=True).first).to_be_visible(timeout=60_000)
    expect(page.get_by_text("participant", exact=True).first).to_be_visible(timeout=90_000)
    expect(page.get_by_text(re.compile(r"^node-\d+$")).first).to_be_visible(timeout=WAIT_MS)
    page.screenshot(path=tmp_path / "dashboard.png", full_page=True)  # kept with pytest's tmp dirs, for a look

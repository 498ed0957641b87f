"""Ages the page counts by itself (rdzv.ui.browser_clock): the same text as rdzv.text.age, told
from the server's clock even when the viewer's is wrong, moving without the server sending
anything; a node's row redrawn by the server only when it turns stale; frozen when travelling
in time. On a real etcd, in a real Chromium."""

from __future__ import annotations

import math
import re
import time
from datetime import datetime, timedelta, timezone

import pytest
from browser_helpers import WAIT_MS
from rendezvous_helpers import torch_state_b64

from rdzv.text import age

SKEW_S = 3600
"""How far ahead of the server the skewed viewer's clock runs."""


def state_b64(heartbeats: dict[tuple[str, int, int], datetime]) -> str:
    """Round 1, complete, of these participants (ranks in order), each with its last heartbeat."""
    return torch_state_b64({node: rank for rank, node in enumerate(heartbeats)}, round_=1, heartbeats=heartbeats)


def open_skewed_dashboard(etcd_server, unique: str, serve, page, beat: datetime) -> list[str]:
    """Open, in ``page``, a dashboard of run ``unique`` (host-a, last heartbeat at ``beat``), the
    viewer's clock :data:`SKEW_S` ahead; returns the websocket frames the page receives."""
    kv = etcd_server.kv(api="v2")
    kv.put(f"/torch/elastic/rendezvous/{unique}", state_b64({("host-a", 1, 0): beat}))
    kv.close()
    dashboard = serve(["--endpoint", etcd_server.get_endpoint(), "--run-id", unique])
    page.clock.install(time=time.time() + SKEW_S)
    frames: list[str] = []
    page.on("websocket", lambda socket: socket.on(
        "framereceived", lambda payload: frames.append(payload if isinstance(payload, str) else repr(payload))))
    page.goto(dashboard.url)
    return frames


@pytest.mark.browser
@pytest.mark.timeout(60)
def test_the_pages_age_text_is_rdzv_text_age(page):
    from rdzv.text import age
    from rdzv.ui.browser_clock import AGE_JS

    durations_ms = [-5_000, 0, 999, 1_000, 59_999, 60_000, 61_000, 605_000, 3_599_999, 3_600_000, 3_661_000,
                    86_399_999, 86_400_000, 90_061_000, 10 * 86_400_000 + 5_000]
    page.set_content("<html><body></body></html>")
    shown = page.evaluate(f"(durations) => durations.map({AGE_JS})", durations_ms)
    assert shown == [age(ms / 1000) for ms in durations_ms]
    assert page.evaluate(f"() => ({AGE_JS})(NaN)") == age(None)


@pytest.mark.browser
@pytest.mark.timeout(120)
def test_ages_count_in_the_page_by_the_servers_clock_without_the_server(etcd_server, unique, serve, page):
    """A viewer whose clock runs an hour ahead reads the server's ages, and they move while the
    server sends no heartbeat data at all."""
    from playwright.sync_api import expect

    from rdzv.text import age

    beat = datetime.now(timezone.utc) - timedelta(seconds=3)
    frames = open_skewed_dashboard(etcd_server, unique, serve, page, beat)
    expect(page.get_by_text("host-a", exact=True)).to_be_visible(timeout=WAIT_MS)
    # host-a's row of the nodes table; seconds only: an age an hour out (the viewer's own clock)
    # would read "1 h ..".
    node_row = page.locator(".slick-row").filter(has=page.get_by_text("host-a", exact=True))
    ages = node_row.get_by_text(re.compile(r"^\d+ s$"))
    expect(ages.first).to_be_visible(timeout=WAIT_MS)

    def age_shown() -> int:
        return int(ages.first.inner_text().split()[0])

    frames.clear()
    first, read_at = age_shown(), datetime.now(timezone.utc)
    assert abs(first - (read_at - beat).total_seconds()) <= 3, (first, age(read_at - beat), node_row.all_inner_texts())
    deadline = time.monotonic() + 30
    while age_shown() < first + 2:
        assert time.monotonic() < deadline, f"the age stayed at {age_shown()} s"
        page.wait_for_timeout(200)
    assert not [frame for frame in frames if "heartbeat_ms" in frame], \
        "the server sent heartbeat data although no heartbeat changed"


def test_a_nodes_row_turns_stale_when_its_time_comes_and_travel_freezes_the_ages(etcd_server, unique):
    from rdzv.monitor import get_monitor
    from rdzv.rendezvous_settings import RendezvousSettings
    from rdzv.ui.browser_clock import AS_OF_FIELD, epoch_ms
    from rdzv.ui.participants import HEARTBEAT_FIELD, STALE_COLOR, ParticipantsView

    now = datetime.now(timezone.utc)
    beats = {("host-a", 1, 0): now, ("host-b", 2, 0): now - timedelta(seconds=5)}
    kv = etcd_server.kv(api="v2")
    key = f"/{unique}/rendezvous/job"
    monitor = get_monitor(etcd_server.get_endpoint(), f"/{unique}", api="v2")
    try:
        version = monitor.version
        kv.put(key, state_b64(beats))
        while monitor.run("job") is None:
            version = monitor.wait_for_version(version, timeout=10)
        view = ParticipantsView(monitor=monitor, run_id="job")
        view.update(force=True)
        assert view.source.data["addr"] == ["host-a", "host-b"]
        assert list(view.source.data[HEARTBEAT_FIELD]) == [epoch_ms(beat) for beat in beats.values()]
        assert all(math.isnan(value) for value in view.source.data[AS_OF_FIELD])
        assert view.source.data["stale"] == ["", ""]

        b_turns = RendezvousSettings().stale_after(beats[("host-b", 2, 0)])
        columns = {name: view.source.data[name] for name in view.source.data}
        view.tick(b_turns)  # not after it yet: nothing is sent
        assert view.source.data["stale"] == ["", ""]
        assert all(view.source.data[name] is column for name, column in columns.items())
        view.tick(b_turns + timedelta(microseconds=1))
        assert view.source.data["stale"] == ["", "stale"]
        assert view.source.data["color"][1] == STALE_COLOR
        assert all(view.source.data[name] is column for name, column in columns.items()), \
            "turning stale must patch the row, not replace the table"

        # A newer heartbeat for host-b, then back to the revision before it: aged at that moment.
        first = monitor.run("job").revision
        version = monitor.version
        kv.put(key, state_b64({**beats, ("host-b", 2, 0): datetime.now(timezone.utc)}))
        monitor.wait_for_version(version, timeout=10)
        view.as_of = first
        entry = monitor.revision_at("job", first)
        assert list(view.source.data[AS_OF_FIELD]) == [epoch_ms(entry.seen_at)] * 2
        assert view.source.data["stale"] == ["", ""]  # neither was stale when that revision was seen
        columns = {name: list(view.source.data[name]) for name in view.source.data}
        view.tick(datetime.now(timezone.utc) + timedelta(hours=1))
        assert {name: list(view.source.data[name]) for name in view.source.data} == columns, \
            "a revision of the past changed with the clock"
    finally:
        monitor.stop()
        kv.close()


@pytest.mark.browser
@pytest.mark.timeout(60)
def test_the_pages_time_marks_read_as_rdzv_time_marks(page):
    """The marks' words in JavaScript equal rdzv.time_marks.words for every kind; a marked text
    in a table cell is escaped around its marks."""
    import html

    from rdzv import time_marks
    from rdzv.ui.browser_clock import EXPAND_MARKS_HTML_JS, MARK_WORDS_JS

    now = datetime(2026, 12, 1, 23, 59, 30, 250_000, tzinfo=timezone.utc)
    now_ms = now.timestamp() * 1000
    spans_us = [-5_000_000, 0, 999_000, 1_000_000, 1_001_000, 59_999_000, 60_000_000, 605_000_000, 3_600_000_000,
                86_400_000_000, 10 * 86_400_000_000 + 5_000_000]
    now_us = int(now_ms) * 1000
    cases = [(kind, now_us - span if kind in (time_marks.SINCE,) else (
        span if kind == time_marks.CLOCK_AFTER else now_us + span)) for kind in time_marks.KINDS for span in spans_us]
    page.set_content("<html><body></body></html>")
    shown = page.evaluate(f"([cases, now]) => cases.map(([kind, micros]) => ({MARK_WORDS_JS})(kind, micros, now))",
                          [cases, now_ms])
    assert shown == [time_marks.words(kind, micros, now) for kind, micros in cases]

    text = f"<img src=x onerror=alert(1)> & 'b' silent for {time_marks.since(now - timedelta(seconds=75))}."
    assert page.evaluate(f"([text, now]) => ({EXPAND_MARKS_HTML_JS})(text, now)", [text, now_ms]) == \
        html.escape(time_marks.expand(text, now))


@pytest.mark.browser
@pytest.mark.timeout(120)
def test_whats_happening_counts_its_ages_in_the_page_without_the_server(etcd_server, unique, serve, page):
    """Every node dead and etcd quiet: "What's happening" and the runs table's headline read the
    silence by the server's clock (the viewer's runs an hour ahead), and it grows while the server
    sends neither sentence again."""
    from playwright.sync_api import expect

    beat = datetime.now(timezone.utc) - timedelta(seconds=20)
    frames = open_skewed_dashboard(etcd_server, unique, serve, page, beat)
    silence = re.compile(r"has sent no keep-alive for (?:(\d+) min )?(\d+) s")
    finding = page.locator("[data-code=stale-heartbeat]").first
    headline = page.locator(".slick-row").filter(has_text=unique).filter(has_text=silence).first
    expect(finding).to_contain_text(silence, timeout=WAIT_MS)
    expect(headline).to_be_visible(timeout=WAIT_MS)
    page.wait_for_timeout(6_000)  # past the first tellings of the server's clock

    def seconds_shown(where) -> int:
        minutes, seconds = silence.search(where.inner_text()).groups()
        return int(minutes or 0) * 60 + int(seconds)

    frames.clear()
    first, read_at = seconds_shown(finding), datetime.now(timezone.utc)
    assert abs(first - (read_at - beat).total_seconds()) <= 3, finding.inner_text()
    assert abs(seconds_shown(headline) - first) <= 1, headline.inner_text()
    assert silence.search(headline.locator("span[title]").first.get_attribute("title")), \
        "the headline's whole sentence is not its tooltip"
    deadline = time.monotonic() + 30
    while seconds_shown(finding) < first + 2 or seconds_shown(headline) < first + 2:
        assert time.monotonic() < deadline, f"the silence stayed at {finding.inner_text()} / {headline.inner_text()}"
        page.wait_for_timeout(200)
    assert not [frame for frame in frames if "keep-alive" in frame], \
        "the server sent the finding again although nothing but the time changed"


def test_whats_happening_sends_its_markup_only_when_a_finding_changes(etcd_server, unique):
    """Ticks a second apart leave the card's markup as it was (the page moves its ages); travelling
    back shows the ages of that revision's moment, fixed, with nothing for the page to move."""
    from rdzv.monitor import get_monitor
    from rdzv.ui.whats_happening import WhatsHappening

    beat = datetime.now(timezone.utc) - timedelta(seconds=40)
    kv = etcd_server.kv(api="v2")
    key = f"/{unique}/rendezvous/job"
    monitor = get_monitor(etcd_server.get_endpoint(), f"/{unique}", api="v2")
    try:
        version = monitor.version
        kv.put(key, state_b64({("host-a", 1, 0): beat}))
        while monitor.run("job") is None:
            version = monitor.wait_for_version(version, timeout=10)
        view = WhatsHappening(monitor=monitor, run_id="job")
        now = datetime.now(timezone.utc).replace(microsecond=0)
        view.update(force=True, now=now)
        shown = view.pane.object
        assert "data-rdzv-mark" in shown and "no keep-alive for" in shown
        for later in (1, 2, 30):
            view.tick(now + timedelta(seconds=later))
            assert view.pane.object is shown, f"the markup was sent again {later} s later"
        assert monitor.diagnose("job", now=now)[0].message != monitor.diagnose("job", now=now + timedelta(seconds=1))[0].message

        revision = monitor.run("job").revision
        version = monitor.version
        kv.put(key, state_b64({("host-a", 1, 0): datetime.now(timezone.utc)}))
        monitor.wait_for_version(version, timeout=10)
        view.as_of = revision
        seen_at = monitor.revision_at("job", revision).seen_at
        travelled = view.pane.object
        assert "data-rdzv-mark" not in travelled
        assert f"no keep-alive for {age(seen_at - beat)}" in travelled
        view.tick(datetime.now(timezone.utc) + timedelta(hours=1))
        assert view.pane.object is travelled
    finally:
        monitor.stop()
        kv.close()


@pytest.mark.browser
@pytest.mark.timeout(120)
def test_a_page_that_loads_slowly_still_starts_its_clock(etcd_server, unique, serve, page):
    """BokehJS arrives 8 s late, after the session's first tellings of the clock: once the page
    has loaded it is told again, so a viewer whose clock runs an hour ahead still reads the
    server's ages, and they move though etcd stays quiet."""
    from playwright.sync_api import expect

    from rdzv.ui.browser_clock import FIRST_TELLINGS

    delayed: list[str] = []

    def late_bokeh(route) -> None:
        if not delayed:
            delayed.append(route.request.url)
            time.sleep(FIRST_TELLINGS + 3)
        route.continue_()

    page.route(re.compile(r".*/bokeh(\.min)?\.js.*"), late_bokeh)
    open_skewed_dashboard(etcd_server, unique, serve, page, datetime.now(timezone.utc))
    assert delayed, "BokehJS was not delayed"
    row = page.locator(".slick-row").filter(has_text=unique).first
    expect(row).to_be_visible(timeout=WAIT_MS)
    changed = row.get_by_text(re.compile(r"^\d+ s$"))  # not "1 h 00 min": the viewer's own clock
    expect(changed.first).to_be_visible(timeout=WAIT_MS)

    def age_shown() -> int:
        return int(changed.first.inner_text().split()[0])

    first = age_shown()
    deadline = time.monotonic() + 30
    while age_shown() < first + 2:
        assert time.monotonic() < deadline, f"the runs table's last change stayed at {age_shown()} s"
        page.wait_for_timeout(200)

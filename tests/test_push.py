"""A served page is told of each change by the monitor (pushed to its session's document): no
periodic poll of the monitor runs, a change reaches Chromium in one message, and a closed page's
session lets go of the monitor."""

from __future__ import annotations

import gc
import json
import re
import threading
import time
import weakref

import pytest
from conftest import free_port
from rendezvous_helpers import torch_state_b64
from waiting import wait_for

from rdzv.kv import KeyLayout
from rdzv.monitor import get_monitor


class Served:
    """Dashboards of one monitor served by ``pn.serve`` in this process (so a test can look at
    each session's Dashboard: ``boards``, newest last), and where a page opens them."""

    def __init__(self, etcd_server, unique: str) -> None:
        import panel as pn

        from rdzv.ui.app import Dashboard

        self.layout = KeyLayout(f"/{unique}")
        self.monitor = get_monitor(etcd_server.get_endpoint(), self.layout.prefix, api="v3")
        self.boards: list[Dashboard] = []

        def page():
            self.boards.append(Dashboard(monitor=self.monitor, run_id="job", poll_ms=10_000))
            return self.boards[-1]

        port = free_port()
        self.url = f"http://127.0.0.1:{port}/dashboard"
        self.server = pn.serve({"dashboard": page}, port=port, address="127.0.0.1", show=False, threaded=True,
                               websocket_origin=[f"127.0.0.1:{port}"], check_unused_sessions_milliseconds=300,
                               unused_session_lifetime_milliseconds=300)

    def open(self, tab) -> None:
        """Load the dashboard in ``tab`` (retrying while the server starts)."""
        deadline = time.monotonic() + 60
        while True:
            try:
                tab.goto(self.url)
                return
            except Exception:
                assert time.monotonic() < deadline, "the server did not answer"
                time.sleep(0.2)

    def stop(self) -> None:
        self.server.stop()
        self.monitor.stop()


@pytest.fixture
def served(etcd_server, unique):
    served = Served(etcd_server, unique)
    yield served
    served.stop()


@pytest.mark.browser
@pytest.mark.timeout(180)
def test_a_change_is_pushed_to_the_page_and_a_closed_page_lets_go(etcd_server, served, browser):
    from browser_helpers import WAIT_MS
    from playwright.sync_api import expect

    from rdzv.ui.app import TICK_SECONDS
    from rdzv.ui.serving_metrics import SERVING

    layout, monitor, boards = served.layout, served.monitor, served.boards
    before = SERVING.read()
    context = browser.new_context()
    try:
        with etcd_server.kv(api="v3") as kv:
            kv.put(layout.state_key("job"), torch_state_b64({("pushed-a", 1, 0): 0}))
            tab = context.new_page()
            frames: list[str] = []
            tab.on("websocket", lambda socket: socket.on(
                "framereceived", lambda payload: frames.append(payload if isinstance(payload, str) else "")))
            served.open(tab)
            expect(tab.get_by_text("pushed-a", exact=True).first).to_be_visible(timeout=WAIT_MS)
            board = boards[-1]
            # Changes go out as one message once the page has said it rendered (until then, see
            # the next test).
            wait_for(lambda: board._page_ready, "the page's document_ready reaching the server")
            assert SERVING.read()["sessions"] == before["sessions"] + 1  # the server's /metrics count it
            # Push mode: subscribed to the monitor; the only periodic callback moves the clocks.
            assert board._unsubscribe is not None and board._callback.period == 1000
            # The monitor's thread never touches the session's document: the refresh is scheduled
            # from the server's loop, the thread that runs it (a callback added from another thread
            # while Panel holds the document can be lost with Bokeh's held events).
            schedulers, runners = [], []
            add_next_tick_callback, pushed = board._document.add_next_tick_callback, board._pushed
            board._document.add_next_tick_callback = lambda callback: (
                schedulers.append(threading.get_ident()), add_next_tick_callback(callback))[1]
            board._pushed = lambda: (runners.append(threading.get_ident()), pushed())[1]
            pushes = board.pushes
            kv.put(layout.state_key("job"), torch_state_b64({("pushed-a", 1, 0): 0, ("pushed-b", 2, 0): 1}))
            expect(tab.get_by_text("pushed-b", exact=True).first).to_be_visible(timeout=WAIT_MS)
            assert board.pushes > pushes
            # ... and how long it waited for the loop, and how long it took (the server's /metrics)
            counted = SERVING.read()
            assert counted["push_delay"]["count"] >= before["push_delay"]["count"] + 1
            assert counted["refresh"]["count"] == counted["push_delay"]["count"]
            assert counted["refresh"]["sum"] > before["refresh"]["sum"]
            assert schedulers and runners and set(schedulers) == set(runners), (schedulers, runners)
            # One change, one message: what it changed (the runs table, the nodes, the event log...)
            # reaches the page together, not as one message per changed property.
            carrying = next(frame for frame in frames if "pushed-b" in frame)
            changed_models = {event["model"]["id"] for event in json.loads(carrying)["events"] if "model" in event}
            assert len(changed_models) >= 3, f"the change's first message changed only {changed_models}"
            # A push that never runs (its scheduled refresh lost) costs the page a few seconds, not
            # every later change: the session's clock shows the change, and pushes resume.
            board._push_pending_since = time.monotonic() - 60
            pushes = board.pushes
            kv.put(layout.state_key("job"), torch_state_b64({("pushed-a", 1, 0): 0, ("pushed-c", 3, 0): 1}))
            expect(tab.get_by_text("pushed-c", exact=True).first).to_be_visible(timeout=WAIT_MS)
            assert board.lost_pushes == 1 and board.pushes == pushes
            assert SERVING.read()["lost_pushes"] == before["lost_pushes"] + 1
            # Someone typing in the page keeps the keyboard while the tables redraw (a redraw
            # re-applies a table's selection, and the grid would take the focus).
            typing = tab.get_by_placeholder("Filter keys and values…")
            typing.focus()
            expect(typing).to_be_focused()
            kv.put(layout.state_key("job"), torch_state_b64({("pushed-a", 1, 0): 0, ("pushed-d", 4, 0): 1}))
            expect(tab.get_by_text("pushed-d", exact=True).first).to_be_visible(timeout=WAIT_MS)
            expect(typing).to_be_focused()
            # A click on a run's row selects that run, shown in bold; the table keeps no selection
            # of its own (which every redraw would re-apply, taking the keyboard).
            kv.put(layout.state_key("other"), torch_state_b64({("other-a", 5, 0): 0}))
            tab.get_by_text("other", exact=True).first.click()
            wait_for(lambda: board.run_id == "other", "the clicked run becoming the selected one")
            expect(tab.get_by_text("other-a", exact=True).first).to_be_visible(timeout=WAIT_MS)
            assert board.fleet.source.data["weight"] == ["normal", "bold"]
            assert board.fleet.source.selected.indices == []
            assert board.pushes > pushes
            subscribers = len(monitor._subscribers)
            assert len(board._document.session_callbacks) == 1  # the clock's
            closed_board = weakref.ref(board)
            context.close()
            deadline = time.monotonic() + 60
            while board._unsubscribe is not None:  # the session is destroyed: its subscription goes
                assert time.monotonic() < deadline, "the closed page's session kept its subscription"
                time.sleep(0.1)
            assert len(monitor._subscribers) == subscribers - 1 and board._callback is None
            assert SERVING.read()["sessions"] == before["sessions"]
            ticked = board._last_tick
            time.sleep(3 * TICK_SECONDS)
            assert board._last_tick == ticked, "the closed page's clock kept ticking"
            # ... nor its memory: once the test lets go of it, the dashboard and its views are freed
            # (not the document: a context variable of Panel's, a contextvars mapping, still held it here).
            del board, pushed, add_next_tick_callback
            boards.clear()
            locals()  # re-syncs this frame's locals snapshot (taken by tools that inspect frames) without them
            deadline = time.monotonic() + 60
            while closed_board() is not None:
                assert time.monotonic() < deadline, (
                    "the closed page's dashboard is still referenced by: "
                    f"{[type(holder).__name__ for holder in gc.get_referrers(closed_board())]}")
                gc.collect()
                time.sleep(0.2)
            kv.delete(layout.state_key("job"))
            kv.delete(layout.state_key("other"))
    finally:
        context.close()


@pytest.mark.browser
@pytest.mark.timeout(180)
def test_a_change_reaches_a_page_that_has_not_yet_said_it_rendered(etcd_server, served, browser):
    """Between pulling its document and saying it rendered (BokehJS's ``document_ready``), a
    page is one Panel counts as not connected; a change made then must still reach it (Panel's
    hold drops such changes, expecting to send the whole document on connection)."""
    from browser_helpers import WAIT_MS
    from playwright.sync_api import expect

    held: list[str | bytes] = []
    to_forward = [-1]  # frames of the page's messages still to pass (Bokeh's: header, metadata, content)

    def route(socket) -> None:
        # Forward the page's messages until its request for the document has gone; hold the
        # rest (its document_ready among them), as a slow page's would be.
        server = socket.connect_to_server()

        def from_page(message: str | bytes) -> None:
            if to_forward[0] == 0:
                held.append(message)
                return
            server.send(message)
            if isinstance(message, str) and '"PULL-DOC-REQ"' in message:
                to_forward[0] = 2
            elif to_forward[0] > 0:
                to_forward[0] -= 1
        socket.on_message(from_page)

    context = browser.new_context()
    try:
        with etcd_server.kv(api="v3") as kv:
            kv.put(served.layout.state_key("job"), torch_state_b64({("early-a", 1, 0): 0}))
            tab = context.new_page()
            tab.route_web_socket(re.compile(r".*/ws$"), route)
            served.open(tab)
            expect(tab.get_by_text("early-a", exact=True).first).to_be_visible(timeout=WAIT_MS)
            ready = [message for message in held if isinstance(message, str) and "document_ready" in message]
            assert ready, "the page's document_ready was not held back"
            kv.put(served.layout.state_key("job"), torch_state_b64({("early-a", 1, 0): 0, ("early-b", 2, 0): 1}))
            expect(tab.get_by_text("early-b", exact=True).first).to_be_visible(timeout=WAIT_MS)
            assert served.boards[-1].pushes, "the change was not pushed"
    finally:
        context.close()


ROW_IN_VIEW_JS = """(viewport, text) => viewport.isConnected && [...viewport.querySelectorAll('.slick-row')].some((row) => {
  const shown = row.getBoundingClientRect(), port = viewport.getBoundingClientRect();
  return row.firstElementChild.textContent.trim() === text && shown.top >= port.top - 1 && shown.bottom <= port.bottom + 1;
})"""
"""Whether the row of the grid ``viewport`` whose first cell reads ``text`` is inside it (a grid
also renders a few rows beyond its scrolled view, which count as visible for Playwright)."""


@pytest.mark.browser
@pytest.mark.timeout(180)
def test_the_selected_run_is_scrolled_into_view_and_a_user_scroll_is_kept(etcd_server, served, browser):
    """The runs table shows 8 rows; a page opened on the last of 13 runs shows it, and the page
    stays where its user scrolled while runs change, until another run is selected or BokehJS
    draws the table anew (it does when the number of rows changes, from the top)."""
    from browser_helpers import WAIT_MS
    from playwright.sync_api import expect

    layout = served.layout
    others = [f"a-{number:02d}" for number in range(12)]  # sorted before "job"
    context = browser.new_context()
    try:
        with etcd_server.kv(api="v3") as kv:
            for number, run_id in enumerate(others):
                kv.put(layout.state_key(run_id), torch_state_b64({(f"node-{number}", 1, 0): 0}))
            kv.put(layout.state_key("job"), torch_state_b64({("job-a", 1, 0): 0}))
            wait_for(lambda: len(served.monitor.runs()) == 13, "the monitor seeing the 13 runs")
            tab = context.new_page()
            page_errors: list[str] = []
            tab.on("pageerror", lambda error: page_errors.append(str(error)))
            served.open(tab)
            runs = tab.locator(".rdzv-runs .slick-viewport-top.slick-viewport-left")
            expect(runs).to_be_visible(timeout=WAIT_MS)

            def in_view(text: str) -> None:
                deadline = time.monotonic() + WAIT_MS / 1000
                while not runs.evaluate(ROW_IN_VIEW_JS, text):
                    assert time.monotonic() < deadline, f"the runs table does not show {text!r}"
                    tab.wait_for_timeout(100)

            def scrolled_by_user_after_page_turn() -> int:
                tab.evaluate("() => new Promise((resolve) => setTimeout(resolve, 0))")  # the scroll's turn
                return runs.evaluate("(viewport) => viewport.scrollTop")

            in_view("job")
            board = served.boards[-1]
            assert board.fleet.source.data["weight"][-1] == "bold"
            runs.evaluate("(viewport) => { viewport.scrollTop = 0; }")
            in_view("a-00")
            # A change of a shown run leaves the user's place as it was ...
            kv.put(layout.state_key("a-00"), torch_state_b64({("node-0", 1, 0): 0, ("node-0b", 2, 0): 1}))
            expect(tab.locator(".slick-row").filter(has_text="a-00").first).to_contain_text(
                re.compile(r"a-00\s*v3\s*0\s*2"), timeout=WAIT_MS)
            assert scrolled_by_user_after_page_turn() == 0
            # ... and so does a click, which selects a run in view ...
            tab.locator(".slick-row").filter(has_text="a-01").first.click()
            wait_for(lambda: board.run_id == "a-01", "the clicked run a-01 becoming the selected one")
            assert scrolled_by_user_after_page_turn() == 0
            # ... while a run selected by the program (as a notebook's cell would) is brought into view,
            board._document.add_next_tick_callback(lambda: setattr(board, "run_id", "job"))
            in_view("job")
            # and so is the selected run when a new run makes BokehJS draw a new grid from the top.
            runs.evaluate("(viewport) => { viewport.scrollTop = 0; }")
            in_view("a-00")
            kv.put(layout.state_key("a-12"), torch_state_b64({("node-12", 1, 0): 0}))
            in_view("job")
            assert "a-12" in board.fleet.source.data["run_id"]
            assert page_errors == []
            for run_id in [*others, "a-12", "job"]:
                kv.delete(layout.state_key(run_id))
    finally:
        context.close()


@pytest.mark.browser
@pytest.mark.timeout(180)
def test_a_patched_cell_is_drawn_again_in_a_table_without_a_clock(etcd_server, served, browser):
    """Changing a value in the store patches its row's cells (same rows): the page draws the rows
    on screen again (tables.REDRAW_TABLE_JS), without BokehJS's whole update of the table (which
    re-fits every column, most of what a change of a big table costs the page), and the store
    table has no page clock that would redraw it anyway."""
    from browser_helpers import WAIT_MS
    from playwright.sync_api import expect

    layout = served.layout
    context = browser.new_context()
    try:
        with etcd_server.kv(api="v3") as kv:
            kv.put(layout.state_key("job"), torch_state_b64({("patched-a", 1, 0): 0}))
            kv.put(f"{layout.store_prefix}/patched-key", "first-value")
            tab = context.new_page()
            served.open(tab)
            expect(tab.get_by_text("first-value", exact=True).first).to_be_visible(timeout=WAIT_MS)
            board = served.boards[-1]
            wait_for(lambda: board._page_ready, "the page's document_ready reaching the server")
            tab.evaluate("""() => {
              window.rdzvWholeUpdates = 0;
              for (const doc of Bokeh.documents) for (const model of doc.all_models) {
                if (model.type === "DataTable") model.view.change.connect(() => window.rdzvWholeUpdates++);
              }
            }""")
            rows = len(board.store.source.data["key"])
            kv.put(f"{layout.store_prefix}/patched-key", "second-value")
            expect(tab.get_by_text("second-value", exact=True).first).to_be_visible(timeout=WAIT_MS)
            expect(tab.get_by_text("first-value", exact=True)).to_have_count(0, timeout=WAIT_MS)
            assert len(board.store.source.data["key"]) == rows
            assert tab.evaluate("() => window.rdzvWholeUpdates") == 0
            kv.delete(layout.state_key("job"))
            kv.delete(f"{layout.store_prefix}/patched-key")
    finally:
        context.close()


@pytest.mark.browser
@pytest.mark.timeout(180)
def test_pages_refreshed_in_turn_share_one_frame_and_a_later_change_still_reaches_them(
        etcd_server, served, browser, monkeypatch):
    """Two pages told of one change are refreshed one after the other on the server's loop. The
    first takes the monitor's frame; when the monitor has moved on by the time the second's
    turn comes, the second shows that same frame (and shares the tables worked out from it), then
    the later change, which both pages end up showing."""
    from browser_helpers import WAIT_MS
    from playwright.sync_api import expect

    import rdzv.ui.app

    # Frames this old are shared: however long this machine takes between the two turns (the
    # age limit itself is the monitor's, tested in test_monitor).
    monkeypatch.setattr(rdzv.ui.app, "FRAME_SHARED_SECONDS", 600.0)

    layout, monitor, boards = served.layout, served.monitor, served.boards
    context = browser.new_context()
    try:
        with etcd_server.kv(api="v3") as kv:
            kv.put(layout.state_key("job"), torch_state_b64({("frame-a", 1, 0): 0}))
            tabs = [context.new_page(), context.new_page()]
            for tab in tabs:
                served.open(tab)
                expect(tab.get_by_text("frame-a", exact=True).first).to_be_visible(timeout=WAIT_MS)
            pages = wait_for(lambda: [board for board in boards if board._page_ready][-2:] if sum(
                board._page_ready for board in boards) >= 2 else None, "both pages saying they rendered")
            wait_for(lambda: all(board._shown_version == monitor.version and board._push_pending_since is None
                                 for board in pages), "both pages showing the monitor's version, nothing pending")
            first: dict = {}
            shown: dict[int, list] = {0: [], 1: []}

            def wrap(index: int, board) -> None:
                pushed = board._pushed

                def run() -> None:
                    pushed()
                    run_view = board.reader.run("job")
                    shown[index].append((board.reader.frame, board.participants._shown_columns))
                    if not first and run_view is not None and len(run_view.snapshot.participants) == 2:
                        # The first page refreshed at the change: the monitor moves on before the other's turn.
                        first.update(index=index, frame=board.reader.frame,
                                     columns=board.participants._shown_columns)
                        version = monitor.version
                        kv.put(layout.state_key("job"), torch_state_b64({("frame-a", 1, 0): 0, ("frame-c", 3, 0): 1}))
                        assert monitor.wait_for_version(version, 30) > version
                board._pushed = run

            for index, board in enumerate(pages):
                wrap(index, board)
            kv.put(layout.state_key("job"), torch_state_b64({("frame-a", 1, 0): 0, ("frame-b", 2, 0): 1}))
            for tab in tabs:
                expect(tab.get_by_text("frame-c", exact=True).first).to_be_visible(timeout=WAIT_MS)
            assert first, "no page refreshed at the first change"
            other = shown[1 - first["index"]]
            assert other and other[0][0] is first["frame"], "the other page did not show the first page's frame"
            assert other[0][1] is first["columns"], "the other page worked out its own nodes table"
            assert first["frame"].version < monitor.version
            wait_for(lambda: all(board.reader.version == monitor.version for board in pages),
                     "both pages showing the later change")
            kv.delete(layout.state_key("job"))
    finally:
        context.close()

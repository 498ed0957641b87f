"""Serving the dashboard to measure it: a ``panel serve`` process, real Chromium pages that time
what they show, and lightweight sessions speaking Bokeh's websocket protocol.

Not a section: the helpers of ``dashboard_e2e``, ``sessions``, ``history`` and ``load``.

* :func:`served_app` runs ``panel serve APP --args ...`` in its own process group and kills the
  group afterwards.
* :data:`REVISION_TRACKER_JS` records, in a page, when each revision of the selected run reached
  the browser: the moment the page's Bokeh document held it (the timeline's data source), in
  ``Date.now()`` milliseconds, comparable with ``time.time()`` of another process.
* :class:`LightSessions`: sessions that cost the server what a browser tab does (the HTTP GET
  that creates the session, a websocket that pulls the document and receives every change) but
  cost this machine almost nothing: they read each message and drop it.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from .common import free_port

ROOT = Path(__file__).resolve().parent.parent
DASHBOARD_APP = ROOT / "app" / "dashboard.py"
POLLING_APP = Path(__file__).resolve().parent / "polling_app.py"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run", "--disable-background-timer-throttling",
                 "--disable-renderer-backgrounding", "--disable-backgrounding-occluded-windows"]
WAIT_MS = 30_000


class Served:
    """A running ``panel serve``: its page ``url``, its ``pid`` (for CPU and memory) and the
    lines it printed (read as they come, so a chatty server never blocks on a full pipe)."""

    def __init__(self, url: str, process: subprocess.Popen) -> None:
        self.url = url
        self.process = process
        self.pid = process.pid
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, name="served-output", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.process.stdout:
            self.lines.append(line.decode(errors="replace"))

    def count(self, text: str) -> int:
        """How many lines the server has printed so far containing ``text``."""
        return sum(text in line for line in list(self.lines))

    def serving_metrics(self) -> dict[str, dict[str, Any]]:
        """The server's own histograms (``rdzv.ui.serving_metrics``, served with the
        ``rdzv.ui.metrics_route`` plugin): per name (``push_delay``, ``refresh``) its cumulative
        ``buckets`` ``[(upper bound in s, count)]``, ``count`` and ``sum``."""
        from prometheus_client.parser import text_string_to_metric_families

        text = _get(self.url.rsplit("/", 1)[0] + "/metrics")
        read: dict[str, dict[str, Any]] = {}
        for family in text_string_to_metric_families(text):
            name = family.name.removeprefix("rdzv_dashboard_").removesuffix("_seconds")
            if family.type != "histogram" or not family.name.startswith("rdzv_dashboard_"):
                continue
            histogram = read.setdefault(name, {"buckets": []})
            for sample in family.samples:
                if sample.name.endswith("_bucket"):
                    histogram["buckets"].append((float(sample.labels["le"]), sample.value))
                elif sample.name.endswith("_count"):
                    histogram["count"] = sample.value
                elif sample.name.endswith("_sum"):
                    histogram["sum"] = sample.value
        return read


def histogram_between(before: dict[str, Any], after: dict[str, Any]) -> dict[str, float | None]:
    """What one histogram of :meth:`Served.serving_metrics` counted between two reads: how many,
    their mean, and the bucket bounds the median and the 99th percentile fall under (seconds;
    inf when over the last bound; None when nothing was counted)."""
    count = after["count"] - before["count"]
    buckets = [(bound, later - earlier) for (bound, later), (_, earlier) in
               zip(after["buckets"], before["buckets"], strict=True)]

    def under(quantile: float) -> float | None:
        return next((bound for bound, counted in buckets if counted >= quantile * count), None) if count else None

    return {"count": count, "mean_s": (after["sum"] - before["sum"]) / count if count else None,
            "p50_under_s": under(0.5), "p99_under_s": under(0.99)}


@contextmanager
def served_app(app: Path, args: Sequence[str], *, name: str | None = None, root: Path = ROOT,
               options: Sequence[str] = ()) -> Iterator[Served]:
    """``panel serve app --args *args`` on a free port while the block runs; its process group is
    killed after. The page is ``/<app stem>`` (or ``/name``). ``root``: the source tree whose
    ``rdzv`` the server imports (another checkout, to compare two versions). ``options``: more of
    ``panel serve``'s own (``--plugins rdzv.ui.metrics_route`` serves ``/metrics``)."""
    port = free_port()
    command = [sys.executable, "-m", "panel", "serve", str(app), "--port", str(port), "--address", "127.0.0.1",
               f"--allow-websocket-origin=127.0.0.1:{port}", *options, "--args", *args]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")])))
    for proxy in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY"):
        env.pop(proxy, None)
    process = subprocess.Popen(command, cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               start_new_session=True)
    served = None
    try:
        _wait_listening(process, port, timeout=60)
        served = Served(f"http://127.0.0.1:{port}/{name or app.stem}", process)
        yield served
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=10)
        if served is not None:
            served._reader.join(timeout=10)
        process.stdout.close()


@contextmanager
def checked_out(ref: str) -> Iterator[Path]:
    """``ref`` checked out into a temporary git worktree (with this tree's compiled
    ``rdzv/_opcode_walk`` copied in), to serve with :func:`served_app`'s ``root``; removed after."""
    import shutil
    import tempfile

    work = Path(tempfile.mkdtemp(prefix="rdzv-bench-tree-"))
    tree = work / "tree"
    try:
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", "-q", str(tree), ref], check=True)
        for compiled in (ROOT / "rdzv").glob("_opcode_walk*.so"):
            shutil.copy2(compiled, tree / "rdzv")
        yield tree
    finally:
        subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(tree)], check=False,
                       capture_output=True)
        shutil.rmtree(work, ignore_errors=True)


def _wait_listening(process: subprocess.Popen, port: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            output = process.stdout.read().decode(errors="replace")[-1500:]
            raise RuntimeError(f"panel serve exited with code {process.returncode}: {output}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.2)
    raise TimeoutError(f"panel serve did not listen on port {port} within {timeout:g} s")


@contextmanager
def chromium() -> Iterator[Any]:
    """A headless Chromium (Playwright's ``Browser``), closed after the block."""
    from playwright.sync_api import sync_playwright

    if not Path(CHROMIUM).exists():
        raise FileNotFoundError(f"{CHROMIUM} is missing; install Debian's chromium package")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


def open_page(browser: Any, url: str, shows: str) -> tuple[Any, float]:
    """A new page at ``url``, once the text ``shows`` is visible; ``(page, seconds it took)``."""
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    began = time.perf_counter()
    page.goto(url, timeout=WAIT_MS)
    page.get_by_text(shows, exact=True).first.wait_for(state="visible", timeout=WAIT_MS)
    return page, time.perf_counter() - began


# -- in the page ------------------------------------------------------------------------------

REVISION_TRACKER_JS = """
() => {
  if (window.__rdzvSeen) return true;
  const docs = (window.Bokeh && window.Bokeh.documents) || [];
  let source = null;
  for (const doc of docs) {
    for (const model of doc.all_models) {
      if (typeof model.get_column === "function" && model.get_column("revision") && model.get_column("seen_at")) {
        source = model;
      }
    }
  }
  if (source === null) return false;
  window.__rdzvSeen = [];
  let last = -1;
  const check = () => {
    const column = source.get_column("revision");
    const newest = column && column.length ? Number(column[column.length - 1]) : -1;
    if (newest > last) { last = newest; window.__rdzvSeen.push([newest, Date.now()]); }
  };
  for (const signal of [source.change, source.streaming, source.patching]) {
    if (signal && typeof signal.connect === "function") signal.connect(check);
  }
  window.__rdzvTimer = setInterval(check, 5);
  check();
  return true;
}
"""
"""Installs ``window.__rdzvSeen``: ``[revision, Date.now()]`` each time the selected run's timeline
source (the Bokeh model with ``revision`` and ``seen_at`` columns) got a newer revision."""

TAKE_SEEN_JS = "() => { const seen = window.__rdzvSeen || []; window.__rdzvSeen = []; return seen; }"

CLICK_AND_WAIT_JS = """
async ([label, selector, timeoutMs]) => {
  const roots = [document];
  const found = (test) => {
    for (let i = 0; i < roots.length; i++) {
      for (const element of roots[i].querySelectorAll("*")) {
        if (element.shadowRoot && !roots.includes(element.shadowRoot)) roots.push(element.shadowRoot);
        if (test(element)) return [element, roots[i]];
      }
    }
    return [null, null];
  };
  roots.length = 1;
  const [button] = found((e) => e.tagName === "BUTTON" && e.textContent.trim() === label);
  roots.length = 1;
  const [marker, markerRoot] = found((e) => e.matches(selector));
  if (!button || !marker) return {error: `no ${button ? selector : label} on the page`};
  const before = marker.textContent;
  return await new Promise((resolve) => {
    const began = performance.now();
    const timer = setTimeout(() => { observer.disconnect(); resolve({error: "no change", before}); }, timeoutMs);
    const observer = new MutationObserver(() => {
      const now = markerRoot.querySelector(selector);
      if (now && now.textContent !== before) {
        const changed = performance.now();
        observer.disconnect();
        clearTimeout(timer);
        requestAnimationFrame(() => resolve({ms: changed - began, painted_ms: performance.now() - began,
                                             before, after: now.textContent}));
      }
    });
    observer.observe(markerRoot, {subtree: true, childList: true, characterData: true});
    button.click();
  });
}
"""
"""Clicks the button labelled ``label`` and resolves when the text of the element matching
``selector`` changes: ``{ms, painted_ms, before, after}`` (``painted_ms``: at the next animation
frame), or ``{error}``. Searches through the shadow roots Panel's components live in."""


def track_revisions(page: Any, timeout: float = 30) -> None:
    """Install :data:`REVISION_TRACKER_JS` once the page's timeline exists."""
    deadline = time.monotonic() + timeout
    while not page.evaluate(REVISION_TRACKER_JS):
        if time.monotonic() > deadline:
            raise TimeoutError("the page's timeline data source did not appear")
        time.sleep(0.1)


def take_seen(page: Any) -> list[tuple[int, float]]:
    """``(revision, seconds since the epoch)`` for each revision the page received since the last call."""
    return [(int(revision), ms / 1000) for revision, ms in page.evaluate(TAKE_SEEN_JS)]


def lags(seen: Sequence[tuple[int, float]], written: dict[int, float]) -> list[float]:
    """How long each write stayed unseen: seconds from a write until the viewer showed that revision
    or a newer one (a viewer that falls behind skips revisions; until it shows something at least
    as new, it is behind by that write). ``seen``: ``(revision, time)`` in the order shown; writes
    before the first or after the last thing shown are left out."""
    import bisect

    shown: list[tuple[int, float]] = []
    for revision, moment in seen:  # keep what moved the viewer forward
        if not shown or revision > shown[-1][0]:
            shown.append((revision, moment))
    if not shown:
        return []
    revisions = [revision for revision, _ in shown]
    found = []
    for revision, at in written.items():
        index = bisect.bisect_left(revisions, revision)
        if index < len(shown) and shown[index][1] >= at and (index > 0 or shown[0][0] == revision):
            found.append(shown[index][1] - at)
    return found


def shown_lags(seen: Sequence[tuple[int, float]], written: dict[int, float]) -> list[float]:
    """Seconds from each write the viewer did show to the moment it showed it (skipped ones left out)."""
    return [moment - written[revision] for revision, moment in seen if revision in written]


# -- lightweight sessions ---------------------------------------------------------------------

DOCUMENT_READY = {"kind": "MessageSent", "msg_type": "bokeh_event",
                  "msg_data": {"type": "event", "name": "document_ready", "values": {"type": "map"}}}
"""The event BokehJS sends once a page has rendered its document (as Chromium sends it)."""


class LightSessions:
    """Dashboard sessions over Bokeh's own websocket protocol, without a browser.

    Each session is created as a browser's is, by GETting the page (the server builds its
    document), then connects the page's websocket with the session token from that page, pulls
    the document (``PULL-DOC-REQ``), says the document is ready (BokehJS's ``document_ready``
    event, after which Panel counts the session as connected and updates it as it does a
    browser's) and reads every message the server pushes, counting them. All sessions share one
    event-loop thread. :meth:`close` closes them all.
    """

    def __init__(self, url: str) -> None:
        self.url = url
        self.messages: list[int] = []
        self.patches: list[int] = []
        #: For each session opened, the seconds each step of its opening took.
        self.opened: list[dict[str, float]] = []
        self._sockets: list[Any] = []
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="bench-light-sessions", daemon=True)
        self._thread.start()

    def __len__(self) -> int:
        return len(self._sockets)

    def open(self, count: int, timeout: float = 300) -> None:
        """Open ``count`` more sessions, one after another (as people arrive); each has pulled its
        document when this returns, and :attr:`opened` holds how long each step took. Raises
        TimeoutError, saying which step waited, if one session takes over ``timeout`` seconds."""
        for _ in range(count):
            already_open = len(self)
            future = asyncio.run_coroutine_threadsafe(self._open_one(time.monotonic() + timeout), self._loop)
            try:
                future.result(timeout + 10)
            except TimeoutError as error:
                future.cancel()
                raise TimeoutError(f"opening a lightweight session took over {timeout:g} s with {already_open} "
                                   f"open (the server's loop saturated by them): {error}") from None

    async def _open_one(self, deadline: float) -> None:
        from bokeh.protocol import Protocol
        from tornado.httpclient import HTTPRequest
        from tornado.websocket import websocket_connect

        began = time.monotonic()
        steps: dict[str, float] = {}

        async def step(name: str, awaitable: Any) -> Any:
            started = time.monotonic()
            try:
                return await asyncio.wait_for(awaitable, max(0.1, deadline - started))
            except TimeoutError:
                raise TimeoutError(f"no answer to its {name} in {time.monotonic() - began:.0f} s") from None
            finally:
                steps[name] = time.monotonic() - started

        loop = asyncio.get_running_loop()
        html = await step("page request", loop.run_in_executor(None, _get, self.url, deadline - time.monotonic()))
        match = re.search(r'"token"\s*:\s*"([^"]+)"', html) or re.search(r"token\s*=\s*'([^']+)'", html)
        if match is None:
            raise RuntimeError("the dashboard page carries no session token")
        origin = self.url.split("/", 3)[:3]
        ws_url = "ws" + self.url[len("http"):] + "/ws"
        request = HTTPRequest(ws_url, headers={"Origin": "/".join(origin)})
        socket_ = await step("websocket", websocket_connect(request, subprotocols=["bokeh", match.group(1)],
                                                             max_message_size=200 * 1024 * 1024))
        index = len(self._sockets)
        self._sockets.append(socket_)
        self.messages.append(0)
        self.patches.append(0)
        acked, pulled = loop.create_future(), loop.create_future()
        loop.create_task(self._read(socket_, index, {"ACK": acked, "PULL-DOC-REPLY": pulled}))
        await step("ACK", acked)  # as Bokeh's own client: nothing is sent before the server's ACK
        request_message = Protocol().create("PULL-DOC-REQ")
        for fragment in (request_message.header_json, request_message.metadata_json, request_message.content_json):
            await socket_.write_message(fragment)
        await step("document pull", pulled)
        for fragment in (json.dumps({"msgid": uuid.uuid4().hex.upper(), "msgtype": "PATCH-DOC"}), "{}",
                         json.dumps({"events": [DOCUMENT_READY]})):
            await socket_.write_message(fragment)
        self.opened.append(steps)

    async def _read(self, socket_: Any, index: int, waiting: dict[str, asyncio.Future]) -> None:
        while True:
            fragment = await socket_.read_message()
            if fragment is None:
                for future in waiting.values():
                    if not future.done():
                        future.set_exception(RuntimeError(f"the server closed the session: {socket_.close_reason}"))
                return
            if isinstance(fragment, str) and fragment.startswith("{") and '"msgtype"' in fragment[:200]:
                kind = json.loads(fragment).get("msgtype")
                self.messages[index] += 1
                if kind == "PATCH-DOC":
                    self.patches[index] += 1
                elif kind in waiting and not waiting[kind].done():
                    waiting[kind].set_result(True)

    def close(self) -> None:
        async def close_all() -> None:
            for socket_ in self._sockets:
                socket_.close()
            await asyncio.sleep(0.2)

        try:
            asyncio.run_coroutine_threadsafe(close_all(), self._loop).result(10)
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
            self._loop.close()
            self._sockets.clear()


def _get(url: str, timeout: float = 60) -> str:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(url, timeout=max(1.0, timeout)) as response:
        return response.read().decode()

"""The notebooks in a real JupyterLab, in a real headless Chromium, run as a person runs them.

A ``jupyter lab`` server (no token, loopback only, a temp root holding copies of the notebooks)
and a page per test: open the notebook, type a later cell in before its last one (a node joining
a new run on the lab's etcd), run every cell above the last (Run > Run All Above Selected Cell),
see the dashboard the notebook showed first follow that node, run the last cell (which closes
what the notebook started), shut the kernel down (Kernel > Shut Down Kernel). Throughout: no
traceback anywhere on the page, no request to any host but this machine, the dashboard's browser
code sent once per page, and no etcd of the kernel left once the notebook closed it. The same for
``tests/notebooks/dashboard_endpoint.ipynb`` (``rdzv.dashboard(endpoint=...)`` on an EtcdServer
with torch's own handlers), opened in the page of the quickstart; and ``panel serve`` of the
quickstart.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import nbformat
import pytest
from playwright.sync_api import Error as PlaywrightError
from playwright.sync_api import TimeoutError as PlaywrightTimeout

from conftest import ROOT, free_port, our_etcd_processes, stop_process_group, subprocess_env


def in_a_browser(test):
    """The marks of a test that drives JupyterLab (or ``panel serve``) in Chromium."""
    return pytest.mark.browser(pytest.mark.notebook(pytest.mark.slow(test)))


SHIPPED = sorted((ROOT / "notebooks").glob("*.ipynb"))
ENDPOINT_NOTEBOOK = ROOT / "tests" / "notebooks" / "dashboard_endpoint.ipynb"

RUN_MS = 300_000
"""How long running a notebook's cells may take (ms): a safety net, 04's torchrun job takes ~1 min."""
SEE_MS = 30_000
"""How long the page may take to show something once it should (ms)."""

LATER_RUN = "later-run"
LATER_CELL = f"""from rdzv.demo import DemoCluster

with DemoCluster(lab.endpoint, "{LATER_RUN}", min_nodes=1, max_nodes=1, last_call_timeout=1) as later:
    later.add_node()
    assert later.wait_until(lambda c: len(c.running()) == 1, timeout=60), later.views()"""
"""What the test types into a notebook before its last cell: a node, in a run of its own on the lab's etcd."""

LIVE_LABS = {"01_quickstart", "02_teaching_elastic_rendezvous", "04_torchrun_elastic_job"}
"""The shipped notebooks whose lab is still open when their last cell comes."""


@dataclass(frozen=True)
class Plan:
    """How to check one notebook: whether it shows a dashboard, what to type before its last
    cell, and the text that must then appear in the first dashboard it showed."""

    dashboard: bool = False
    later: str | None = None
    expect: str | None = None


def plan_for(path: Path) -> Plan:
    if path == ENDPOINT_NOTEBOOK:  # its own later cell adds trainer-c
        return Plan(dashboard=True, expect="trainer-c")
    if path.stem in LIVE_LABS:
        return Plan(dashboard=True, later=LATER_CELL, expect=LATER_RUN)
    sources = "".join(cell.source for cell in nbformat.read(path, as_version=4).cells if cell.cell_type == "code")
    return Plan(dashboard="dashboard(" in sources)


# -- the JupyterLab server -------------------------------------------------------------------------


class JupyterLab:
    """``jupyter lab`` on 127.0.0.1 in a temp dir of its own (root dir, settings, runtime files,
    and the TMPDIR of its kernels and their etcds), stopped with everything it started by :meth:`stop`."""

    def __init__(self, notebooks: list[Path]) -> None:
        self.home = Path(tempfile.mkdtemp(prefix="jlab-")).resolve()
        self.root = self.home / "root"
        self.root.mkdir()
        for path in notebooks:
            shutil.copy(path, self.root / path.name)
        settings = self.home / "settings"
        # A person's settings: no news prompt, every cell rendered (not only those scrolled to).
        _write_json(settings / "@jupyterlab" / "apputils-extension" / "notification.jupyterlab-settings",
                    {"fetchNews": "false", "checkForUpdates": False})
        _write_json(settings / "@jupyterlab" / "notebook-extension" / "tracker.jupyterlab-settings",
                    {"windowingMode": "none"})
        for name in ("config", "data", "runtime", "workspaces", "tmp"):
            (self.home / name).mkdir()
        self.marker = uuid.uuid4().hex
        env = {
            **subprocess_env(),
            "JUPYTER_CONFIG_DIR": str(self.home / "config"),
            "JUPYTER_DATA_DIR": str(self.home / "data"),
            "JUPYTER_RUNTIME_DIR": str(self.home / "runtime"),
            "TMPDIR": str(self.home / "tmp"),
            "RDZV_JUPYTERLAB_TEST": self.marker,  # inherited by the kernels and all they start
        }
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        command = [
            sys.executable, "-m", "jupyterlab", "--no-browser", "--allow-root", "--ip=127.0.0.1",
            f"--port={self.port}", "--ServerApp.port_retries=0", "--IdentityProvider.token=",
            "--ServerApp.password=", "--ServerApp.disable_check_xsrf=True", f"--ServerApp.root_dir={self.root}",
            f"--LabApp.user_settings_dir={settings}", f"--LabApp.workspaces_dir={self.home / 'workspaces'}",
            "--LabApp.check_for_updates_class=jupyterlab.handlers.announcements.NeverCheckForUpdate",
            "--LabServerApp.extension_manager=readonly",
        ]
        self.log = self.home / "jupyter.log"
        self._log_file = self.log.open("wb")
        self.process = subprocess.Popen(command, cwd=self.root, env=env, stdout=self._log_file,
                                        stderr=subprocess.STDOUT, start_new_session=True)
        self._wait_ready(timeout=90)

    def _wait_ready(self, timeout: float) -> None:
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"jupyter lab exited:\n{self.log_text()}")
            try:
                with opener.open(f"{self.url}/api/status", timeout=2) as answer:
                    if answer.status == 200:
                        return
            except OSError:
                time.sleep(0.2)
        raise TimeoutError(f"jupyter lab did not answer within {timeout} s:\n{self.log_text()}")

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

    def processes(self) -> list[str]:
        """Living processes (not zombies) started by the server: its kernels and what they started."""
        found = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit() or int(entry.name) == self.process.pid:
                continue
            try:
                if self.marker.encode() not in (entry / "environ").read_bytes():
                    continue
                stat = (entry / "stat").read_text()
                if stat[stat.rindex(")") + 2] in "ZX":
                    continue
                command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                found.append(f"{entry.name} {command[:150]}")
            except OSError:  # it ended meanwhile, or is not ours to read
                continue
        return found

    def api(self, path: str, method: str = "GET"):
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        with opener.open(urllib.request.Request(f"{self.url}/api/{path}", method=method), timeout=30) as answer:
            body = answer.read()
        return json.loads(body) if body else None

    def kernel_ready(self, name: str) -> bool:
        """Whether the kernel of notebook ``name`` is idle with a page connected to it."""
        for session in self.api("sessions"):
            kernel = session.get("kernel") or {}
            if session.get("path") == name and kernel.get("execution_state") == "idle" and kernel.get("connections"):
                return True
        return False

    def shut_down_kernels(self) -> None:
        """Shut down every kernel of the server (through its REST API) and wait for their processes to end."""
        for kernel in self.api("kernels"):
            try:
                self.api(f"kernels/{kernel['id']}", method="DELETE")
            except urllib.error.HTTPError as error:
                if error.code != 404:  # 404: it ended between the listing and the shutdown
                    raise
        wait_until(self.processes, lambda found: not found, timeout=30)

    def etcds(self) -> dict[int, str]:
        """The living etcd processes a kernel of this server started."""
        return our_etcd_processes([self.home], ancestor=self.process.pid)

    def stop(self) -> list[str]:
        """Stop the server (it shuts its kernels down) and return what was still running after it."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)
        self._log_file.close()
        left = wait_until(self.processes, lambda found: not found, timeout=15)
        for line in left:  # reported by the test; not left running
            try:
                os.kill(int(line.split()[0]), signal.SIGKILL)
            except (ProcessLookupError, ValueError):
                pass
        shutil.rmtree(self.home, ignore_errors=True)
        return left


def _write_json(path: Path, value: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(value))


def wait_until(probe, done, timeout: float):
    """Call ``probe()`` until ``done(result)`` or ``timeout`` seconds; return the last result."""
    deadline = time.monotonic() + timeout
    while True:
        result = probe()
        if done(result) or time.monotonic() >= deadline:
            return result
        time.sleep(0.2)


@pytest.fixture(scope="module")
def jupyter():
    lab = JupyterLab([*SHIPPED, ENDPOINT_NOTEBOOK])
    yield lab
    log = lab.log_text()
    left = lab.stop()
    assert left == [], f"processes of the JupyterLab kernels outlived the server: {left}"
    assert "Traceback" not in log, f"the JupyterLab server or a kernel logged a traceback:\n{log}"


@pytest.fixture
def page(browser, jupyter, request):
    """A page of the JupyterLab, recording every request it makes and what Panel reports on its
    console. With ``RDZV_SCREENSHOTS=DIR`` it leaves a screenshot of the page there at the end."""
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    tab = context.new_page()
    tab.requests = []
    tab.panel_errors = []
    context.on("request", lambda request: tab.requests.append(request.url))
    tab.on("console", lambda message: tab.panel_errors.append(message.text)
           if "Python failed" in message.text or "Unable to run Panel code" in message.text else None)
    yield tab
    if os.environ.get("RDZV_SCREENSHOTS"):
        tab.screenshot(path=str(Path(os.environ["RDZV_SCREENSHOTS"]) / f"{request.node.name}.png"))
    context.close()
    jupyter.shut_down_kernels()  # those a failed test left running, so that the next test starts clean


# -- what a person does ----------------------------------------------------------------------------


def kernel_pids(jupyter: JupyterLab) -> set[int]:
    return {int(line.split()[0]) for line in jupyter.processes() if "ipykernel_launcher" in line}


def open_notebook(page, jupyter: JupyterLab, name: str):
    """Open ``name``: the first one at its address (in a workspace of its own, so that no other
    notebook reopens with it), later ones from the file browser of the same page. Returns the
    notebook's panel, once its kernel is idle, and the kernel's pid."""
    kernels = kernel_pids(jupyter)
    if page.url.startswith(jupyter.url):
        page.locator(".jp-DirListing-item", has_text=name).dblclick()
    else:
        page.goto(f"{jupyter.url}/lab/workspaces/w{uuid.uuid4().hex[:8]}/tree/{name}?reset")
    tab = page.locator(".lm-TabBar-tab.lm-mod-current", has_text=name)
    tab.wait_for(timeout=SEE_MS)
    panel = page.locator(f"[id='{tab.get_attribute('data-id')}']")
    panel.locator(".jp-CodeCell").first.wait_for(timeout=SEE_MS)
    page.get_by_text("Python 3 (ipykernel) | Idle").wait_for(timeout=SEE_MS)
    assert wait_until(lambda: jupyter.kernel_ready(name), bool, timeout=SEE_MS / 1000), f"{name}'s kernel is not ready"
    started = wait_until(lambda: kernel_pids(jupyter) - kernels, lambda new: len(new) == 1, timeout=SEE_MS / 1000)
    assert len(started) == 1, f"opening {name} started {len(started)} kernels"
    return panel, started.pop()


def menu(page, *path: str) -> None:
    for name in path:
        page.get_by_role("menuitem", name=name, exact=True).click()


def wait_for_cells(page, panel, count: int, timeout: float = RUN_MS) -> None:
    """Wait until the notebook stopped running (no cell queued or running, the first one run),
    then check that the first ``count`` code cells ran; if one did not, fail with what the page
    says went wrong."""
    page.wait_for_function(
        """panel => {
            const shown = Array.from(panel.querySelectorAll('.jp-CodeCell .jp-InputPrompt'))
                .map(prompt => prompt.textContent.trim());
            return !shown.some(text => text.includes('*')) && /\\[\\d+\\]/.test(shown[0] || '');
        }""",
        arg=panel.element_handle(), timeout=timeout,
    )
    shown = [text.strip() for text in panel.locator(".jp-CodeCell .jp-InputPrompt").all_inner_texts()]
    missing = [index + 1 for index, text in enumerate(shown[:count]) if not re.search(r"\[\d+\]", text)]
    if missing:
        errors = panel.locator(".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']")
        pytest.fail(f"code cell {missing[0]} did not run (prompts {shown}); the notebook says:\n"
                    + "\n---\n".join(errors.all_inner_texts()))


def select_last_cell(panel) -> int:
    """Click the last code cell's prompt, which selects it and gives the notebook the keyboard
    (again if the page moved under the pointer); returns how many code cells there are."""
    cells = panel.locator(".jp-CodeCell")
    count = cells.count()
    last = cells.nth(count - 1)
    for _ in range(10):
        last.locator(".jp-InputPrompt").click()
        if "jp-mod-active" in (last.get_attribute("class") or ""):
            return count
    pytest.fail("the last cell of the notebook could not be selected")


def type_cell_before_last(page, panel, code: str) -> None:
    """Insert a cell above the last one and type ``code`` into it (not run yet)."""
    count = select_last_cell(panel)
    page.keyboard.press("a")  # a new cell above, selected
    page.keyboard.press("Enter")  # edit it
    page.keyboard.insert_text(code)
    page.keyboard.press("Escape")
    assert panel.locator(".jp-CodeCell").count() == count + 1


def run_all_but_last(page, panel) -> None:
    """Select the last code cell and run every cell above it (Run > Run All Above Selected Cell)."""
    count = select_last_cell(panel)
    menu(page, "Run", "Run All Above Selected Cell")
    wait_for_cells(page, panel, count - 1)
    assert_no_traceback(page)


def run_last(page, panel) -> None:
    """Click into the last cell and press Shift+Enter; again if the key went elsewhere (a
    dashboard's table, redrawn above, may take the focus: then the cell did not start)."""
    cells = panel.locator(".jp-CodeCell")
    count = cells.count()
    last = cells.nth(count - 1)
    for _ in range(5):
        last.locator(".jp-InputArea-editor").click()
        page.keyboard.press("Shift+Enter")
        try:
            page.wait_for_function("prompt => prompt.textContent.trim() !== '[ ]:'",
                                   arg=last.locator(".jp-InputPrompt").element_handle(), timeout=10_000)
            break
        except PlaywrightTimeout:
            continue
    wait_for_cells(page, panel, count)


def shut_down_kernel(page, jupyter: JupyterLab, pid: int) -> None:
    """Kernel > Shut Down Kernel, for the notebook shown; wait for its process to end."""
    menu(page, "Kernel", "Shut Down Kernel")
    left = wait_until(lambda: pid in kernel_pids(jupyter), lambda alive: not alive, timeout=30)
    assert not left, f"the kernel (pid {pid}) outlived its shutdown"


def dashboards(panel):
    """The outputs showing a dashboard, in order."""
    return panel.locator(".jp-OutputArea-output").filter(has=panel.page.get_by_text("Runs", exact=True))


def assert_no_traceback(page) -> None:
    shown = page.get_by_text("Traceback")
    if shown.count():
        pytest.fail("a cell's output shows a traceback:\n" + "\n---\n".join(shown.all_inner_texts()))
    assert page.panel_errors == [], f"Panel reported errors on the console: {page.panel_errors}"


def assert_local_requests(page) -> None:
    remote = [url for url in page.requests if urlparse(url).scheme not in ("data", "blob")
              and urlparse(url).hostname not in ("127.0.0.1", "localhost")]
    assert remote == [], f"the page made requests off this machine: {remote}"


def loader_cells(panel) -> int:
    """How many cells carry Panel's loader of BokehJS (sent once per page, by the first dashboard)."""
    return panel.evaluate("""panel => Array.from(panel.querySelectorAll('.jp-CodeCell')).filter(cell =>
        Array.from(cell.querySelectorAll('.jp-OutputArea-output script'))
            .some(script => script.textContent.includes('_bokeh_onload_callbacks'))).length""")


def run_like_a_person(page, jupyter: JupyterLab, path: Path):
    """Open ``path`` in ``page`` and run it, with the plan's later cell typed in before its last
    cell, checking it on the way. Returns its panel and kernel pid (the kernel still runs)."""
    plan = plan_for(path)
    panel, kernel = open_notebook(page, jupyter, path.name)
    etcds_before = set(jupyter.etcds())
    if plan.later is not None:
        type_cell_before_last(page, panel, plan.later)
    run_all_but_last(page, panel)
    if plan.dashboard:
        first = dashboards(panel).first
        first.scroll_into_view_if_needed()
        first.get_by_text("Runs", exact=True).wait_for(timeout=SEE_MS)
        assert loader_cells(panel) == 1, "the dashboard's browser code was not sent exactly once to the page"
    if plan.expect is not None:
        first.scroll_into_view_if_needed()
        first.get_by_text(plan.expect, exact=True).first.wait_for(timeout=SEE_MS)
    run_last(page, panel)
    assert_no_traceback(page)
    left = wait_until(lambda: set(jupyter.etcds()) - etcds_before, lambda found: not found, timeout=15)
    assert not left, f"{path.name}'s last cell left its etcd running: {left}"
    assert_local_requests(page)
    return panel, kernel


# -- the tests -------------------------------------------------------------------------------------


def test_closing_a_lab_stops_its_dashboards():
    """No browser: a lab's close() stops the periodic refresh of the dashboards it made, so a
    notebook's page gets nothing more from them."""
    import rdzv.notebook

    lab = rdzv.notebook.start(cluster=False)
    try:
        board = lab.dashboard()
        board.start()
        assert board._callback is not None
    finally:
        lab.close()
    assert board._callback is None


def test_the_test_notebook_is_a_clean_notebook():
    nb = nbformat.read(ENDPOINT_NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    assert all(cell.outputs == [] for cell in nb.cells if cell.cell_type == "code")
    assert "rdzv.dashboard(endpoint=endpoint" in "".join(cell.source for cell in nb.cells)


@in_a_browser
@pytest.mark.timeout(420)
@pytest.mark.parametrize("path", [path for path in SHIPPED if path.name != "01_quickstart.ipynb"],
                         ids=lambda path: path.stem)
def test_a_shipped_notebook_runs_in_jupyterlab(page, jupyter, path):
    _, kernel = run_like_a_person(page, jupyter, path)
    shut_down_kernel(page, jupyter, kernel)
    left = wait_until(jupyter.processes, lambda found: not found, timeout=15)
    assert left == [], f"{path.name} left processes behind once its kernel was shut down: {left}"


@in_a_browser
@pytest.mark.timeout(300)
def test_two_notebooks_in_one_page(page, jupyter):
    """The quickstart, then in the same page (a second kernel) the dashboard of an EtcdServer
    on which torch's own handlers run, shown by two dashboards: each kernel sends the page the
    dashboard's code once, and both dashboards follow a node added after the first was shown."""
    _, quickstart_kernel = run_like_a_person(page, jupyter, ROOT / "notebooks" / "01_quickstart.ipynb")
    panel, endpoint_kernel = run_like_a_person(page, jupyter, ENDPOINT_NOTEBOOK)
    assert dashboards(panel).count() == 2
    second = dashboards(panel).nth(1)
    second.scroll_into_view_if_needed()
    second.get_by_text("trainer-c", exact=True).first.wait_for(timeout=SEE_MS)
    shut_down_kernel(page, jupyter, endpoint_kernel)
    page.locator(".lm-TabBar-tab", has_text="01_quickstart.ipynb").click()
    shut_down_kernel(page, jupyter, quickstart_kernel)
    left = wait_until(jupyter.processes, lambda found: not found, timeout=15)
    assert left == [], f"the notebooks left processes behind once their kernels were shut down: {left}"


@in_a_browser
@pytest.mark.timeout(180)
def test_panel_serve_serves_the_quickstart_live(browser, tmp_path):
    """``panel serve notebooks/01_quickstart.ipynb``: the page shows the dashboard of a lab that
    stays open while the page is (its last cell's ``lab.close()`` waits for the session to
    end), and the lab closes with the session."""
    port = free_port()
    marker = uuid.uuid4().hex
    command = [sys.executable, "-m", "panel", "serve", str(ROOT / "notebooks" / "01_quickstart.ipynb"),
               "--address", "127.0.0.1", "--port", str(port), f"--allow-websocket-origin=127.0.0.1:{port}",
               "--check-unused-sessions", "500", "--unused-session-lifetime", "500"]
    env = {**subprocess_env(), "TMPDIR": str(tmp_path), "RDZV_PANEL_SERVE_TEST": marker}
    log = tmp_path / "serve.log"
    with log.open("wb") as output:
        server = subprocess.Popen(command, cwd=ROOT, env=env, stdout=output, stderr=subprocess.STDOUT,
                                  start_new_session=True)

    def etcds() -> dict[int, str]:
        return our_etcd_processes([tmp_path], ancestor=server.pid)

    try:
        context = browser.new_context(viewport={"width": 1400, "height": 1000})
        tab = context.new_page()
        deadline = time.monotonic() + 60
        while True:
            try:
                tab.goto(f"http://127.0.0.1:{port}/01_quickstart", timeout=120_000)
                break
            except PlaywrightError:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(f"panel serve did not serve the notebook:\n{log.read_text(errors='replace')}")
                time.sleep(0.5)
        tab.get_by_text("node-3", exact=True).first.wait_for(timeout=RUN_MS)
        tab.get_by_text("Runs", exact=True).wait_for(timeout=SEE_MS)
        assert etcds(), "the served notebook's etcd is not running while its page is open"
        assert tab.get_by_text("Traceback").count() == 0
        context.close()
        left = wait_until(etcds, lambda found: not found, timeout=30)
        assert not left, f"the lab of a closed page kept its etcd: {left}"
    finally:
        stop_process_group(server)

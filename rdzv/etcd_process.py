"""etcd processes on loopback that never outlive the Python process that started them.

:class:`EtcdGroup` starts one or more etcd members forming one cluster, each with its own
free client and peer ports on 127.0.0.1, its data and log in a fresh run directory, and
returns once every member answers ``GET /health``. :class:`rdzv.server.EtcdServer` (one
member) and :class:`rdzv.cluster.EtcdCluster` (several) are thin faces over it.

How nothing is left behind:

* :meth:`EtcdGroup.stop` sends SIGTERM, waits a few seconds, sends SIGKILL, and removes the
  run directory.
* An ``atexit`` hook calling :meth:`EtcdGroup.stop` is registered before the first etcd is
  forked, so a program that ends with an exception still stops its etcd.
* Every etcd gets ``PR_SET_PDEATHSIG = SIGKILL`` (Linux), so it dies with its parent even
  when the parent is killed with SIGKILL. Linux sends that signal when the *thread* that
  forked the child ends, so every etcd is forked by one long-lived daemon thread of this
  module, never by the caller's thread (which may be a short-lived server session thread).
* Every etcd runs in its own process group. Ctrl-C in a terminal sends SIGINT to the whole
  foreground group; etcd then stays up while the Python program unwinds (its ``finally``
  blocks and ``atexit`` hooks may still talk to etcd) and is stopped by that program.
* Each run directory holds an ``owner`` file with the pids of its Python owner and its etcd
  processes; starting a group removes the run directories whose processes are all gone
  (those of programs that were killed with SIGKILL).
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import functools
import http.client
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from queue import SimpleQueue
from typing import IO, Sequence, Union

from .etcd_binary import find_etcd_binary
from .etcd_tls import PLAIN_HTTP, EtcdTLS

logger = logging.getLogger(__name__)

LOOPBACK = "127.0.0.1"
HOST = "localhost"
RUN_DIR_PREFIX = "rdzv-etcd-"
OWNER_FILE = "owner"
PROBE_INTERVAL_S = 0.01
STOP_GRACE_S = 5.0

Stderr = Union[int, IO, None]


class EtcdStartError(RuntimeError):
    """etcd exited before it was ready; the message carries the reason from its log."""


class EtcdStartTimeoutError(EtcdStartError, TimeoutError):
    """etcd was still not ready when the start timeout ran out."""


# -- forking from one long-lived thread ------------------------------------------------


def _load_prctl():
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
    prctl.restype = ctypes.c_int
    return prctl


_PRCTL = _load_prctl()
_PR_SET_PDEATHSIG = 1


def _in_child_before_exec(parent_pid: int) -> None:
    os.setpgid(0, 0)
    if _PRCTL is not None:
        _PRCTL(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != parent_pid:  # the parent died before prctl took effect
            os._exit(1)


class _Spawner:
    """Runs every ``subprocess.Popen`` of this module on one daemon thread that lives as
    long as the process, so that parent-death signals fire only when the process ends."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._requests: SimpleQueue | None = None
        self._thread: threading.Thread | None = None

    def popen(self, argv: Sequence[str], **kwargs) -> subprocess.Popen:
        done: Future = Future()
        self._queue().put((list(argv), kwargs, done))
        try:
            return done.result()
        except BaseException:
            if not done.cancel():  # interrupted (e.g. Ctrl-C) while it forked: do not lose the child
                with contextlib.suppress(Exception):
                    process = done.result(timeout=30)
                    process.kill()
                    process.wait()
            raise

    def _queue(self) -> SimpleQueue:
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._requests = SimpleQueue()
                self._thread = threading.Thread(
                    target=self._serve, args=(self._requests,), name="rdzv-etcd-spawner", daemon=True
                )
                self._thread.start()
            return self._requests

    @staticmethod
    def _serve(requests: SimpleQueue) -> None:
        while True:
            argv, kwargs, done = requests.get()
            if not done.set_running_or_notify_cancel():
                continue
            preexec = functools.partial(_in_child_before_exec, os.getpid())
            try:
                done.set_result(subprocess.Popen(argv, preexec_fn=preexec, **kwargs))
            except BaseException as exc:  # noqa: BLE001 - handed to the caller
                done.set_exception(exc)

    def forget_after_fork(self) -> None:
        """In a forked child: the parent's thread is not here; start a new one on demand."""
        self._lock = threading.Lock()
        self._requests = None
        self._thread = None


_SPAWNER = _Spawner()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_SPAWNER.forget_after_fork)


def popen_owned(argv: Sequence[str], **kwargs) -> subprocess.Popen:
    """``subprocess.Popen(argv, **kwargs)`` for a child that must not outlive this process: it
    runs in its own process group and gets SIGKILL when this process ends, however it ends
    (Linux parent-death signal; forked by this module's long-lived spawner thread)."""
    return _SPAWNER.popen(argv, **kwargs)


# -- ports, pids, run directories -------------------------------------------------------


def free_ports(count: int) -> list[int]:
    """``count`` distinct TCP ports on 127.0.0.1 that were free a moment ago."""
    sockets: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sockets.append(sock)
            sock.bind((LOOPBACK, 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` exists and is not a zombie (conservative: unknown is alive)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    if not os.path.isdir("/proc/self"):
        return True
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    except (OSError, IndexError):
        return True
    return state not in ("Z", "X")


def sweep_stale_run_dirs(parent: str | os.PathLike | None = None) -> list[Path]:
    """Remove this user's run directories under ``parent`` (default: the temp dir) whose
    owner and etcd processes are all gone; return the removed paths.

    A directory without a readable ``owner`` file is left alone (it may be being created).
    """
    removed = []
    for path in Path(parent or tempfile.gettempdir()).glob(RUN_DIR_PREFIX + "*"):
        try:
            if path.stat().st_uid != os.getuid():
                continue
            pids = [int(word) for word in (path / OWNER_FILE).read_text().split()]
        except (OSError, ValueError):
            continue
        if pids and not any(pid_alive(pid) for pid in pids):
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed


def _record_pid(run_dir: Path, pid: int) -> None:
    with open(run_dir / OWNER_FILE, "a", encoding="ascii") as owner:
        owner.write(f"{pid}\n")


def terminate(processes: Sequence[subprocess.Popen], grace: float = STOP_GRACE_S) -> None:
    """SIGTERM every live process, wait up to ``grace`` seconds for all, SIGKILL the rest.

    Returns once every process has exited and been reaped.
    """
    for process in processes:
        if process.poll() is None:
            process.terminate()
    deadline = time.monotonic() + grace
    for process in processes:
        try:
            process.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


# -- one member -------------------------------------------------------------------------


@dataclass(frozen=True)
class _Settings:
    """What every member of a group is started with."""

    binary: Path
    enable_v2: bool
    heartbeat_ms: int
    election_ms: int
    initial_cluster: str
    cluster_token: str
    extra_args: tuple[str, ...]
    stderr: Stderr
    run_dir: Path
    tls: EtcdTLS | None = None

    @property
    def scheme(self) -> str:
        return "https" if self.tls else "http"


class EtcdMember:
    """One etcd process of an :class:`EtcdGroup`: a name, two ports, a data dir and a log.

    A member keeps its ports and data across :meth:`kill` and :meth:`restart`, so a
    restarted member rejoins its cluster with the data it had.
    """

    def __init__(self, name: str, client_port: int, peer_port: int, settings: _Settings) -> None:
        self.name = name
        self.client_port = client_port
        self.peer_port = peer_port
        self.data_dir: Path = settings.run_dir / f"{name}.data"
        self.log_path: Path = settings.run_dir / f"{name}.log"
        self._settings = settings
        self._process: subprocess.Popen | None = None
        self._log_offset = 0

    # what it is
    @property
    def endpoint(self) -> str:
        """``"localhost:PORT"``, the member's client endpoint."""
        return f"{HOST}:{self.client_port}"

    @property
    def peer_url(self) -> str:
        """``"http://127.0.0.1:PORT"``, where the other members reach this one."""
        return f"http://{LOOPBACK}:{self.peer_port}"

    @property
    def pid(self) -> int | None:
        """The pid of the member's current or last etcd process; ``None`` before the first start."""
        return self._process.pid if self._process else None

    def is_running(self) -> bool:
        """Whether the member's etcd process is alive (it may not be ready yet)."""
        return self._process is not None and self._process.poll() is None

    def read_log(self) -> str:
        """Everything the member's etcd has written to its log so far ("" if nothing)."""
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def argv(self) -> list[str]:
        """The etcd command line that starts this member."""
        settings = self._settings
        client_url = f"{settings.scheme}://{LOOPBACK}:{self.client_port}"
        argv = [
            str(settings.binary),
            f"--name={self.name}",
            f"--data-dir={self.data_dir}",
            f"--listen-client-urls={client_url}",
            f"--advertise-client-urls={settings.scheme}://{HOST}:{self.client_port}",
            f"--listen-peer-urls={self.peer_url}",
            f"--initial-advertise-peer-urls={self.peer_url}",
            f"--initial-cluster={settings.initial_cluster}",
            f"--initial-cluster-token={settings.cluster_token}",
            f"--heartbeat-interval={settings.heartbeat_ms}",
            f"--election-timeout={settings.election_ms}",
        ]
        if settings.enable_v2:
            argv.append("--enable-v2")
        if settings.tls is not None:
            argv += settings.tls.etcd_flags()
        return argv + list(settings.extra_args)

    # what it does
    def spawn(self) -> None:
        """Fork the member's etcd (returns at once; see :meth:`wait_ready`).

        Raises:
            EtcdStartError: the binary could not be executed.
            RuntimeError: the member is already running.
        """
        if self.is_running():
            raise RuntimeError(f"etcd member {self.name} is already running; stop or kill it first.")
        settings = self._settings
        with open(self.log_path, "ab") as log:
            self._log_offset = log.tell()
            try:
                self._process = popen_owned(
                    self.argv(),
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=log if settings.stderr is None else settings.stderr,
                    close_fds=True,
                )
            except OSError as exc:
                raise EtcdStartError(
                    f"Could not run the etcd binary {settings.binary} ({exc.strerror or exc}); "
                    f"point RDZV_ETCD_BINARY at a working etcd server binary."
                ) from exc
        _record_pid(settings.run_dir, self._process.pid)
        logger.debug("started etcd member %s (pid %d) at %s", self.name, self._process.pid, self.endpoint)

    def wait_ready(self, timeout: float, deadline: float | None = None) -> None:
        """Return once the member answers ``GET /health`` with 200.

        Probes every 10 ms; a probe waits at most 1 s (etcd accepts connections before it
        is ready but answers only once it is).

        Raises:
            EtcdStartError: the process exited first (the message quotes its log).
            EtcdStartTimeoutError: not ready ``timeout`` s from now (or by ``deadline``,
                a ``time.monotonic()`` value, when given).
        """
        if self._process is None:
            raise RuntimeError(f"etcd member {self.name} was never started.")
        deadline = time.monotonic() + timeout if deadline is None else deadline
        while True:
            exit_code = self._process.poll()
            if exit_code is not None:
                raise EtcdStartError(
                    f"etcd member {self.name} exited with code {exit_code} before it was ready: "
                    f"{self._failure_reason()} (its log: {self.log_path})."
                )
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise EtcdStartTimeoutError(
                    f"etcd member {self.name} at {self.endpoint} was not ready within {timeout:g} s; "
                    f"read its log {self.log_path} or give start() a longer timeout."
                )
            if _health_ok(self.client_port, min(1.0, remaining), self._settings.tls):
                return
            time.sleep(PROBE_INTERVAL_S)

    def stop(self, grace: float = STOP_GRACE_S) -> None:
        """SIGTERM, then SIGKILL after ``grace`` seconds; no-op if not running. Keeps the data."""
        if self._process is not None:
            terminate([self._process], grace)

    def kill(self) -> None:
        """SIGKILL the member (a crash) and reap it; no-op if not running. Keeps the data."""
        if self._process is not None and self._process.poll() is None:
            self._process.kill()
            self._process.wait()

    def restart(self, timeout: float = 60, wait: bool = True) -> None:
        """Stop the member if it runs, start it again on the same ports and data, and (if
        ``wait``) return once it is ready. Needs a quorum of its cluster to become ready."""
        self.stop()
        self.spawn()
        if wait:
            self.wait_ready(timeout)

    @property
    def process(self) -> subprocess.Popen | None:
        """The ``Popen`` of the current or last etcd process; ``None`` before the first start."""
        return self._process

    def _failure_reason(self) -> str:
        if self._settings.stderr is not None:
            return "its error output went to the stderr given to start()"
        with open(self.log_path, "rb") as log:
            log.seek(self._log_offset)
            return failure_reason(log.read().decode(errors="replace"))

    def __repr__(self) -> str:
        state = "running" if self.is_running() else "stopped"
        return f"EtcdMember({self.name!r}, endpoint={self.endpoint!r}, pid={self.pid}, {state})"


def failure_reason(log_text: str) -> str:
    """The reason etcd gave for failing, from its log: the last error-level entry's error
    (or message), else its first plain-text line (flag errors are plain text)."""
    last_error = None
    first_plain = None
    for line in log_text.splitlines():
        line = line.strip()
        if not line:
            continue
        try:
            entry = json.loads(line) if line.startswith("{") else None
        except ValueError:
            entry = None
        if isinstance(entry, dict):
            if entry.get("level") in ("error", "fatal", "panic"):
                last_error = entry
        elif first_plain is None:
            first_plain = line
    if last_error is not None:
        return str(last_error.get("error") or last_error.get("msg") or last_error)
    return first_plain or "it wrote nothing to its log"


def _health_ok(port: int, timeout: float, tls: EtcdTLS | None = None) -> bool:
    if tls is None:
        connection = http.client.HTTPConnection(LOOPBACK, port, timeout=timeout)
    else:  # by name, as clients reach it, so the certificate needs to name localhost only
        connection = http.client.HTTPSConnection(HOST, port, timeout=timeout, context=tls.ssl_context())
    try:
        connection.request("GET", "/health")
        return connection.getresponse().status == 200
    except (OSError, http.client.HTTPException):
        return False
    finally:
        connection.close()


# -- a group of members -------------------------------------------------------------------


class EtcdGroup:
    """An etcd cluster of ``len(names)`` members on loopback, in one run directory.

    The run directory is a fresh ``rdzv-etcd-*`` directory in ``data_dir`` (default: the
    system temp dir). It holds each member's data (``NAME.data``) and log (``NAME.log``)
    and is removed by :meth:`stop`; ``data_dir`` itself is never removed.
    """

    def __init__(
        self,
        names: Sequence[str],
        *,
        enable_v2: bool = True,
        data_dir: str | os.PathLike | None = None,
        heartbeat_ms: int = 100,
        election_ms: int = 1000,
        extra_args: Sequence[str] = (),
        stop_grace: float = STOP_GRACE_S,
        tls: EtcdTLS | None = None,
    ) -> None:
        if not names:
            raise ValueError("An etcd group needs at least one member.")
        self._names = list(names)
        self._enable_v2 = enable_v2
        self._data_dir = data_dir
        self._heartbeat_ms = heartbeat_ms
        self._election_ms = election_ms
        self._extra_args = tuple(extra_args)
        self._stop_grace = stop_grace
        self.tls = tls
        self._lock = threading.RLock()
        self._owner_pid = os.getpid()
        self.members: list[EtcdMember] = []
        self.run_dir: Path | None = None

    @property
    def started(self) -> bool:
        """True from a successful :meth:`start` until :meth:`stop`."""
        return self.run_dir is not None and bool(self.members)

    def start(self, timeout: float = 60, num_retries: int = 3, stderr: Stderr = None) -> None:
        """Start every member and return once all are ready.

        Each of ``num_retries`` attempts (at least one) picks new free ports and waits up to
        ``timeout`` seconds; a failed attempt's processes and data are removed first.
        ``stderr`` (a file, fd, ``subprocess.DEVNULL`` or ``PIPE``) replaces the members'
        log files as the destination of etcd's error output, as torch's ``start`` allows.

        Raises:
            EtcdBinaryNotFoundError: no etcd binary (see :mod:`rdzv.etcd_binary`).
            EtcdStartError / EtcdStartTimeoutError: the last attempt failed; nothing is left.
            RuntimeError: already started.
        """
        with self._lock:
            if self.run_dir is not None:
                raise RuntimeError("This etcd is already started; stop() it before starting it again.")
            binary = find_etcd_binary()
            self._owner_pid = os.getpid()
            sweep_stale_run_dirs(self._data_dir)
            if self._data_dir is not None:
                os.makedirs(self._data_dir, exist_ok=True)
            self.run_dir = Path(tempfile.mkdtemp(prefix=RUN_DIR_PREFIX, dir=self._data_dir)).absolute()
            _record_pid(self.run_dir, os.getpid())
            atexit.register(self.stop)
            attempts = max(1, num_retries)
            try:
                for attempt in range(1, attempts + 1):
                    try:
                        self._attempt(binary, timeout, stderr)
                        return
                    except EtcdStartError as exc:
                        if attempt == attempts:
                            raise
                        logger.warning("etcd did not start (attempt %d of %d): %s", attempt, attempts, exc)
            except BaseException:
                self.stop()
                raise

    def _attempt(self, binary: Path, timeout: float, stderr: Stderr) -> None:
        for member in self.members:
            member.kill()
            shutil.rmtree(member.data_dir, ignore_errors=True)
        ports = free_ports(2 * len(self._names))
        client_ports, peer_ports = ports[::2], ports[1::2]
        initial_cluster = ",".join(
            f"{name}=http://{LOOPBACK}:{port}" for name, port in zip(self._names, peer_ports)
        )
        settings = _Settings(
            binary=binary,
            enable_v2=self._enable_v2,
            heartbeat_ms=self._heartbeat_ms,
            election_ms=self._election_ms,
            initial_cluster=initial_cluster,
            cluster_token=self.run_dir.name,
            extra_args=self._extra_args,
            stderr=stderr,
            run_dir=self.run_dir,
            tls=self.tls,
        )
        self.members = [
            EtcdMember(name, client, peer, settings)
            for name, client, peer in zip(self._names, client_ports, peer_ports)
        ]
        for member in self.members:
            member.spawn()
        deadline = time.monotonic() + timeout
        for member in self.members:
            member.wait_ready(timeout, deadline)

    def stop(self) -> None:
        """Stop every member (SIGTERM, then SIGKILL after the group's ``stop_grace`` seconds)
        and remove the run directory. Idempotent; a no-op before :meth:`start` and in a
        forked child process (which inherits this hook through ``atexit``)."""
        if os.getpid() != self._owner_pid:
            return
        with self._lock:
            terminate([member.process for member in self.members if member.process is not None], self._stop_grace)
            if self.run_dir is not None:
                shutil.rmtree(self.run_dir, ignore_errors=True)
                self.run_dir = None
            atexit.unregister(self.stop)


class GroupFacade:
    """What :class:`rdzv.server.EtcdServer` and :class:`rdzv.cluster.EtcdCluster` share:
    a context manager that starts and stops their :class:`EtcdGroup`, and KV clients.

    Subclasses set ``_group``, define ``start()`` and ``_client_endpoints()``.
    """

    _group: EtcdGroup

    def start(self) -> None:  # pragma: no cover - defined by subclasses
        raise NotImplementedError

    def stop(self) -> None:
        """Stop every etcd process and remove the run directory. Idempotent."""
        self._group.stop()

    def __enter__(self):
        """Start (with ``start()``'s defaults) unless already started; return ``self``."""
        if not self._group.started:
            self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def kv(self, api: str = "v2"):
        """An :class:`rdzv.kv.KV` client for these etcd processes on etcd's ``api``
        (``"v2"`` or ``"v3"``).

        Raises:
            RuntimeError: not started.
        """
        from .kv import connect

        self._require_started()
        return connect(self._client_endpoints(), api=api, **self.client_options())

    def client_options(self) -> dict[str, str | None]:
        """``protocol``, ``ca_cert``, ``ssl_cert`` and ``ssl_cert_key`` for a client of these
        etcd processes: pass them to :func:`rdzv.kv.connect`, ``get_monitor``, the dashboard,
        or (as ``--rdzv-conf`` values) to ``create_backend``."""
        tls = self._group.tls
        return dict(PLAIN_HTTP) if tls is None else tls.client_options()

    def _client_endpoints(self) -> str:  # pragma: no cover - defined by subclasses
        raise NotImplementedError

    def _require_started(self) -> None:
        if not self._group.started:
            name = type(self).__name__
            raise RuntimeError(f"This {name} is not running; call start() or use `with {name}() as ...:`.")

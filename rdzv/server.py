"""A throwaway single-member etcd on loopback: a drop-in for torch's ``EtcdServer``.

Same constructor and methods as ``torch.distributed.elastic.rendezvous.etcd_server.EtcdServer``,
plus a context manager, :meth:`EtcdServer.kv`, the log, and these differences:

* Ready in about a tenth of a second: readiness is probed every 10 ms with ``GET /health``
  (torch sleeps 1 s between probes), and the member runs with a 10 ms Raft heartbeat and a
  50 ms election timeout, which a cluster of one can afford.
* Never left running: see :mod:`rdzv.etcd_process` (stop hook registered before the fork,
  parent-death signal, own process group, stale run directories swept).
* etcd's output goes to a log file (:attr:`EtcdServer.log_path`), not the console.
* ``enable_v2=False`` serves only the v3 API, like etcd 3.6.
* ``tls=EtcdTLS(...)`` serves HTTPS, with client-certificate auth when a client pair is given.
* :meth:`kill` and :meth:`restart` crash etcd and bring it back on the same port and data,
  for fault-injection tests and demos.
* The binary is found by :func:`rdzv.etcd_binary.find_etcd_binary`.

Usage::

    with EtcdServer() as server:
        client = server.get_client()          # python-etcd, v2 API
        kv = server.kv("v3")                  # rdzv.kv.KV
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from .etcd_binary import EtcdBinaryNotFoundError, find_etcd_binary
from .etcd_tls import EtcdTLS
from .etcd_process import (
    HOST,
    EtcdGroup,
    EtcdStartError,
    EtcdStartTimeoutError,
    GroupFacade,
    Stderr,
    sweep_stale_run_dirs,
)

if TYPE_CHECKING:
    import etcd

    from .kv import KV

__all__ = [
    "EtcdBinaryNotFoundError",
    "EtcdServer",
    "EtcdStartError",
    "EtcdStartTimeoutError",
    "EtcdTLS",
    "find_etcd_binary",
    "sweep_stale_run_dirs",
]

MEMBER_NAME = "etcd"


class EtcdServer(GroupFacade):
    """One etcd process on a free port of 127.0.0.1, with its data in a temp directory.

    Args:
        data_dir: where to create the run directory (``rdzv-etcd-*``) that holds etcd's
            data and log; default: the system temp dir. :meth:`stop` removes the run
            directory, never ``data_dir`` itself.
        enable_v2: serve etcd's v2 API as well as v3 (``--enable-v2``).
        extra_args: more etcd flags, appended last (they override ours).
        tls: serve the client port over HTTPS with these certificates (see :class:`EtcdTLS`);
            :meth:`client_options` then gives what a client needs.

    Until :meth:`start`, ``get_port()`` and :attr:`peer_port` are -1. Dropping the object
    does not stop etcd: :meth:`stop`, the end of a ``with`` block or the end of the
    process does.
    """

    def __init__(
        self,
        data_dir: str | os.PathLike | None = None,
        *,
        enable_v2: bool = True,
        extra_args: tuple[str, ...] | list[str] = (),
        tls: EtcdTLS | None = None,
    ) -> None:
        self.enable_v2 = enable_v2
        self.tls = tls
        self._group = EtcdGroup(
            [MEMBER_NAME],
            enable_v2=enable_v2,
            data_dir=data_dir,
            heartbeat_ms=10,
            election_ms=50,
            extra_args=extra_args,
            tls=tls,
        )

    # -- lifecycle -----------------------------------------------------------------------

    def start(self, timeout: float = 60, num_retries: int = 3, stderr: Stderr = None) -> None:
        """Start etcd and return once it serves requests.

        Args:
            timeout: seconds each attempt waits for etcd to be ready.
            num_retries: attempts in all (at least one), each on new free ports.
            stderr: where etcd's error output goes instead of :attr:`log_path`: a file
                object, a file descriptor, ``subprocess.DEVNULL`` or ``subprocess.PIPE``.

        Raises:
            EtcdBinaryNotFoundError: no etcd binary was found.
            EtcdStartError: etcd exited before it was ready (message: its reason and log).
            EtcdStartTimeoutError: (also a ``TimeoutError``) not ready within ``timeout``.
            RuntimeError: already started.

        On any failure nothing is left running and the run directory is removed.
        """
        self._group.start(timeout=timeout, num_retries=num_retries, stderr=stderr)

    def stop(self) -> None:
        """Stop etcd (SIGTERM, SIGKILL after 5 s) and remove its run directory. Idempotent."""
        super().stop()

    def is_running(self) -> bool:
        """Whether the etcd process is alive."""
        member = self._member()
        return member is not None and member.is_running()

    def kill(self) -> None:
        """SIGKILL etcd, as a crash would, keeping its port and data for :meth:`restart`.

        Raises:
            RuntimeError: the server was not started.
        """
        self._require_started()
        self._member().kill()

    def restart(self, timeout: float = 60) -> None:
        """Start etcd again on the same port and data (stopping it first if it runs) and
        return once it serves requests.

        Raises:
            RuntimeError: the server was not started.
            EtcdStartError / EtcdStartTimeoutError: it exited, or was not ready in time.
        """
        self._require_started()
        self._member().restart(timeout=timeout)

    # -- where it is (torch's API) ---------------------------------------------------------

    def get_host(self) -> str:
        """``"localhost"``."""
        return HOST

    def get_port(self) -> int:
        """The client port, or -1 before :meth:`start`."""
        member = self._member()
        return member.client_port if member else -1

    def get_endpoint(self) -> str:
        """``"localhost:PORT"``, the client endpoint."""
        return f"{self.get_host()}:{self.get_port()}"

    @property
    def protocol(self) -> str:
        """``"https"`` with :class:`EtcdTLS`, else ``"http"``."""
        return "https" if self.tls else "http"

    def get_client(self) -> etcd.Client:
        """A python-etcd client for this server's v2 API (read timeout 10 s, like torch's),
        with the TLS settings of ``tls``.

        Raises:
            RuntimeError: the server was not started.
        """
        import etcd

        self._require_started()
        options = self.client_options()
        cert = (options["ssl_cert"], options["ssl_cert_key"]) if options["ssl_cert"] else None
        return etcd.Client(
            host=self.get_host(), port=self.get_port(), version_prefix="/v2", read_timeout=10,
            protocol=self.protocol, cert=cert, ca_cert=options["ca_cert"],
        )

    def kv(self, api: str = "v2") -> KV:
        """An :class:`rdzv.kv.KV` client for this server on etcd's ``api`` (``"v2"`` or ``"v3"``).

        Raises:
            RuntimeError: the server was not started.
        """
        return super().kv(api)

    def _client_endpoints(self) -> str:
        return self.get_endpoint()

    # -- extras ----------------------------------------------------------------------------

    @property
    def peer_port(self) -> int:
        """The Raft peer port, or -1 before :meth:`start`."""
        member = self._member()
        return member.peer_port if member else -1

    @property
    def pid(self) -> int | None:
        """The etcd process id (of the current or last run), ``None`` before :meth:`start`."""
        member = self._member()
        return member.pid if member else None

    @property
    def run_dir(self) -> Path | None:
        """The directory holding etcd's data and log while started, else ``None``."""
        return self._group.run_dir

    @property
    def log_path(self) -> Path | None:
        """etcd's log file (it holds etcd's error output unless ``start`` got ``stderr``);
        ``None`` before :meth:`start`. Removed by :meth:`stop`."""
        member = self._member()
        return member.log_path if member else None

    def read_log(self) -> str:
        """What etcd has logged so far; ``""`` before :meth:`start` or after :meth:`stop`."""
        member = self._member()
        return member.read_log() if member else ""

    def _member(self):
        return self._group.members[0] if self._group.members else None

    def __repr__(self) -> str:
        state = "running" if self.is_running() else "stopped"
        return f"EtcdServer(endpoint={self.get_endpoint()!r}, enable_v2={self.enable_v2}, {state})"

"""A throwaway multi-member etcd cluster on loopback, for failure tests.

Members can be killed (SIGKILL, like a crash) and restarted on the same ports and data.
Process handling, readiness and cleanup are those of :mod:`rdzv.etcd_process`.

Usage::

    with EtcdCluster(size=3) as cluster:
        kv = cluster.kv("v3")                 # talks to any live member
        cluster.kill_member(0)                # the other two keep a quorum
        cluster.restart_member(0)             # rejoins with its data
"""

from __future__ import annotations

import os

from .etcd_process import EtcdGroup, EtcdMember, GroupFacade
from .etcd_tls import EtcdTLS

__all__ = ["EtcdCluster", "EtcdMember"]


class EtcdCluster(GroupFacade):
    """``size`` etcd members on free ports of 127.0.0.1, in one run directory.

    Args:
        size: number of members (1 or more; 3 tolerates the loss of one).
        enable_v2: serve etcd's v2 API as well as v3.
        data_dir: where to create the run directory (default: the system temp dir);
            :meth:`stop` removes the run directory, never ``data_dir`` itself.
        heartbeat_ms, election_ms: Raft timing; shorter means faster failover but more
            spurious elections on a loaded machine.
        extra_args: more etcd flags for every member, appended last.
        tls: serve every member's client port over HTTPS (see :class:`rdzv.etcd_tls.EtcdTLS`).
    """

    def __init__(
        self,
        size: int = 3,
        enable_v2: bool = True,
        *,
        data_dir: str | os.PathLike | None = None,
        heartbeat_ms: int = 50,
        election_ms: int = 500,
        extra_args: tuple[str, ...] | list[str] = (),
        tls: EtcdTLS | None = None,
    ) -> None:
        if size < 1:
            raise ValueError(f"An etcd cluster needs at least one member, not {size}.")
        self.size = size
        self.enable_v2 = enable_v2
        self._group = EtcdGroup(
            [f"m{index}" for index in range(size)],
            enable_v2=enable_v2,
            data_dir=data_dir,
            heartbeat_ms=heartbeat_ms,
            election_ms=election_ms,
            extra_args=extra_args,
            stop_grace=0.0,
            tls=tls,
        )

    def start(self, timeout: float = 60, num_retries: int = 3) -> None:
        """Start every member and return once all are ready (see ``EtcdGroup.start``)."""
        self._group.start(timeout=timeout, num_retries=num_retries)

    def stop(self) -> None:
        """Kill every member at once and remove the run directory. Idempotent.

        No graceful shutdown: the data is deleted anyway, and etcd members told to stop
        together wait seconds for elections that can no longer succeed.
        """
        super().stop()

    @property
    def members(self) -> list[EtcdMember]:
        """The members, in order (each has ``endpoint``, ``pid``, ``kill()``, ``restart()``...)."""
        return list(self._group.members)

    @property
    def endpoints(self) -> str:
        """``"localhost:P0,localhost:P1,..."``, every member's client endpoint.

        Raises:
            RuntimeError: the cluster was not started.
        """
        self._require_started()
        return ",".join(member.endpoint for member in self._group.members)

    def kill_member(self, index: int) -> None:
        """SIGKILL member ``index`` (a crash); its ports and data are kept."""
        self._require_started()
        self._group.members[index].kill()

    def stop_member(self, index: int) -> None:
        """Stop member ``index`` gracefully (SIGTERM); its ports and data are kept."""
        self._require_started()
        self._group.members[index].stop()

    def restart_member(self, index: int, timeout: float = 60, wait: bool = True) -> None:
        """Start member ``index`` again on its ports and data (stopping it first if it runs);
        with ``wait``, return once it is ready, which needs a quorum of live members.

        Raises:
            EtcdStartError / EtcdStartTimeoutError: it exited, or was not ready in time.
        """
        self._require_started()
        self._group.members[index].restart(timeout=timeout, wait=wait)

    def _client_endpoints(self) -> str:
        return self.endpoints

    def __repr__(self) -> str:
        return f"EtcdCluster(size={self.size}, members={self.members!r})"

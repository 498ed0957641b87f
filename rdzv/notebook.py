"""One call for a notebook: a throwaway etcd, a simulated cluster on it, and the live dashboard.

    import rdzv.notebook
    lab = rdzv.notebook.start()     # etcd + 3 simulated nodes
    lab                             # the dashboard, inline
    lab.state_table()               # the decoded rendezvous state, one row per node
    lab.close()

Everything a lab starts is stopped by ``close()``, at interpreter exit, and -- when the
kernel is killed -- by the parent-death signal of the etcd process and of torchrun
agents (simulated nodes are threads and die with the kernel). Starting a new lab
closes the previous one, so re-running a cell does not pile up servers.
"""

from __future__ import annotations

import atexit
import sys
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas

    from .demo import DemoCluster, TorchrunCluster
    from .kv import KV
    from .server import EtcdServer
    from .state import RendezvousSnapshot

_current: Lab | None = None
_current_lock = threading.Lock()


def start(cluster: bool = True, nodes: int = 3, *, run_id: str = "demo", **demo_kwargs: Any) -> Lab:
    """Start etcd (v2 and v3 APIs) and, if ``cluster``, a :class:`rdzv.demo.DemoCluster` of
    ``nodes`` simulated nodes in run ``run_id``; ``demo_kwargs`` go to ``DemoCluster``
    (``backend``, ``min_nodes``, ``max_nodes``, ``last_call_timeout``, ...).

    Closes the lab this function returned before, if any.
    """
    global _current
    if nodes < 0:
        raise ValueError(f"nodes must be >= 0 (got {nodes}).")
    with _current_lock:
        previous, _current = _current, None
    if previous is not None:
        previous.close()
    lab = Lab(run_id=run_id, backend=demo_kwargs.get("backend", "rdzv-etcd-v2"))
    try:
        if cluster:
            lab.start_cluster(nodes, **demo_kwargs)
    except BaseException:
        lab.close()
        raise
    with _current_lock:
        _current = lab
    return lab


class Lab:
    """An etcd server and what runs on it, for one notebook.

    Attributes:
        server: the :class:`rdzv.server.EtcdServer`.
        endpoint: its ``host:port``.
        run_id: the run the dashboard and :meth:`state` look at by default.
        cluster: the :class:`rdzv.demo.DemoCluster`, or ``None``.
        api: the etcd API of the default run's state (``"v2"``, or ``"v3"`` for ``rdzv-etcd-v3``).
    """

    def __init__(self, run_id: str = "demo", backend: str = "rdzv-etcd-v2") -> None:
        from .server import EtcdServer

        self.run_id = run_id
        self.api = "v3" if backend.endswith("v3") else "v2"
        self.cluster: DemoCluster | None = None
        self._jobs: list[TorchrunCluster] = []
        self._clients: dict[str, KV] = {}
        self._closed = False
        self.server: EtcdServer = EtcdServer(enable_v2=True)
        self.server.start()
        self.endpoint: str = self.server.get_endpoint()
        atexit.register(self.close)

    # -- what runs on the server ------------------------------------------------

    def start_cluster(self, nodes: int = 3, **demo_kwargs: Any) -> DemoCluster:
        """Start the lab's simulated cluster (run :attr:`run_id`) with ``nodes`` nodes."""
        from .demo import DemoCluster

        self._check_open()
        if self.cluster is not None:
            raise RuntimeError("This lab already has a cluster; close the lab and start a new one.")
        demo_kwargs.setdefault("backend", "rdzv-etcd-v3" if self.api == "v3" else "rdzv-etcd-v2")
        self.cluster = DemoCluster(self.endpoint, self.run_id, **demo_kwargs)
        for _ in range(nodes):
            self.cluster.add_node()
        return self.cluster

    def torchrun(self, run_id: str = "torchrun-demo", **kwargs: Any) -> TorchrunCluster:
        """A :class:`rdzv.demo.TorchrunCluster` on this lab's etcd, closed with the lab."""
        from .demo import TorchrunCluster

        self._check_open()
        job = TorchrunCluster(self.endpoint, run_id, **kwargs)
        self._jobs.append(job)
        return job

    # -- looking at it --------------------------------------------------------------

    def dashboard(self, run_id: str | None = None, **kwargs: Any) -> Any:
        """The live dashboard (a Panel object) of run ``run_id`` (default :attr:`run_id`);
        ``kwargs`` go to :func:`rdzv.ui.dashboard`. Nodes count as stale after the
        heartbeat expiry of the lab's cluster or job running that run."""
        from .ui import dashboard

        run_id = run_id or self.run_id
        runs = [job for job in self._jobs if job.run_id == run_id]
        if self.cluster is not None and self.cluster.run_id == run_id:
            kwargs.setdefault("heartbeat_expiry", self.cluster.config.heartbeat_expiry)
        elif runs:
            kwargs.setdefault("heartbeat_expiry", runs[-1].heartbeat_expiry)
        return dashboard(endpoint=self.endpoint, run_id=run_id, **kwargs)

    def state(self, run_id: str | None = None, api: str | None = None) -> RendezvousSnapshot | None:
        """The decoded rendezvous state of ``run_id`` as etcd holds it now, or ``None`` if
        the run has no state (yet). Raises :class:`rdzv.state.UndecodableStateError`
        for a value that is not a rendezvous state."""
        from .monitor.keys import KeyLayout
        from .state import decode_state_b64

        run_id = run_id or self.run_id
        current = self.kv(api or self.api).get(KeyLayout("/torch/elastic").runs_dir + run_id)
        return None if current is None else decode_state_b64(current.value, run_id=run_id)

    def wait_for_state(
        self,
        predicate: Callable[[RendezvousSnapshot], bool],
        run_id: str | None = None,
        timeout: float = 30.0,
    ) -> RendezvousSnapshot:
        """Poll the state of ``run_id`` every 0.1 s until ``predicate(state)`` holds; return that state.

        Raises:
            TimeoutError: it did not hold within ``timeout``.
        """
        deadline = time.monotonic() + timeout
        while True:
            snapshot = self.state(run_id)
            if snapshot is not None and predicate(snapshot):
                return snapshot
            if time.monotonic() >= deadline:
                raise TimeoutError(
                    f"The state of run {run_id or self.run_id!r} did not reach the expected condition within "
                    f"{timeout:g} s; it is now {snapshot!r}."
                )
            time.sleep(0.1)

    def state_table(self, snapshot: RendezvousSnapshot | None = None) -> pandas.DataFrame:
        """The state (``snapshot``, or the current state of :attr:`run_id`) as a table: one row
        per node, participants by rank first, with its heartbeat's age in seconds."""
        import pandas

        from .state import RendezvousSnapshot

        snapshot = snapshot if snapshot is not None else self.state() or RendezvousSnapshot()
        order = {"participant": 0, "waiting": 1, "redundant": 2, None: 3}
        rows = []
        for node in snapshot.nodes:
            membership = snapshot.membership(node)
            age = snapshot.heartbeat_age(node)
            rows.append({
                "node": node.addr,
                "pid": node.pid,
                "local_id": node.local_id,
                "membership": membership or "heartbeat only",
                "rank": snapshot.participants[node] if membership == "participant" and snapshot.complete else None,
                "heartbeat_age_s": None if age is None else round(age.total_seconds(), 1),
                "_order": (order[membership], snapshot.participants.get(node, 0), node),
            })
        rows.sort(key=lambda row: row["_order"])
        columns = ["node", "pid", "local_id", "membership", "rank", "heartbeat_age_s"]
        table = pandas.DataFrame([{key: row[key] for key in columns} for row in rows], columns=columns)
        table["rank"] = table["rank"].astype("Int64")
        table.attrs["summary"] = (
            f"round {snapshot.round}, {'complete' if snapshot.complete else 'not complete'}"
            f"{', closed' if snapshot.closed else ''}"
        )
        return table

    def kv(self, api: str = "v2") -> KV:
        """A key-value client on the lab's etcd (one per API, closed with the lab)."""
        self._check_open()
        if api not in self._clients:
            self._clients[api] = self.server.kv(api=api)
        return self._clients[api]

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> Any:
        """Show the dashboard when the lab is the value of a notebook cell."""
        if self._closed:
            return {"text/plain": repr(self)}
        return self.dashboard()._repr_mimebundle_(include, exclude)

    def __repr__(self) -> str:
        if self._closed:
            return "Lab(closed)"
        return f"Lab(etcd at {self.endpoint}, run {self.run_id!r}, {self.cluster!r})"

    # -- cleanup ----------------------------------------------------------------------

    def close(self) -> None:
        """Stop the cluster, the torchrun jobs and etcd. Idempotent."""
        global _current
        if self._closed:
            return
        self._closed = True
        atexit.unregister(self.close)
        with _current_lock:
            if _current is self:
                _current = None
        try:
            if self.cluster is not None:
                self.cluster.close()
            for job in self._jobs:
                job.close()
            for client in self._clients.values():
                client.close()
            self._stop_monitors()
        finally:
            self.server.stop()

    def _stop_monitors(self) -> None:
        """Stop the shared monitors the lab's dashboards started on this etcd (their
        watchers would otherwise keep retrying a server that is gone)."""
        registry = sys.modules.get("rdzv.monitor.registry")
        if registry is None:  # no dashboard was ever built
            return
        from .kv import format_endpoints, parse_endpoints

        ours = format_endpoints(parse_endpoints(self.endpoint))
        for monitor in registry.shared_monitors():
            if format_endpoints(parse_endpoints(monitor.endpoint)) == ours:
                monitor.stop()

    def __enter__(self) -> Lab:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("This lab is closed; start a new one with rdzv.notebook.start().")

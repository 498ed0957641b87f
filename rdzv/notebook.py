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
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas

    from .demo import DemoCluster, TorchrunCluster
    from .kv import KV
    from .rendezvous_settings import RendezvousSettings
    from .server import EtcdServer
    from .state import RendezvousSnapshot

#: ``state_table()``'s names for the node-row fields it renames (the rest keep theirs).
TABLE_NAMES = {"addr": "node", "heartbeat_age": "heartbeat_age_s"}

_current: Lab | None = None
_current_lock = threading.Lock()


def start(cluster: bool = True, nodes: int = 3, *, run_id: str = "demo", **demo_kwargs: Any) -> Lab:
    """Start etcd (v2 and v3 APIs) and, if ``cluster``, a :class:`rdzv.demo.DemoCluster` of
    ``nodes`` simulated nodes in run ``run_id``; ``demo_kwargs`` go to ``DemoCluster``
    (``backend``, ``min_nodes``, ``max_nodes``, ``last_call_timeout``, ...).

    Closes the lab this function returned before, if any -- except in a notebook served by
    ``panel serve``, where each browser session has a lab of its own (see :meth:`Lab.close`).
    """
    global _current
    if nodes < 0:
        raise ValueError(f"nodes must be >= 0 (got {nodes}).")
    page = _served_page()
    if page is None:
        with _current_lock:
            previous, _current = _current, None
        if previous is not None:
            previous.close()
    lab = Lab(run_id=run_id, backend=demo_kwargs.get("backend", "rdzv-etcd-v2"))
    try:
        if cluster:
            lab.start_cluster(nodes, **demo_kwargs)
    except BaseException:
        lab._shut_down()
        raise
    if page is not None:
        lab._page = page
        page.on_session_destroyed(lambda _session: lab._shut_down())
    else:
        with _current_lock:
            _current = lab
    return lab


def _served_page() -> Any:
    """The Bokeh document of the page ``panel serve`` is building now (a served notebook's
    cells running for a new browser session), or None (a kernel, a script, a page already shown)."""
    panel = sys.modules.get("panel")
    if panel is None:  # rdzv's dashboard was never imported, so nothing serves a page
        return None
    state = panel.state
    document = state.curdoc
    if document is None or document.session_context is None or state.loaded:
        return None
    return document


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
        from .kv import Target
        from .server import EtcdServer

        self.run_id = run_id
        self.api = "v3" if backend.endswith("v3") else "v2"
        self.cluster: DemoCluster | None = None
        self._jobs: list[TorchrunCluster] = []
        self._clients: dict[str, KV] = {}
        self._closed = False
        self._dashboards: weakref.WeakSet[Any] = weakref.WeakSet()  # stopped by close()
        self._page: Any = None  # the page of a served notebook that shows this lab (see close())
        self.server: EtcdServer = EtcdServer(enable_v2=True)
        self.server.start()
        self.endpoint: str = self.server.get_endpoint()
        #: Where the lab's etcd is, for anything that takes a target (``rdzv.dashboard``, monitors).
        self.target = Target.of(self.endpoint)
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
        ``kwargs`` go to :func:`rdzv.ui.dashboard`. It knows the rendezvous settings of the
        lab's cluster or job running that run (so stale nodes are those torch would drop)."""
        from .ui import dashboard

        run_id = run_id or self.run_id
        kwargs.setdefault("settings", self.settings(run_id))
        board = dashboard(endpoint=self.target, run_id=run_id, **kwargs)
        self._dashboards.add(board)
        return board

    def settings(self, run_id: str | None = None) -> RendezvousSettings | None:
        """The rendezvous settings of the lab's cluster or torchrun job running ``run_id``
        (default :attr:`run_id`), or ``None`` when the lab did not start that run."""
        run_id = run_id or self.run_id
        if self.cluster is not None and self.cluster.run_id == run_id:
            return self.cluster.config.settings
        jobs = [job for job in self._jobs if job.run_id == run_id]
        return jobs[-1].settings if jobs else None

    def state(self, run_id: str | None = None, api: str | None = None) -> RendezvousSnapshot | None:
        """The decoded rendezvous state of ``run_id`` as etcd holds it now, or ``None`` if
        the run has no state (yet). Raises :class:`rdzv.state.UndecodableStateError`
        for a value that is not a rendezvous state."""
        from .state import decode_state_b64

        run_id = run_id or self.run_id
        current = self.kv(api or self.api).get(self.target.layout.state_key(run_id))
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

    def state_table(self, snapshot: RendezvousSnapshot | None = None, run_id: str | None = None) -> pandas.DataFrame:
        """The state (``snapshot``, or the current state of ``run_id``, default :attr:`run_id`) as
        a table: the rows of :func:`rdzv.nodes.node_rows` (the dashboard's and ``rdzv status``'s),
        with heartbeat ages in seconds; the run's settings decide the stale column."""
        import pandas

        from .nodes import COLUMNS, node_rows
        from .state import RendezvousSnapshot
        from .text import utc_now

        snapshot = snapshot if snapshot is not None else self.state(run_id) or RendezvousSnapshot()
        fields = [field for field, _ in COLUMNS]
        records = []
        for row in node_rows(snapshot, self.settings(run_id), utc_now()):
            record = {field: getattr(row, field) for field in fields}
            record["heartbeat_age"] = None if row.heartbeat_age is None else round(row.heartbeat_age.total_seconds(), 1)
            records.append(record)
        table = pandas.DataFrame(records, columns=fields).rename(columns=TABLE_NAMES)
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
        """Stop the cluster, the torchrun jobs and etcd. Idempotent.

        In a notebook served by ``panel serve``, the page shows what the notebook's cells
        made: a ``close()`` while that page is being built waits until its browser session
        ends (the lab is closed then), so that the page's dashboard stays live."""
        if self._page is not None and _served_page() is self._page:
            return
        self._shut_down()

    def _shut_down(self) -> None:
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
            self._stop_dashboards()
            self._stop_monitors()
        finally:
            self.server.stop()

    def _stop_dashboards(self) -> None:
        """Stop the periodic refresh of the dashboards the lab made: they keep showing the last
        state, and nothing is sent to the page for them any more."""
        for board in list(self._dashboards):
            try:
                board.stop()
            except RuntimeError:  # at interpreter exit the kernel's event loop may be closed already
                pass

    def _stop_monitors(self) -> None:
        """Stop the shared monitors the lab's dashboards started on this etcd (their
        watchers would otherwise keep retrying a server that is gone)."""
        if "rdzv.monitor" in sys.modules:  # else no dashboard was ever built
            sys.modules["rdzv.monitor"].stop_monitors(self.target)

    def __enter__(self) -> Lab:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("This lab is closed; start a new one with rdzv.notebook.start().")

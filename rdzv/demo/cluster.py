"""DemoCluster: a simulated elastic cluster of real torch rendezvous handlers on etcd."""

from __future__ import annotations

import atexit
import threading
import time
from collections.abc import Callable

from torch.distributed.elastic.rendezvous.api import RendezvousError

from .handlers import RendezvousConfig, create_node_handler
from .node import NodeView, SimNode

_STOP_TIMEOUT = 30.0


class DemoCluster:
    """Nodes that join, run, leave and crash in one rendezvous run, each a thread with its
    own torch ``DynamicRendezvousHandler`` and etcd client (see :mod:`rdzv.demo.node`).

    Args:
        endpoint: etcd's ``host:port``.
        run_id: the rendezvous run; must not be closed already.
        backend: ``"rdzv-etcd-v2"``, ``"rdzv-etcd-v3"`` or torch's own ``"etcd-v2"``.
        min_nodes, max_nodes: the rendezvous' bounds.
        last_call_timeout, keep_alive_interval, join_timeout: seconds (fractions allowed).
        keep_alive_max_attempt: missed heartbeats after which torch drops a node.
        local_addr_prefix: nodes are named ``f"{local_addr_prefix}-{n}"``.

    Raises:
        ValueError: a bad setting, or a run that is already closed.
        ConnectionError: etcd did not answer.

    Every method is thread-safe. :meth:`close` (also called on ``with`` exit and at
    interpreter exit) closes the run and stops every node's thread.
    """

    def __init__(
        self,
        endpoint: str,
        run_id: str = "demo",
        *,
        backend: str = "rdzv-etcd-v2",
        min_nodes: int = 2,
        max_nodes: int = 4,
        last_call_timeout: float = 2,
        keep_alive_interval: float = 1,
        keep_alive_max_attempt: int = 3,
        join_timeout: float = 600,
        local_addr_prefix: str = "node",
    ) -> None:
        self.config = RendezvousConfig(
            endpoint=endpoint,
            run_id=run_id,
            backend=backend,
            min_nodes=min_nodes,
            max_nodes=max_nodes,
            last_call_timeout=last_call_timeout,
            keep_alive_interval=keep_alive_interval,
            keep_alive_max_attempt=keep_alive_max_attempt,
            join_timeout=join_timeout,
        )
        if not local_addr_prefix:
            raise ValueError("local_addr_prefix must be a non-empty string.")
        self.local_addr_prefix = local_addr_prefix
        self._lock = threading.RLock()
        self._nodes: list[SimNode] = []
        self._counter = 0
        self._closed = False
        #: The sentence saying why closing the run in etcd failed, if it did.
        self.close_error: str | None = None
        try:
            # Closes the run at the end; never joins it, so it holds no place in the state.
            self._closer, self._release_closer = create_node_handler(self.config, f"{local_addr_prefix}-closer")
            already_closed = self._closer.is_closed()
        except RendezvousError as exc:
            raise ConnectionError(
                f"etcd at {endpoint} did not answer ({exc}); start one with rdzv.server.EtcdServer "
                "or pass the endpoint of a running etcd."
            ) from None
        if already_closed:
            self._release_closer()
            raise ValueError(
                f"The rendezvous run {run_id!r} at {endpoint} is already closed; choose another run_id."
            )
        atexit.register(self.close)

    @property
    def endpoint(self) -> str:
        return self.config.endpoint

    @property
    def run_id(self) -> str:
        return self.config.run_id

    @property
    def backend(self) -> str:
        return self.config.backend

    @property
    def api(self) -> str:
        """The etcd API holding the run's state (``"v2"`` or ``"v3"``)."""
        return self.config.api

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def nodes(self) -> list[SimNode]:
        """The live nodes (joining, waiting or running), oldest first."""
        with self._lock:
            return [node for node in self._nodes if not node.finished]

    @property
    def all_nodes(self) -> list[SimNode]:
        """Every node this cluster started, including those that left, crashed or stopped."""
        with self._lock:
            return list(self._nodes)

    def add_node(self, name: str | None = None) -> SimNode:
        """Start a new node; it joins the current round if it can, else waits for the next."""
        with self._lock:
            self._check_open()
            live_names = {node.name for node in self.nodes}
            if name is None:
                name = self._next_name(live_names)
            elif not name:
                raise ValueError("A node name must be a non-empty string.")
            elif name in live_names:
                raise ValueError(f"A live node is already named {name!r}; choose another name or omit it.")
            handler, release = create_node_handler(self.config, name)
            node = SimNode(name, handler, self.config, release)
            self._nodes.append(node)
            node.start()
            return node

    def leave(self, node: SimNode | str, timeout: float = _STOP_TIMEOUT) -> None:
        """Take the node out gracefully: it removes itself from the state and stops its heartbeats.
        Returns once it has; a node that already ended is left as it is."""
        self._end(self._resolve(node), "leave", timeout)

    def crash(self, node: SimNode | str, timeout: float = _STOP_TIMEOUT) -> None:
        """Stop the node's heartbeats abruptly; its entry stays in the state until torch's
        heartbeat check (``keep_alive_interval * keep_alive_max_attempt``) drops it."""
        self._end(self._resolve(node), "crash", timeout)

    def scale_to(self, n: int, timeout: float = _STOP_TIMEOUT) -> None:
        """Add nodes, or take the newest ones out gracefully, until ``n`` are live."""
        if n < 0:
            raise ValueError(f"Cannot scale to {n} nodes; give a number of nodes >= 0.")
        with self._lock:
            self._check_open()
            live = self.nodes
            for _ in range(n - len(live)):
                self.add_node()
            leaving = live[n:] if n < len(live) else []
            for node in leaving:
                node.request("leave")
        self._wait_ended(leaving, timeout)

    def view(self, node: SimNode | str) -> NodeView:
        return self._resolve(node).view

    def views(self, include_finished: bool = False) -> list[NodeView]:
        """The views of the live nodes (or of every node), oldest first."""
        return [node.view for node in (self.all_nodes if include_finished else self.nodes)]

    def wait_until(self, predicate: Callable[[DemoCluster], bool], timeout: float) -> bool:
        """Poll ``predicate(self)`` every 0.1 s; True as soon as it holds, False after ``timeout``."""
        deadline = time.monotonic() + timeout
        while True:
            if predicate(self):
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.1)

    def running(self) -> list[NodeView]:
        """Views of the nodes currently running, by rank."""
        views = [view for view in self.views() if view.status == "running"]
        return sorted(views, key=lambda view: (view.round or 0, view.rank or 0))

    def close(self, timeout: float = _STOP_TIMEOUT) -> None:
        """Close the run in etcd (torch's close op) and stop every node's thread. Idempotent.

        If etcd cannot be reached the threads are stopped all the same, and
        :attr:`close_error` says why the run could not be marked closed.
        """
        with self._lock:
            if self._closed:
                return
            self._closed = True
            nodes = list(self._nodes)
        atexit.unregister(self.close)
        for node in nodes:
            node.request("stop")
        try:
            self._closer.set_closed()
        except Exception as exc:  # the nodes must stop even when etcd is gone
            self.close_error = f"The run {self.run_id!r} could not be marked closed in etcd ({exc})."
        finally:
            self._release_closer()
            self._wait_ended(nodes, timeout)

    def __enter__(self) -> DemoCluster:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"{len(self.nodes)} live nodes"
        return f"DemoCluster({self.run_id!r} on {self.endpoint}, {self.backend}, {state})"

    # -- helpers -------------------------------------------------------------------

    def _end(self, node: SimNode, request: str, timeout: float) -> None:
        node.request(request)  # type: ignore[arg-type]
        self._wait_ended([node], timeout)

    @staticmethod
    def _wait_ended(nodes: list[SimNode], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        stuck = [node.name for node in nodes if not node.join(max(0.0, deadline - time.monotonic()))]
        if stuck:
            raise TimeoutError(
                f"Node(s) {', '.join(stuck)} did not stop within {timeout:g} s (is etcd answering?); "
                "their threads are daemons and end with the process."
            )

    def _resolve(self, node: SimNode | str) -> SimNode:
        with self._lock:
            if isinstance(node, SimNode):
                if node in self._nodes:
                    return node
                raise ValueError(f"Node {node.name!r} does not belong to this cluster.")
            matches = [candidate for candidate in self._nodes if candidate.name == node]
            live = [candidate for candidate in matches if not candidate.finished]
            if live or matches:
                return (live or matches)[-1]
            raise ValueError(f"No node is named {node!r}; cluster.views(include_finished=True) lists them.")

    def _next_name(self, taken: set[str]) -> str:
        while True:
            self._counter += 1
            name = f"{self.local_addr_prefix}-{self._counter}"
            if name not in taken:
                return name

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("This demo cluster is closed; create a new DemoCluster (with a new run_id).")

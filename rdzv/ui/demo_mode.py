"""The demo behind a dashboard started without an endpoint: one throwaway etcd and one simulated
cluster on autopilot per process, shared by every page, stopped at interpreter exit."""

from __future__ import annotations

import atexit
import logging
import threading
from dataclasses import dataclass, field

from ..rendezvous_settings import RendezvousSettings

logger = logging.getLogger("rdzv.ui")

DEMO_RUN_ID = "demo"
DEMO_NODES = 3
#: The demo cluster's rendezvous settings (DemoCluster's arguments), known to its dashboards.
DEMO_CLUSTER = dict(min_nodes=2, max_nodes=5, last_call_timeout=2.0, join_timeout=600.0,
                    keep_alive_interval=1.0, keep_alive_max_attempt=3)


@dataclass
class DemoEnvironment:
    """The process's demo: ``endpoint`` of its etcd, the ``run_id`` its nodes rendezvous in,
    and the rendezvous ``settings`` its nodes use."""

    endpoint: str
    run_id: str
    settings: RendezvousSettings
    server: object = field(repr=False)
    cluster: object = field(default=None, repr=False)
    stop: threading.Event = field(default_factory=threading.Event, repr=False)
    error: str | None = None

    def shutdown(self) -> None:
        """Stop the autopilot, close the cluster, stop etcd. Idempotent."""
        self.stop.set()
        if self.cluster is not None:
            try:
                self.cluster.close()
            except Exception as exc:
                logger.warning("The demo cluster did not stop cleanly: %s", exc)
        self.server.stop()


_lock = threading.Lock()
_demo: DemoEnvironment | None = None


def demo_environment() -> DemoEnvironment:
    """Start the process's demo on first call (etcd now; the cluster in a background thread, as
    importing torch takes seconds) and return it on every call."""
    global _demo
    with _lock:
        if _demo is None:
            from ..server import EtcdServer

            server = EtcdServer(enable_v2=True)
            server.start()
            _demo = DemoEnvironment(endpoint=server.get_endpoint(), run_id=DEMO_RUN_ID,
                                    settings=RendezvousSettings.provided(**DEMO_CLUSTER), server=server)
            atexit.register(_demo.shutdown)
            threading.Thread(target=_start_cluster, args=(_demo,), name="rdzv-demo-start", daemon=True).start()
        return _demo


def _start_cluster(demo: DemoEnvironment) -> None:
    try:
        from ..demo import DemoCluster, autopilot

        cluster = DemoCluster(demo.endpoint, demo.run_id, **DEMO_CLUSTER)
        demo.cluster = cluster
        if demo.stop.is_set():  # the process began exiting while torch was loading
            cluster.close()
            return
        for _ in range(DEMO_NODES):
            cluster.add_node()
        autopilot(cluster, demo.stop, period=6.0)
    except Exception as exc:
        demo.error = f"The demo cluster did not start ({exc})."
        logger.error("%s", demo.error)

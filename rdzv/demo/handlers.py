"""Real torch ``DynamicRendezvousHandler`` objects for simulated nodes.

Each simulated node gets its own handler and its own etcd client, as a node on
another machine would. The handler is torch's; only the backend it keeps the
state in is chosen here: rdzv's (``rdzv-etcd-v2``, ``rdzv-etcd-v3``) or torch's
own (``etcd-v2``), all writing the same layout.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta

from torch.distributed import Store
from torch.distributed.elastic.rendezvous import RendezvousParameters
from torch.distributed.elastic.rendezvous.dynamic_rendezvous import (
    DynamicRendezvousHandler,
    RendezvousBackend,
    RendezvousTimeout,
)

from ..rendezvous_settings import RendezvousSettings

BACKENDS = ("rdzv-etcd-v2", "rdzv-etcd-v3", "etcd-v2")


@dataclass(frozen=True)
class RendezvousConfig:
    """The settings every node of one demo run shares (seconds for every duration).

    Durations may be fractions of a second: the handler is built from torch's
    ``timedelta`` settings directly rather than through ``create_handler``,
    which accepts whole seconds only.
    """

    endpoint: str
    run_id: str
    backend: str = "rdzv-etcd-v2"
    min_nodes: int = 2
    max_nodes: int = 4
    last_call_timeout: float = 2
    keep_alive_interval: float = 1
    keep_alive_max_attempt: int = 3
    join_timeout: float = 600
    close_timeout: float = 10
    heartbeat_timeout: float = 5
    read_timeout: int = 10

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise ValueError(f"Unknown demo backend {self.backend!r}; use one of {', '.join(BACKENDS)}.")
        if not self.run_id:
            raise ValueError("The run id must be a non-empty string.")
        if self.min_nodes < 1:
            raise ValueError(f"min_nodes must be at least 1 (got {self.min_nodes}).")
        if self.max_nodes < self.min_nodes:
            raise ValueError(f"max_nodes ({self.max_nodes}) must be at least min_nodes ({self.min_nodes}).")
        if self.keep_alive_max_attempt < 1:
            raise ValueError(f"keep_alive_max_attempt must be at least 1 (got {self.keep_alive_max_attempt}).")
        for name in ("last_call_timeout", "keep_alive_interval", "join_timeout", "close_timeout",
                     "heartbeat_timeout", "read_timeout"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be a positive number of seconds (got {getattr(self, name)!r}).")

    @property
    def api(self) -> str:
        """The etcd API the run's state lives in (``"v2"`` or ``"v3"``)."""
        return "v3" if self.backend.endswith("v3") else "v2"

    @property
    def settings(self) -> RendezvousSettings:
        """These settings as a viewer takes them (every one given)."""
        return RendezvousSettings.provided(
            min_nodes=self.min_nodes, max_nodes=self.max_nodes, join_timeout=self.join_timeout,
            last_call_timeout=self.last_call_timeout, close_timeout=self.close_timeout,
            keep_alive_interval=self.keep_alive_interval, keep_alive_max_attempt=self.keep_alive_max_attempt)


def create_node_handler(
    config: RendezvousConfig, local_addr: str
) -> tuple[DynamicRendezvousHandler, Callable[[], None]]:
    """A new handler (and etcd client) for one node named ``local_addr``, and a
    function that releases the client's connections once the handler is done with.

    Raises torch's ``RendezvousConnectionError`` when etcd does not answer.
    """
    backend, store = _create_backend(config)
    timeout = RendezvousTimeout(
        join=timedelta(seconds=config.join_timeout),
        last_call=timedelta(seconds=config.last_call_timeout),
        close=timedelta(seconds=config.close_timeout),
        heartbeat=timedelta(seconds=config.heartbeat_timeout),
    )
    handler = DynamicRendezvousHandler.from_backend(
        config.run_id,
        store,
        backend,
        config.min_nodes,
        config.max_nodes,
        local_addr,
        timeout,
        # Typed int, but only ever passed to timedelta(seconds=...): a float is fine.
        keep_alive_interval=config.keep_alive_interval,  # type: ignore[arg-type]
        keep_alive_max_attempt=config.keep_alive_max_attempt,
    )
    from ..backend import publish_handler_settings

    publish_handler_settings(handler, backend)
    # rdzv's backends hold a KV to close; torch's holds a python-etcd client (nothing to close).
    kv = getattr(backend, "kv", None)
    return handler, (kv.close if kv is not None else _nothing)


def _nothing() -> None:
    pass


def _create_backend(config: RendezvousConfig) -> tuple[RendezvousBackend, Store]:
    params = RendezvousParameters(
        backend=config.backend,
        endpoint=config.endpoint,
        run_id=config.run_id,
        min_nodes=config.min_nodes,
        max_nodes=config.max_nodes,
        read_timeout=config.read_timeout,
    )
    if config.backend == "etcd-v2":
        from torch.distributed.elastic.rendezvous.etcd_rendezvous_backend import create_backend as torch_backend

        return torch_backend(params)
    from ..backend import create_backend

    return create_backend(params, api=config.api)

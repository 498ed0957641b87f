"""torchrun plugins: ``--rdzv-backend=rdzv-etcd-v2`` and ``--rdzv-backend=rdzv-etcd-v3``.

torch loads them through the ``torchrun.handlers`` entry-point group; each entry
point is a factory returning the handler creator torch registers.
"""

from __future__ import annotations

from collections.abc import Callable

from torch.distributed.elastic.rendezvous.api import RendezvousHandler, RendezvousParameters

HandlerCreator = Callable[[RendezvousParameters], RendezvousHandler]


def _handler_creator(api: str) -> HandlerCreator:
    def create_rdzv_handler(params: RendezvousParameters) -> RendezvousHandler:
        from torch.distributed.elastic.rendezvous.dynamic_rendezvous import create_handler

        from .backend import create_backend, publish_handler_settings

        backend, store = create_backend(params, api=api)
        handler = create_handler(store, backend, params)
        publish_handler_settings(handler, backend)
        return handler

    create_rdzv_handler.__name__ = f"create_rdzv_etcd_{api}_handler"
    return create_rdzv_handler


def etcd_v2_handler() -> HandlerCreator:
    """Entry point ``rdzv-etcd-v2``: dynamic rendezvous on etcd's v2 API (torch's ``etcd-v2`` layout)."""
    return _handler_creator("v2")


def etcd_v3_handler() -> HandlerCreator:
    """Entry point ``rdzv-etcd-v3``: dynamic rendezvous on etcd's v3 API."""
    return _handler_creator("v3")


def register() -> None:
    """Register both backends with torch's registry directly (for processes that
    create handlers without torchrun's entry-point discovery). Idempotent."""
    from torch.distributed.elastic.rendezvous import rendezvous_handler_registry as registry

    for name, factory in (("rdzv-etcd-v2", etcd_v2_handler), ("rdzv-etcd-v3", etcd_v3_handler)):
        if not registry._registry.get(name):
            registry.register(name, factory())

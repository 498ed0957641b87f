"""Helpers to drive real torch DynamicRendezvousHandlers in threads."""

from __future__ import annotations

import base64
import pickle
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone

from torch.distributed.elastic.rendezvous import RendezvousParameters
from torch.distributed.elastic.rendezvous.dynamic_rendezvous import DynamicRendezvousHandler, create_handler


def params(endpoint: str, run_id: str, *, backend: str = "rdzv-etcd-v2", min_nodes: int = 2,
           max_nodes: int = 2, **config) -> RendezvousParameters:
    config.setdefault("last_call_timeout", 1)
    config.setdefault("join_timeout", 60)
    return RendezvousParameters(
        backend=backend, endpoint=endpoint, run_id=run_id, min_nodes=min_nodes, max_nodes=max_nodes,
        local_addr="127.0.0.1", **config,
    )


def torch_handler(p: RendezvousParameters) -> DynamicRendezvousHandler:
    """A handler on torch's own etcd-v2 backend."""
    from torch.distributed.elastic.rendezvous.etcd_rendezvous_backend import create_backend

    backend, store = create_backend(p)
    return create_handler(store, backend, p)


def rdzv_handler(p: RendezvousParameters, api: str = "v2") -> DynamicRendezvousHandler:
    """A handler on rdzv's backend."""
    from rdzv.backend import create_backend

    backend, store = create_backend(p, api=api)
    return create_handler(store, backend, p)


def rendezvous_all(handlers: list[DynamicRendezvousHandler], timeout: float = 90):
    """Call next_rendezvous() on every handler at once; return their RendezvousInfos in order."""
    with ThreadPoolExecutor(len(handlers)) as pool:
        futures = [pool.submit(h.next_rendezvous) for h in handlers]
        return [f.result(timeout=timeout) for f in futures]


def torch_state_b64(nodes: dict[tuple[str, int, int], int], round_: int = 0, complete: bool = True,
                    heartbeats: dict[tuple[str, int, int], datetime] | None = None) -> str:
    """A rendezvous state as torch writes it (pickled _RendezvousState, base64) with these
    participants ``{(addr, pid, local_id): rank}``, each heartbeat at ``heartbeats[node]`` or now."""
    from torch.distributed.elastic.rendezvous.dynamic_rendezvous import _NodeDesc, _RendezvousState

    state = _RendezvousState()
    state.round = round_
    state.complete = complete
    for (addr, pid, local_id), rank in nodes.items():
        node = _NodeDesc(addr, pid, local_id)
        state.participants[node] = rank
        state.last_heartbeats[node] = (heartbeats or {}).get((addr, pid, local_id)) or datetime.now(timezone.utc)
    return base64.b64encode(pickle.dumps(state)).decode()

"""rdzv: PyTorch elastic rendezvous on etcd, made visible.

Drop-in replacements for torch's etcd pieces (``EtcdServer``, ``EtcdStore``,
``EtcdRendezvousBackend``, ``create_backend``) on etcd's v2 and v3 APIs, a safe
decoder of rendezvous states, a shared monitor, and a live dashboard.

Names are imported lazily, so ``import rdzv.state`` (or the monitor) does not
load torch, and nothing here loads panel or bokeh until a dashboard is asked for.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "EtcdServer": "rdzv.server",
    "EtcdCluster": "rdzv.cluster",
    "EtcdTLS": "rdzv.etcd_tls",
    "EtcdStore": "rdzv.store",
    "StoreTimeoutError": "rdzv.store",
    "EtcdRendezvousBackend": "rdzv.backend",
    "create_backend": "rdzv.backend",
    "connect": "rdzv.kv",
    "Target": "rdzv.kv",
    "RendezvousSettings": "rdzv.rendezvous_settings",
    "diagnose": "rdzv.diagnosis",
    "Finding": "rdzv.diagnosis",
    "headline": "rdzv.diagnosis",
    "close_run": "rdzv.run_closing",
    "node_rows": "rdzv.nodes",
    "replay": "rdzv.monitor",
    "start_recording": "rdzv.recorder",
    "decode_state": "rdzv.state",
    "decode_state_b64": "rdzv.state",
    "UndecodableStateError": "rdzv.state",
    "RendezvousSnapshot": "rdzv.state",
    "Node": "rdzv.state",
    "diff_states": "rdzv.diff",
    "Change": "rdzv.diff",
    "ChangeKind": "rdzv.diff",
    "Monitor": "rdzv.monitor",
    "get_monitor": "rdzv.monitor",
    "dashboard": "rdzv.ui",
    "DemoCluster": "rdzv.demo",
}

_SUBMODULES = {"notebook", "demo", "kv", "monitor", "state", "diff", "store", "backend", "server", "ui", "diagnosis",
               "options", "recording", "metrics", "report", "nodes"}

__all__ = ["__version__", "notebook", *_EXPORTS]


def __getattr__(name: str) -> Any:
    if name in _SUBMODULES:
        return importlib.import_module(f"rdzv.{name}")
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'rdzv' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)

"""A demo of elastic rendezvous on etcd, in two modes.

* :class:`DemoCluster`: simulated nodes, each a thread with a real torch
  ``DynamicRendezvousHandler`` -- cheap, instant, scriptable (add, leave, crash).
* :class:`TorchrunCluster`: real ``torchrun`` agents training a tiny model on CPU
  (gloo), which re-rendezvous and resume when one of them is killed.

Both are cleaned up by ``close()``, by ``with``, and at interpreter exit.
"""

from __future__ import annotations

from .autopilot import autopilot
from .cluster import DemoCluster
from .handlers import BACKENDS
from .node import NodeView, SimNode
from .torchrun import AgentView, ProgressRecord, TorchrunCluster

__all__ = [
    "BACKENDS",
    "AgentView",
    "DemoCluster",
    "NodeView",
    "ProgressRecord",
    "SimNode",
    "TorchrunCluster",
    "autopilot",
]

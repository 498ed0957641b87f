"""autopilot: keep a demo cluster busy -- nodes arrive, leave and crash -- for a live dashboard."""

from __future__ import annotations

import logging
import random
import threading

from .cluster import DemoCluster

logger = logging.getLogger(__name__)

_WEIGHTS = {"add": 0.45, "leave": 0.30, "crash": 0.25}


def autopilot(
    cluster: DemoCluster, stop: threading.Event, *, period: float = 4.0, seed: int | None = None
) -> threading.Thread:
    """Start (and return) a thread that, about every ``period`` seconds, adds a node,
    takes one out gracefully, or crashes one, keeping the number of live nodes between
    the cluster's ``min_nodes`` and ``max_nodes``.

    It ends when ``stop`` is set or the cluster is closed. ``seed`` makes the choices
    repeatable. The thread is a daemon so that a forgotten autopilot cannot hold the
    interpreter open; set ``stop`` and join it to end it cleanly.
    """
    if period <= 0:
        raise ValueError(f"The autopilot period must be a positive number of seconds (got {period!r}).")
    chooser = random.Random(seed)
    thread = threading.Thread(
        target=_fly, args=(cluster, stop, period, chooser), name="rdzv-demo-autopilot", daemon=True
    )
    thread.start()
    return thread


def _fly(cluster: DemoCluster, stop: threading.Event, period: float, chooser: random.Random) -> None:
    while not stop.wait(period * chooser.uniform(0.75, 1.25)):
        if cluster.closed:
            return
        try:
            _step(cluster, chooser)
        except Exception as exc:  # one failed step is logged; the demo goes on
            if cluster.closed:
                return
            logger.warning("The demo autopilot skipped a step: %s", exc)


def _step(cluster: DemoCluster, chooser: random.Random) -> None:
    live = cluster.nodes
    low, high = cluster.config.min_nodes, cluster.config.max_nodes
    if len(live) < low:
        cluster.add_node()
        return
    choices = dict(_WEIGHTS)
    if len(live) >= high:
        del choices["add"]
    if len(live) <= low:
        del choices["leave"], choices["crash"]
    if not choices:  # min_nodes == max_nodes and the cluster is full: nothing to do
        return
    action = chooser.choices(list(choices), weights=list(choices.values()))[0]
    if action == "add":
        cluster.add_node()
    elif action == "leave":
        cluster.leave(chooser.choice(live))
    else:
        cluster.crash(chooser.choice(live))

"""Dynamic rendezvous completion time when the nodes are spread over processes.

The in-process section (``rendezvous``) runs every node in one interpreter, where the
nodes share one lock and rdzv's write turns (``rdzv.write_turns``) order the retries of
all of them. Here 64 nodes run as 8 processes of 8 threads (quick: 2 of 4), closer to a
real job, where a turn only orders the nodes of one process. Every process builds its
handlers, waits at a barrier, and reports when its first node started and its last one
returned; the time is from the earliest start to the latest return (one clock: Linux's
monotonic clock is shared by all processes). Process start-up is not timed.
"""

from __future__ import annotations

import multiprocessing
import os
import threading
import time
from typing import Any

from .common import Bench, free_port, reason_of, section, unique
from .rendezvous import pair_row

TITLE = "dynamic rendezvous across processes"
BACKENDS = ("rdzv-etcd-v2", "rdzv-etcd-v3", "torch-etcd-v2", "torch-c10d")
PAIRS = (("rdzv-etcd-v3", "torch-etcd-v2"), ("rdzv-etcd-v3", "torch-c10d"), ("rdzv-etcd-v2", "torch-etcd-v2"))
RESULT_TIMEOUT_S = 240


def node_process(name: str, endpoint: str, run_id: str, processes: int, threads: int, index: int, c10d_port: int,
                 started: Any, finished: Any, results: Any) -> None:
    """One process of ``threads`` nodes; puts ``(first start, last return, sets, lost, error)`` on ``results``."""
    os.environ["TORCH_DISABLE_SHARE_RDZV_TCP_STORE"] = "1"
    from torch.distributed.elastic.rendezvous import RendezvousParameters
    from torch.distributed.elastic.rendezvous.dynamic_rendezvous import create_handler

    from .rendezvous import Tally, _config, backend_factories, counting_backend

    nodes = processes * threads
    params = RendezvousParameters(backend=name, endpoint=endpoint, run_id=run_id, min_nodes=nodes, max_nodes=nodes,
                                  local_addr="127.0.0.1", **_config())
    tally = Tally()
    made = [backend_factories(endpoint)[name](params, index * threads + t, c10d_port) for t in range(threads)]
    handlers = [create_handler(store, counting_backend(backend, tally), params) for backend, store in made]
    returned: list[float] = []
    errors: list[str] = []

    def node(handler: Any) -> None:
        try:
            handler.next_rendezvous()
            returned.append(time.monotonic())
        except Exception as error:
            errors.append(reason_of(error))

    workers = [threading.Thread(target=node, args=(handler,), daemon=True) for handler in handlers]
    started.wait(RESULT_TIMEOUT_S)
    began = time.monotonic()
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(RESULT_TIMEOUT_S)
    error = errors[0] if errors else (None if len(returned) == threads else "a node did not return")
    results.put((began, max(returned, default=began), tally.sets, tally.lost, error))
    try:
        finished.wait(RESULT_TIMEOUT_S)  # node 0 of c10d hosts the store: stay until every process is done
    finally:
        for handler in handlers:
            handler._stop_heartbeats()  # torch's private API; shutdown() would rewrite the state again


def rendezvous_once(name: str, endpoint: str, processes: int, threads: int) -> dict:
    """One rendezvous of ``processes`` × ``threads`` nodes on backend ``name``; its time and counts."""
    context = multiprocessing.get_context("spawn")
    started, finished, results = context.Barrier(processes), context.Barrier(processes), context.Queue()
    run_id, port = unique("bench-procs"), free_port()
    children = [context.Process(target=node_process, daemon=True,
                                args=(name, endpoint, run_id, processes, threads, index, port, started, finished,
                                      results))
                for index in range(processes)]
    for child in children:
        child.start()
    try:
        reports = [results.get(timeout=RESULT_TIMEOUT_S) for _ in children]
        for child in children:
            child.join(30)
    finally:
        for child in children:
            if child.is_alive():
                child.kill()
                child.join()
    errors = [error for *_, error in reports if error]
    if errors:
        raise RuntimeError(f"{name}: {errors[0]}")
    return {
        "seconds": max(last for _, last, *_ in reports) - min(first for first, *_ in reports),
        "set_state_calls": sum(sets for _, _, sets, _, _ in reports),
        "lost_cas": sum(lost for _, _, _, lost, _ in reports),
    }


def run(bench: Bench) -> dict:
    bench.require_server()
    processes, threads = (2, 4) if bench.quick else (8, 8)
    repetitions = 1 if bench.quick else 3
    runs: dict[str, list[dict]] = {name: [] for name in BACKENDS}
    failures: dict[str, str] = {}
    for repetition in range(repetitions):
        shift = repetition % len(BACKENDS)
        for name in BACKENDS[shift:] + BACKENDS[:shift]:
            if name in failures:
                continue
            try:
                result = rendezvous_once(name, bench.endpoint, processes, threads)
            except Exception as error:
                failures[name] = reason_of(error)
                bench.log(f"  {name} failed: {failures[name]}")
                continue
            runs[name].append(result)
            bench.log(f"  {name:<14} {processes}×{threads}: {result['seconds']:.2f} s "
                      f"({result['set_state_calls']} sets, {result['lost_cas']} lost)")
    label = f"{processes}×{threads}"
    rows = [pair_row(f"rendezvous {label} processes×nodes: {ours} vs {theirs}", [r["seconds"] for r in runs[ours]],
                     [r["seconds"] for r in runs[theirs]], failures, (ours, theirs))
            for ours, theirs in PAIRS]
    return section(TITLE, rows, {"processes": processes, "threads": threads, "repetitions": repetitions,
                                 "runs": runs, "unavailable": failures})

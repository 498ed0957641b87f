"""Dynamic rendezvous completion time when the nodes are spread over processes.

The in-process section (``rendezvous``) runs every node in one interpreter, where the
nodes share one lock and rdzv's write turns (``rdzv.write_turns``) order the retries of
all of them. Here the nodes run as processes of several threads each, closer to a real job,
where a turn only orders the nodes of one process: 64 nodes as 8 processes of 8 threads, and
256 nodes as 16 processes of 16 threads (``--quick``: 2 of 4 only). Every process builds its
handlers, waits at a barrier, and reports when its first node started and its last one
returned; the time is from the earliest start to the latest return (one clock: Linux's
monotonic clock is shared by all processes). Process start-up is not timed.

A size that does not complete within the handlers' join timeout (``rendezvous.JOIN_TIMEOUT_S``)
is reported as far as it got: how many nodes returned, how many the state held as
participants (etcd backends), the compare-and-swaps made and lost, and the CPU the node
processes and etcd used over the attempt (on 2 cores, two cores' worth means CPU-bound).
"""

from __future__ import annotations

import multiprocessing
import os
import resource
import threading
import time
from typing import Any

from .common import Bench, cpu_seconds_of, free_port, reason_of, section, unique
from .rendezvous import JOIN_TIMEOUT_S, pair_row

TITLE = "dynamic rendezvous across processes"
BACKENDS = ("rdzv-etcd-v2", "rdzv-etcd-v3", "torch-etcd-v2", "torch-c10d")
PAIRS = (("rdzv-etcd-v3", "torch-etcd-v2"), ("rdzv-etcd-v3", "torch-c10d"), ("rdzv-etcd-v2", "torch-etcd-v2"))
RESULT_TIMEOUT_S = JOIN_TIMEOUT_S + 60


def node_process(name: str, endpoint: str, run_id: str, processes: int, threads: int, index: int, c10d_port: int,
                 started: Any, finished: Any, results: Any) -> None:
    """One process of ``threads`` nodes; puts ``(first start, last return, sets, lost, error, nodes returned)``
    on ``results``."""
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
    results.put((began, max(returned, default=began), tally.sets, tally.lost, error, len(returned)))
    try:
        finished.wait(RESULT_TIMEOUT_S)  # node 0 of c10d hosts the store: stay until every process is done
    finally:
        for handler in handlers:
            handler._stop_heartbeats()  # torch's private API; shutdown() would rewrite the state again


def rendezvous_once(name: str, endpoint: str, processes: int, threads: int, etcd_pid: int | None = None) -> dict:
    """One rendezvous of ``processes`` × ``threads`` nodes on backend ``name``: its time and counts,
    or, with ``error`` set, how far it got."""
    context = multiprocessing.get_context("spawn")
    started, finished, results = context.Barrier(processes), context.Barrier(processes), context.Queue()
    run_id, port = unique("bench-procs"), free_port()
    children = [context.Process(target=node_process, daemon=True,
                                args=(name, endpoint, run_id, processes, threads, index, port, started, finished,
                                      results))
                for index in range(processes)]
    children_cpu = _children_cpu()
    etcd_cpu = cpu_seconds_of(etcd_pid)
    began = time.monotonic()
    for child in children:
        child.start()
    reports, lost_reports = [], None
    watcher = StateWatcher(name, endpoint, run_id)
    try:
        for _ in children:
            reports.append(results.get(timeout=RESULT_TIMEOUT_S + 120))
        for child in children:
            child.join(30)
    except Exception as error:  # a process never reported (the queue timed out)
        lost_reports = reason_of(error)
    finally:
        watcher.stop()
        for child in children:
            if child.is_alive():
                child.kill()
                child.join()
    wall = time.monotonic() - began
    etcd_after = cpu_seconds_of(etcd_pid)
    result = {
        "seconds": max(r[1] for r in reports) - min(r[0] for r in reports) if reports else None,
        "set_state_calls": sum(r[2] for r in reports),
        "lost_cas": sum(r[3] for r in reports),
        "returned": sum(r[5] for r in reports),
        "nodes": processes * threads,
        # every node process, from spawn to exit (start-up included), and etcd, over the attempt
        "node_processes_cpu_s": _children_cpu() - children_cpu,
        "etcd_cpu_s": None if etcd_cpu is None or etcd_after is None else etcd_after - etcd_cpu,
        "wall_s": wall,
    }
    errors = [r[4] for r in reports if r[4]] + ([lost_reports] if lost_reports else [])
    if errors:
        result.update(error=errors[0], seconds=None, **watcher.summary())
    return result


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


class StateWatcher:
    """Reads the run's state from etcd twice a second while a rendezvous runs (etcd backends; c10d's
    state lives in its TCPStore), to tell how far a rendezvous that did not complete got: the most
    participants the round ever held, and the participant count over time."""

    def __init__(self, name: str, endpoint: str, run_id: str) -> None:
        self.samples: list[tuple[float, int, int]] = []  # (seconds in, participants, waiting)
        self._stop = threading.Event()
        self._thread = None
        if name != "torch-c10d":
            self._key = f"/torch/elastic/rendezvous/{run_id}"
            self._api = "v3" if name == "rdzv-etcd-v3" else "v2"
            self._endpoint = endpoint
            self._thread = threading.Thread(target=self._run, daemon=True, name="bench-state-watcher")
            self._thread.start()

    def _run(self) -> None:
        from rdzv.kv import connect
        from rdzv.state import decode_state_b64

        began = time.monotonic()
        with connect(self._endpoint, self._api) as kv:
            while not self._stop.wait(0.5):
                try:
                    current = kv.get(self._key)
                    if current is not None:
                        state = decode_state_b64(current.value)
                        self.samples.append((time.monotonic() - began, len(state.participants), len(state.wait_list)))
                except Exception:
                    continue

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)

    def summary(self) -> dict[str, Any]:
        if self._thread is None:
            return {"most_participants": None, "participants_over_time": None}
        most = max(self.samples, key=lambda sample: sample[1], default=None)
        return {"most_participants": most[1] if most else 0, "most_participants_at_s": most[0] if most else None,
                "participants_over_time": self.samples[::4]}


def run(bench: Bench) -> dict:
    server = bench.require_server()
    shapes = [(2, 4, 1)] if bench.quick else [(8, 8, 3), (16, 16, 1)]  # (processes, threads, repetitions)
    rows: list[dict] = []
    data: dict[str, Any] = {"shapes": {}, "join_timeout_s": JOIN_TIMEOUT_S}
    for processes, threads, repetitions in shapes:
        label = f"{processes}×{threads}"
        bench.log(f"  {label} ({processes * threads} nodes), {repetitions} repetition(s) per backend; an attempt "
                  f"that cannot complete takes the join timeout, {JOIN_TIMEOUT_S} s")
        runs: dict[str, list[dict]] = {name: [] for name in BACKENDS}
        failures: dict[str, str] = {}
        partial: dict[str, dict] = {}
        for repetition in range(repetitions):
            shift = repetition % len(BACKENDS)
            for name in BACKENDS[shift:] + BACKENDS[:shift]:
                if name in failures:
                    continue
                try:
                    result = rendezvous_once(name, bench.endpoint, processes, threads, getattr(server, "pid", None))
                except Exception as error:
                    failures[name] = reason_of(error)
                    bench.log(f"  {name} {label} failed: {failures[name]}")
                    continue
                cores = (result["node_processes_cpu_s"] + (result["etcd_cpu_s"] or 0)) / result["wall_s"]
                if "error" in result:
                    partial[name] = result
                    most, at = result["most_participants"], result.get("most_participants_at_s")
                    failures[name] = (f"{result['returned']} of {result['nodes']} nodes returned; the round held "
                                      + ("? (c10d's state is not in etcd)" if most is None else
                                         f"at most {most} participants" + (f" ({at:.0f} s in)" if at else ""))
                                      + f" before {result['error']}; {result['set_state_calls']:,} writes, "
                                      f"{result['lost_cas']:,} lost; node processes and etcd used {cores:.2f} "
                                      f"cores over {result['wall_s']:.0f} s")
                    bench.log(f"  {name} {label} did not complete: {failures[name]}")
                    continue
                runs[name].append(result)
                bench.log(f"  {name:<14} {label}: {result['seconds']:.2f} s ({result['set_state_calls']} sets, "
                          f"{result['lost_cas']} lost; {cores:.2f} cores over the attempt incl. start-up)")
        rows.extend(pair_row(f"rendezvous {label} processes×nodes: {ours} vs {theirs}",
                             [r["seconds"] for r in runs[ours]], [r["seconds"] for r in runs[theirs]], failures,
                             (ours, theirs))
                    for ours, theirs in PAIRS)
        data["shapes"][label] = {"processes": processes, "threads": threads, "repetitions": repetitions,
                                 "runs": runs, "unavailable": failures, "partial": partial}
    # the first shape's figures where earlier runs kept them
    first = data["shapes"][f"{shapes[0][0]}×{shapes[0][1]}"]
    data.update({"processes": first["processes"], "threads": first["threads"], "runs": first["runs"],
                 "unavailable": first["unavailable"]})
    return section(TITLE, rows, data)

"""Dynamic rendezvous completion time for N in-process nodes, per backend.

Each node is a thread running a real torch ``DynamicRendezvousHandler`` (min_nodes =
max_nodes = N, so the round completes as soon as every node joined). The clock runs from
releasing all threads into ``next_rendezvous()`` to the last one returning. Backends:
rdzv-etcd-v2 and rdzv-etcd-v3 (rdzv.backend), torch's etcd-v2, torch's c10d (a TCPStore
hosted by node 0), and rdzv-etcd-v3 with its write turns switched off
(``rdzv.write_turns``: losers of a compare-and-swap in one process retry one at a
time), to show what those are worth. Handler construction is not timed.

To explain the numbers rather than guess, each backend is wrapped in a counter of its
``get_state``/``set_state`` calls, lost compare-and-swaps and time spent inside it, and
torch's ``_delay`` is wrapped to count the handler's 1-second SYNC sleeps (both wrappers
only count; they call through unchanged). The run splits into the join phase (until
the write that completed the round, spotted by the counting wrapper) and what follows
(until the last node returns: the others learn of completion only on their next poll,
after a 1 s SYNC sleep, then read the bootstrap keys rank 0 wrote to the store).
Also recorded: etcd requests served (etcd's /metrics), CPU seconds of this process (all
node threads share one interpreter) and of the etcd server, so one can see whether a run
was bound by etcd, by requests, or by Python work in the handlers.
"""

from __future__ import annotations

import gc
import importlib
import pickle
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from .common import (Bench, cpu_seconds_of, environment, etcd_requests, free_port, median, paired_ratio, reason_of,
                     row, section, unique)

TITLE = "dynamic rendezvous completion time"
# (ours, theirs, target speed-up at the largest N, target text)
PAIRS = (
    ("rdzv-etcd-v2", "torch-etcd-v2", None, None),
    ("rdzv-etcd-v3", "torch-etcd-v2", 1.8, "≥ 1.8× faster"),
    ("rdzv-etcd-v3", "torch-c10d", 1.0, "≥ c10d"),
    ("rdzv-etcd-v2", "torch-c10d", None, None),
)
TARGET_NODES = 64
# rdzv-etcd-v3 with rdzv.write_turns switched off: shows what the turns are worth (breakdown table only).
NO_TURNS = "rdzv-etcd-v3-no-turns"
JOIN_TIMEOUT_S = 180
# The per-run figures shown in the breakdown table (medians); the JSON keeps every figure of every run.
BREAKDOWN = ("seconds", "round_complete_s", "then_all_returned_s", "set_state_calls", "lost_cas",
             "median_set_state_ms", "etcd_requests", "python_cpu_s", "python_cpu_ms_per_set", "etcd_cpu_s",
             "sync_sleeps")


class Tally:
    """What one rendezvous cost: backend calls, lost compare-and-swaps, time inside the backend, sleeps."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.gets = 0
        self.sets = 0
        self.lost = 0
        self.set_seconds: list[float] = []
        self.backend_seconds = 0.0
        self.sync_sleeps = 0
        self.completed_at: float | None = None

    def record(self, kind: str, seconds: float, lost: bool = False) -> None:
        with self.lock:
            self.backend_seconds += seconds
            if kind == "get":
                self.gets += 1
            else:
                self.sets += 1
                self.lost += lost
                self.set_seconds.append(seconds)


def counting_backend(inner: Any, tally: Tally) -> Any:
    """``inner`` (a torch RendezvousBackend) behind a wrapper that counts and times its calls."""
    from torch.distributed.elastic.rendezvous.dynamic_rendezvous import RendezvousBackend

    class Counting(RendezvousBackend):
        @property
        def name(self) -> str:
            return inner.name

        def get_state(self):
            began = time.perf_counter()
            result = inner.get_state()
            tally.record("get", time.perf_counter() - began)
            return result

        def set_state(self, state, token=None):
            began = time.perf_counter()
            result = inner.set_state(state, token)
            finished = time.perf_counter()
            tally.record("set", finished - began, lost=result is not None and not result[2])
            if tally.completed_at is None and result is not None and result[2] and _completes(state):
                tally.completed_at = finished
            return result

    return Counting()


def _completes(state: bytes) -> bool:
    """Whether a state this process's handler just wrote marks the round complete."""
    return bool(getattr(pickle.loads(state), "complete", False))  # our own handlers' bytes, not foreign input


@contextmanager
def counting_sync_sleeps(tally_of: Callable[[], Tally | None]) -> Iterator[None]:
    """Count the handler's 1 s SYNC sleeps (torch's ``_delay(seconds=1)``) into the current tally."""
    from torch.distributed.elastic.rendezvous import dynamic_rendezvous

    original = dynamic_rendezvous._delay

    def delay(seconds):
        tally = tally_of()
        if tally is not None and seconds == 1:
            with tally.lock:
                tally.sync_sleeps += 1
        original(seconds=seconds)

    dynamic_rendezvous._delay = delay
    try:
        yield
    finally:
        dynamic_rendezvous._delay = original


def backend_factories(endpoint: str) -> dict[str, Callable[[Any, int, int], tuple[Any, Any]]]:
    """``name -> make(params, node_index, c10d_port) -> (backend, store)``."""
    from torch.distributed.elastic.rendezvous import c10d_rendezvous_backend, etcd_rendezvous_backend

    from rdzv.backend import RENDEZVOUS_PREFIX, EtcdRendezvousBackend, create_backend

    def c10d(params: Any, index: int, port: int):
        from torch.distributed.elastic.rendezvous import RendezvousParameters

        c10d_params = RendezvousParameters(
            backend="c10d", endpoint=f"127.0.0.1:{port}", run_id=params.run_id, min_nodes=params.min_nodes,
            max_nodes=params.max_nodes, local_addr=params.local_addr, is_host=index == 0, **_config(),
        )
        return c10d_rendezvous_backend.create_backend(c10d_params)

    def without_turns(params: Any, index: int, port: int):
        backend, store = create_backend(params, api="v3")
        return EtcdRendezvousBackend(backend.kv, params.run_id, key_prefix=RENDEZVOUS_PREFIX, write_turns=None), store

    return {
        "rdzv-etcd-v2": lambda params, index, port: create_backend(params, api="v2"),
        "rdzv-etcd-v3": lambda params, index, port: create_backend(params, api="v3"),
        NO_TURNS: without_turns,
        "torch-etcd-v2": lambda params, index, port: etcd_rendezvous_backend.create_backend(params),
        "torch-c10d": c10d,
    }


def _config() -> dict[str, Any]:
    return {"last_call_timeout": 1, "join_timeout": JOIN_TIMEOUT_S, "read_timeout": 60}


def rendezvous_once(name: str, make: Callable, nodes: int, endpoint: str, current: list[Tally | None],
                    etcd_pid: int | None = None) -> dict:
    """One complete rendezvous of ``nodes`` threads on backend ``name``; its timings and counts.

    CPU seconds are this process's (every node thread) and, given its pid, the etcd server's.
    """
    from torch.distributed.elastic.rendezvous import RendezvousParameters
    from torch.distributed.elastic.rendezvous.dynamic_rendezvous import create_handler

    tally = Tally()
    params = RendezvousParameters(backend=name, endpoint=endpoint, run_id=unique("bench-rdzv"), min_nodes=nodes,
                                  max_nodes=nodes, local_addr="127.0.0.1", **_config())
    port = free_port()
    made: list[tuple[Any, Any]] = []
    handlers = []
    setup_began = time.perf_counter()
    for index in range(nodes):
        backend, store = make(params, index, port)
        made.append((backend, store))
        handlers.append(create_handler(store, counting_backend(backend, tally), params))
    setup_s = time.perf_counter() - setup_began

    gate = threading.Barrier(nodes + 1)
    finished = [0.0] * nodes
    ranks: list[tuple[int, int] | None] = [None] * nodes
    errors: list[BaseException] = []

    def node(index: int) -> None:
        gate.wait()
        try:
            info = handlers[index].next_rendezvous()
            finished[index] = time.perf_counter()
            ranks[index] = (info.rank, info.world_size)
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=node, args=(i,), daemon=True, name=f"bench-node-{i}") for i in range(nodes)]
    for thread in threads:
        thread.start()
    current[0] = tally
    requests_before = etcd_requests(endpoint)
    etcd_cpu_before = cpu_seconds_of(etcd_pid)
    try:
        gate.wait()
        began = time.perf_counter()
        python_cpu_before = time.process_time()
        for thread in threads:
            thread.join(timeout=JOIN_TIMEOUT_S + 30)
        python_cpu_s = time.process_time() - python_cpu_before
        etcd_cpu_after = cpu_seconds_of(etcd_pid)
        requests = etcd_requests(endpoint) - requests_before
    finally:
        current[0] = None
        for handler in handlers:
            handler._stop_heartbeats()  # torch's private API; shutdown() would rewrite the state N more times
        for backend, _ in made:
            kv = getattr(backend, "kv", None)
            if kv is not None:
                kv.close()
        handlers.clear()
        made.clear()
        gc.collect()  # releases the c10d TCPStore server and clients
    if errors:
        raise errors[0]
    if any(thread.is_alive() for thread in threads):
        raise TimeoutError(f"{name}: the rendezvous of {nodes} nodes did not finish within {JOIN_TIMEOUT_S + 30} s")
    if sorted(r for r, _ in ranks) != list(range(nodes)) or {w for _, w in ranks} != {nodes}:
        raise RuntimeError(f"{name}: the rendezvous handed out wrong ranks or world sizes: {ranks}")
    return {
        "seconds": max(finished) - began,
        "round_complete_s": None if tally.completed_at is None else tally.completed_at - began,
        "then_all_returned_s": None if tally.completed_at is None else max(finished) - tally.completed_at,
        "setup_s": setup_s,
        "python_cpu_s": python_cpu_s,
        "python_cpu_ms_per_set": python_cpu_s * 1000 / tally.sets if tally.sets else None,
        "etcd_cpu_s": None if etcd_cpu_before is None or etcd_cpu_after is None else etcd_cpu_after - etcd_cpu_before,
        "etcd_requests": requests,
        "get_state_calls": tally.gets,
        "set_state_calls": tally.sets,
        "lost_cas": tally.lost,
        "median_set_state_ms": median(tally.set_seconds) * 1000 if tally.set_seconds else None,
        "backend_thread_s": tally.backend_seconds,
        "sync_sleeps": tally.sync_sleeps,
    }


def run(bench: Bench) -> dict:
    server = bench.require_server()
    sizes = [8] if bench.quick else [8, 32, TARGET_NODES]
    repetitions = 1 if bench.quick else 5
    factories = backend_factories(bench.endpoint)
    missing: dict[str, str] = {}
    try:
        importlib.import_module("rdzv.kv.v3")  # the v3 KV: absent in some checkouts
        kv = server.kv("v3")
        kv.ping()
        kv.close()
    except Exception as error:
        for name in ("rdzv-etcd-v3", NO_TURNS):
            missing[name] = reason_of(error)
            factories.pop(name)
    names = list(factories)
    runs: dict[str, dict[int, list[dict]]] = {name: {n: [] for n in sizes} for name in names}
    failures: dict[str, str] = {}
    current: list[Tally | None] = [None]
    with environment(TORCH_DISABLE_SHARE_RDZV_TCP_STORE="1"), counting_sync_sleeps(lambda: current[0]):
        for repetition in range(repetitions):
            for nodes in sizes:
                shift = repetition % len(names)
                for name in names[shift:] + names[:shift]:
                    if name in failures:
                        continue
                    try:
                        result = rendezvous_once(name, factories[name], nodes, bench.endpoint, current,
                                                 getattr(server, "pid", None))
                    except Exception as error:
                        failures[name] = f"N={nodes}: {reason_of(error)}"
                        bench.log(f"  {name} N={nodes} failed: {failures[name]}")
                        continue
                    runs[name][nodes].append(result)
                    bench.log(f"  {name:<14} N={nodes:<3} {result['seconds']:.2f} s "
                              f"(complete at {result['round_complete_s']:.2f} s, {result['set_state_calls']} sets, "
                              f"{result['lost_cas']} lost, {result['sync_sleeps']} sync sleeps)")
    missing.update(failures)
    return section(TITLE, _rows(runs, sizes, missing), _data(runs, sizes, repetitions, missing))


def _seconds(runs: dict, name: str, nodes: int) -> list[float]:
    return [r["seconds"] for r in runs.get(name, {}).get(nodes, [])]


def pair_row(metric: str, mine: list[float], other: list[float], missing: dict[str, str], names: tuple[str, str],
             target: str | None = None, speedup: float | None = None) -> dict:
    """One table row comparing two backends' times (``mine`` against ``other``), or why it could not be made."""
    if not mine or not other:
        reason = "; ".join(f"{n}: {missing[n]}" for n in names if n in missing) or "not measured"
        return {**row(metric, "s", median(mine) if mine else None, median(other) if other else None, target=target),
                "status": "unavailable", "reason": reason}
    ratio = paired_ratio(other, mine)
    return row(metric, "s", median(mine), median(other), ratio=ratio, target=target,
               met=(ratio is not None and ratio >= speedup) if target else None)


def _rows(runs: dict, sizes: list[int], missing: dict[str, str]) -> list[dict]:
    rows = []
    for nodes in sizes:
        for ours, theirs, speedup, target_text in PAIRS:
            target = target_text if nodes == TARGET_NODES else None
            rows.append(pair_row(f"rendezvous N={nodes}: {ours} vs {theirs}", _seconds(runs, ours, nodes),
                                 _seconds(runs, theirs, nodes), missing, (ours, theirs), target, speedup))
    return rows


def _data(runs: dict, sizes: list[int], repetitions: int, missing: dict[str, str]) -> dict:
    breakdown = []
    for name, by_size in runs.items():
        for nodes in sizes:
            results = by_size[nodes]
            if not results:
                continue
            entry = {"backend": name, "nodes": nodes}
            for field in BREAKDOWN:
                values = [r[field] for r in results if r[field] is not None]
                entry[field] = median(values) if values else None
            breakdown.append(entry)
    return {
        "sizes": sizes,
        "repetitions": repetitions,
        "median_s": {name: {str(n): median(_seconds(runs, name, n)) for n in sizes if _seconds(runs, name, n)}
                     for name in runs},
        "breakdown": breakdown,
        "runs": {name: {str(n): results for n, results in by_size.items()} for name, by_size in runs.items()},
        "unavailable": missing,
    }

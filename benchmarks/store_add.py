"""``add`` under contention: 8 threads each adding 1 to one key N times.

rdzv.store.EtcdStore (v2, v3) against torch's EtcdStore. Each thread has its own store
and client, as separate processes would. Reported: wall time, adds per second, and
whether the count is exact (the final value is 8·N and the returned values are exactly
1..8·N, each once).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from .common import Bench, etcd_requests, interleave, median, missing_row, paired_ratio, reason_of, row, section, unique

TITLE = "store add under contention"
THREADS = 8


def contender(make_store: Callable[[], Any], adds_per_thread: int, exact: list[bool], requests: list[int],
              cpu: list[float], endpoint: str) -> Callable[[], float]:
    """A measurement: a fresh key, ``THREADS`` threads adding to it at once; returns wall seconds.

    Appends whether the count was exact to ``exact``, the etcd requests it took to ``requests``
    and the CPU seconds this process spent to ``cpu``.
    """

    def once() -> float:
        key = unique("counter")
        stores = [make_store() for _ in range(THREADS)]
        returned: list[list[int]] = [[] for _ in range(THREADS)]
        errors: list[BaseException] = []
        gate = threading.Barrier(THREADS + 1)
        finished = threading.Barrier(THREADS + 1)

        def work(index: int) -> None:
            gate.wait()
            try:
                for _ in range(adds_per_thread):
                    returned[index].append(int(stores[index].add(key, 1)))
            except BaseException as error:  # reported below, never swallowed
                errors.append(error)
            finished.wait()

        threads = [threading.Thread(target=work, args=(i,), daemon=True) for i in range(THREADS)]
        for thread in threads:
            thread.start()
        requests_before = etcd_requests(endpoint)
        gate.wait()
        began, cpu_began = time.perf_counter(), time.process_time()
        finished.wait()
        wall = time.perf_counter() - began
        cpu.append(time.process_time() - cpu_began)
        requests.append(etcd_requests(endpoint) - requests_before)
        for thread in threads:
            thread.join()
        if errors:
            raise errors[0]
        total = THREADS * adds_per_thread
        values = sorted(v for per_thread in returned for v in per_thread)
        exact.append(values == list(range(1, total + 1)) and int(stores[0].get(key)) == total)
        for store in stores:
            close = getattr(getattr(store, "kv", None), "close", None)
            if close:
                close()
        return wall

    return once


def run(bench: Bench) -> dict:
    from torch.distributed.elastic.rendezvous.etcd_store import EtcdStore as TorchEtcdStore

    from rdzv.store import EtcdStore

    server = bench.require_server()
    adds = 25 if bench.quick else 100
    repetitions = 1 if bench.quick else 3
    prefix = "/" + unique("bench-add") + "/store"
    exact: dict[str, list[bool]] = {"rdzv-v2": [], "rdzv-v3": [], "torch": []}
    requests: dict[str, list[int]] = {"rdzv-v2": [], "rdzv-v3": [], "torch": []}
    cpu: dict[str, list[float]] = {"rdzv-v2": [], "rdzv-v3": [], "torch": []}

    def measure(name: str, make_store: Callable[[], Any]) -> Callable[[], float]:
        return contender(make_store, adds, exact[name], requests[name], cpu[name], bench.endpoint)

    contenders = {
        "rdzv-v2": measure("rdzv-v2", lambda: EtcdStore(server.kv("v2"), prefix)),
        "torch": measure("torch", lambda: TorchEtcdStore(server.get_client(), prefix)),
    }
    missing: dict[str, str] = {}
    try:
        server.kv("v3").ping()
        contenders["rdzv-v3"] = measure("rdzv-v3", lambda: EtcdStore(server.kv("v3"), prefix))
    except Exception as error:
        missing["rdzv-v3"] = reason_of(error)
    bench.log(f"  {THREADS} threads × {adds} adds, {repetitions} repetition(s)")
    samples = interleave(contenders, repetitions)
    total = THREADS * adds
    rows = []
    for name in ("rdzv-v2", "rdzv-v3"):
        metric = f"store add, {THREADS}×{adds} on one key ({name[5:]})"
        target = "≥ torch and exact"
        if name not in samples:
            rows.append(missing_row(metric, missing[name], target))
            continue
        ratio = paired_ratio(samples["torch"], samples[name])
        is_exact = all(exact[name])
        rows.append(row(metric, "ms", median(samples[name]) * 1000, median(samples["torch"]) * 1000, ratio=ratio,
                        target=target, met=ratio is not None and ratio >= 1 and is_exact,
                        note=f"{total / median(samples[name]):.0f} vs {total / median(samples['torch']):.0f} adds/s; "
                             f"exact: {str(is_exact).lower()} vs {str(all(exact['torch'])).lower()}; etcd requests "
                             f"per add: {median(requests[name]) / total:.1f} vs {median(requests['torch']) / total:.1f}"))
    data = {
        "threads": THREADS,
        "adds_per_thread": adds,
        "repetitions": repetitions,
        "wall_s": samples,
        "ops_per_s": {name: total / median(s) for name, s in samples.items()},
        "exact": {name: all(flags) for name, flags in exact.items() if flags},
        "etcd_requests_per_add": {name: median(counts) / total for name, counts in requests.items() if counts},
        "python_cpu_ms_per_add": {name: median(seconds) * 1000 / total for name, seconds in cpu.items() if seconds},
        "unavailable": missing,
    }
    return section(TITLE, rows, data)

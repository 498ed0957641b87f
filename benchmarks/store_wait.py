"""``wait`` wake-up latency: how long after another thread's ``set`` a waiting ``wait`` returns.

rdzv.store.EtcdStore (v2, v3) against torch's EtcdStore. The waiter starts on a missing
key; 100 ms later the setter (its own store and client) notes the time and sets the key;
the waiter notes when ``wait`` returned. The latency includes the ``set`` request itself,
alike for every contender.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from .common import Bench, interleave, median, missing_row, ms, paired_ratio, reason_of, row, section, unique

TITLE = "wait wake-up latency after a set"
SETTLE_S = 0.1


def contender(waiter: Any, setter: Any) -> Callable[[], float]:
    def once() -> float:
        key = unique("wake")
        woke: list[float] = []
        errors: list[BaseException] = []

        def wait() -> None:
            try:
                waiter.wait([key])
                woke.append(time.perf_counter())
            except BaseException as error:
                errors.append(error)

        thread = threading.Thread(target=wait, daemon=True)
        thread.start()
        time.sleep(SETTLE_S)
        set_at = time.perf_counter()
        setter.set(key, "awake")
        thread.join(timeout=30)
        if errors:
            raise errors[0]
        if not woke:
            raise TimeoutError(f"wait() did not return within 30 s of set() on {type(waiter).__module__}")
        return woke[0] - set_at

    return once


def run(bench: Bench) -> dict:
    from datetime import timedelta

    from torch.distributed.elastic.rendezvous.etcd_store import EtcdStore as TorchEtcdStore

    from rdzv.store import EtcdStore

    server = bench.require_server()
    repetitions = 10 if bench.quick else 30
    prefix = "/" + unique("bench-wait") + "/store"
    timeout = timedelta(seconds=30)
    contenders = {
        "rdzv-v2": contender(EtcdStore(server.kv("v2"), prefix, timeout), EtcdStore(server.kv("v2"), prefix)),
        "torch": contender(TorchEtcdStore(server.get_client(), prefix, timeout),
                           TorchEtcdStore(server.get_client(), prefix)),
    }
    missing: dict[str, str] = {}
    try:
        server.kv("v3").ping()
        contenders["rdzv-v3"] = contender(EtcdStore(server.kv("v3"), prefix, timeout),
                                          EtcdStore(server.kv("v3"), prefix))
    except Exception as error:
        missing["rdzv-v3"] = reason_of(error)
    bench.log(f"  {repetitions} wake-ups each, interleaved")
    samples = interleave(contenders, repetitions)
    rows = []
    for name in ("rdzv-v2", "rdzv-v3"):
        metric = f"wait wake-up after set ({name[5:]})"
        if name not in samples:
            rows.append(missing_row(metric, missing[name]))
            continue
        rows.append(row(metric, "ms", ms(median(samples[name])), ms(median(samples["torch"])),
                        ratio=paired_ratio(samples["torch"], samples[name])))
    data = {"repetitions": repetitions, "latency_s": samples, "unavailable": missing,
            "median_ms": {name: ms(median(s)) for name, s in samples.items()}}
    return section(TITLE, rows, data)

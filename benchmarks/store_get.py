"""``get`` of a present key while the store holds 0 / 100 / 1,000 / 10,000 other keys.

rdzv.store.EtcdStore on the v2 and on the v3 API against torch's EtcdStore (v2). torch's
and rdzv's v2 stores read the very same etcd directory; torch's reads the whole directory
on every ``get``, rdzv's reads the one key. The stores are filled through the KV layer from
several threads (a fast path), then the three contenders take turns.
"""

from __future__ import annotations

import base64
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from .common import (Bench, interleave, median, missing_row, ms, paired_ratio, reason_of, row, section, stopwatch,
                     unique)

TITLE = "store get of a present key vs keys in the store"
TARGET_KEYS = 1000
TARGET_SPEEDUP = 5.0
KEY = "bench/present"
FILL_THREADS = 8


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def fill(server: Any, api: str, prefix: str, start: int, stop: int) -> None:
    """Add filler keys ``start..stop-1`` below ``prefix`` in the store layout, from several threads."""
    local = threading.local()

    def put(index: int) -> None:
        if not hasattr(local, "kv"):
            local.kv = server.kv(api)
        local.kv.put(f"{prefix}/{_b64(f'filler/{index:06d}')}", _b64(f"value-{index:06d}-" + "x" * 16))

    with ThreadPoolExecutor(FILL_THREADS) as pool:
        list(pool.map(put, range(start, stop)))


def run(bench: Bench) -> dict:
    from torch.distributed.elastic.rendezvous.etcd_store import EtcdStore as TorchEtcdStore

    from rdzv.store import EtcdStore

    server = bench.require_server()
    sizes = [0, 100, 1000] if bench.quick else [0, 100, 1000, 10000]
    repetitions = 30 if bench.quick else 100
    prefix = "/" + unique("bench-get") + "/store"
    stores: dict[str, Any] = {
        "torch": TorchEtcdStore(server.get_client(), prefix),
        "rdzv-v2": EtcdStore(server.kv("v2"), prefix),
    }
    missing: dict[str, str] = {}
    try:
        stores["rdzv-v3"] = EtcdStore(server.kv("v3"), prefix)
        stores["rdzv-v3"].kv.ping()
    except Exception as error:  # the v3 KV may not exist yet, or fail
        stores.pop("rdzv-v3", None)
        missing["rdzv-v3"] = reason_of(error)
    for name, store in stores.items():
        if name != "torch":
            store.set(KEY, "the value")  # torch's reads the v2 key rdzv-v2 wrote
    apis = ["v2"] + (["v3"] if "rdzv-v3" in stores else [])

    results: dict[int, dict[str, list[float]]] = {}
    filled = 0
    fill_seconds: dict[int, float] = {}
    for size in sizes:
        if size > filled:
            bench.log(f"  filling to {size} keys")
            fill_seconds[size] = stopwatch(lambda: [fill(server, api, prefix, filled, size) for api in apis])
            filled = size
        contenders = {name: _timed_get(store) for name, store in stores.items()}
        interleave(contenders, 5)  # warm up connections
        results[size] = interleave(contenders, repetitions)
        bench.log(f"  {size:>6} keys: " + ", ".join(f"{n} {ms(median(s)):.2f} ms" for n, s in results[size].items()))

    rows = []
    for size in sizes:
        samples = results[size]
        for name in ("rdzv-v2", "rdzv-v3"):
            metric = f"store get, {size:,} keys ({name[5:]})"
            target = f"≥ {TARGET_SPEEDUP:g}× faster" if size == TARGET_KEYS else None
            if name not in samples:
                rows.append(missing_row(metric, missing[name], target))
                continue
            ratio = paired_ratio(samples["torch"], samples[name])
            rows.append(row(metric, "ms", ms(median(samples[name])), ms(median(samples["torch"])), ratio=ratio,
                            target=target, met=(ratio is not None and ratio >= TARGET_SPEEDUP) if target else None))
    data = {
        "sizes": sizes,
        "repetitions": repetitions,
        "median_ms": {str(size): {n: ms(median(s)) for n, s in results[size].items()} for size in sizes},
        "samples_s": {str(size): results[size] for size in sizes},
        "fill_s": {str(size): seconds for size, seconds in fill_seconds.items()},
        "unavailable": missing,
    }
    for store in stores.values():
        if hasattr(store, "kv"):
            store.kv.close()
    return section(TITLE, rows, data)


def _timed_get(store: Any):
    def once() -> float:
        return stopwatch(lambda: store.get(KEY))

    return once

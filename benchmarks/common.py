"""What every benchmark section shares: its context, the shape of its result, and the
timing helpers that keep comparisons fair (interleaved repetitions, pair-by-pair ratios).

A section module exposes ``TITLE`` and ``run(bench) -> dict`` returning :func:`section`
(or :func:`unavailable` when a piece it measures cannot be used).
"""

from __future__ import annotations

import math
import os
import socket
import statistics
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass
class Bench:
    """The context a section runs in: the size of the run, a started etcd, a progress logger.

    ``server`` is an :class:`rdzv.server.EtcdServer` serving v2 and v3, or ``None`` when
    none could be started (``server_error`` then says why).
    """

    quick: bool
    server: Any
    server_error: str | None
    log: Callable[[str], None]
    #: ``--long``: the sustained load (section ``load``) runs #16's 10 minutes.
    long: bool = False
    #: ``--load-seconds``: the sustained load's duration, overriding the mode's default.
    load_seconds: float | None = None

    @property
    def endpoint(self) -> str:
        return self.server.get_endpoint()

    def require_server(self) -> Any:
        """The etcd server; raises ``RuntimeError`` with the reason when there is none."""
        if self.server is None:
            raise RuntimeError(f"no etcd server: {self.server_error}")
        return self.server


def row(
    metric: str,
    unit: str,
    rdzv: float | None,
    torch: float | None = None,
    *,
    ratio: float | None = None,
    target: str | None = None,
    met: bool | None = None,
    note: str | None = None,
) -> dict[str, Any]:
    """One line of the table. ``ratio`` is torch's cost over rdzv's (above 1: rdzv is faster)."""
    return {"metric": metric, "unit": unit, "rdzv": rdzv, "torch": torch, "ratio": ratio,
            "target": target, "met": met, "note": note}


def missing_row(metric: str, reason: str, target: str | None = None) -> dict[str, Any]:
    """A line for a contender that could not be measured, saying why."""
    return {**row(metric, "", None, target=target), "status": "unavailable", "reason": reason}


def section(title: str, rows: list[dict[str, Any]], data: dict[str, Any] | None = None) -> dict[str, Any]:
    """A measured section: its table rows and its raw data (samples, counts) for the JSON."""
    return {"title": title, "status": "ok", "rows": rows, "data": data or {}}


def unavailable(title: str, reason: str) -> dict[str, Any]:
    """A section that could not run at all, and why."""
    return {"title": title, "status": "unavailable", "reason": reason, "rows": [], "data": {}}


def reason_of(error: BaseException) -> str:
    """An exception as one short line for the table and the JSON."""
    text = " ".join(str(error).split()) or "(no message)"
    return f"{type(error).__name__}: {text[:300]}"


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def percentile(values: Sequence[float], fraction: float) -> float | None:
    """The nearest-rank percentile (``fraction`` 0.99 for p99) of ``values``; ``None`` if empty."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(fraction * len(ordered)) - 1))]


def paired_ratio(numerators: Sequence[float], denominators: Sequence[float]) -> float | None:
    """The median of ``numerators[i] / denominators[i]`` over pairs measured side by side."""
    ratios = [n / d for n, d in zip(numerators, denominators) if d > 0 and math.isfinite(n / d)]
    return statistics.median(ratios) if ratios else None


def interleave(contenders: dict[str, Callable[[], float]], repetitions: int) -> dict[str, list[float]]:
    """Call every contender once per repetition, rotating who goes first, so machine noise
    hits all alike. Each call returns its own measurement; returns the measurements by name."""
    names = list(contenders)
    samples: dict[str, list[float]] = {name: [] for name in names}
    for repetition in range(repetitions):
        shift = repetition % len(names)
        for name in names[shift:] + names[:shift]:
            samples[name].append(contenders[name]())
    return samples


def stopwatch(action: Callable[[], object]) -> float:
    """Seconds ``action()`` took."""
    began = time.perf_counter()
    action()
    return time.perf_counter() - began


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def unique(stem: str) -> str:
    """A fresh name for keys, prefixes and run ids."""
    return f"{stem}-{uuid.uuid4().hex[:10]}"


@contextmanager
def environment(**values: str) -> Iterator[None]:
    """Set environment variables for the duration of the block, then restore them."""
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, old in saved.items():
            if old is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = old


def ms(seconds: float | None) -> float | None:
    return None if seconds is None else seconds * 1000


def torch_state_b64(addresses: Sequence[str], *, heartbeat_of: int | None = None,
                    waiting: Sequence[str] = ()) -> str:
    """A rendezvous state as torch's etcd backends store it: base64 of a pickled torch
    ``_RendezvousState`` of a completed round whose participants have these addresses.

    ``heartbeat_of``: that participant's heartbeat is one second newer than otherwise;
    ``waiting``: addresses of nodes on the wait list.
    """
    import base64
    import pickle
    from datetime import datetime, timedelta, timezone

    from torch.distributed.elastic.rendezvous.dynamic_rendezvous import _NodeDesc, _RendezvousState

    base = datetime(2026, 1, 1, tzinfo=timezone.utc)
    state = _RendezvousState()
    state.round = 3
    state.complete = True
    for index, addr in enumerate(addresses):
        node = _NodeDesc(addr, 20000 + index, 0)
        state.participants[node] = index
        state.last_heartbeats[node] = base + timedelta(seconds=index % 5 + (index == heartbeat_of))
    for index, addr in enumerate(waiting):
        node = _NodeDesc(addr, 40000 + index, 0)
        state.wait_list.add(node)
        state.last_heartbeats[node] = base
    return base64.b64encode(pickle.dumps(state)).decode()


# etcd's own counters of the requests it served: v2 HTTP requests (watches are counted
# apart), and every v3 gRPC call begun (the v3 JSON gateway goes through gRPC, so it is
# counted too). Not etcd_debugging_store_reads_total: it counts some v2 requests twice.
_REQUEST_COUNTERS = ("etcd_http_received_total", "etcd_debugging_store_watch_requests_total",
                     "grpc_server_started_total")


def etcd_requests(endpoint: str) -> int:
    """How many requests the etcd at ``endpoint`` has served so far, by its /metrics counters."""
    import urllib.request

    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(f"http://{endpoint}/metrics", timeout=10) as response:
        text = response.read().decode()
    total = 0.0
    for line in text.splitlines():
        name = line.split("{", 1)[0].split(" ", 1)[0]
        if name in _REQUEST_COUNTERS:
            total += float(line.rsplit(" ", 1)[1])
    return int(total)


def cpu_seconds_of(pid: int | None) -> float | None:
    """CPU seconds (user + system) process ``pid`` has used so far, from /proc; ``None`` if unknown."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, TypeError):
        return None


def thread_cpu_seconds(pid: int, tid: int | None) -> float | None:
    """CPU seconds (user + system) thread ``tid`` of process ``pid`` has used, from /proc; ``None`` if unknown."""
    if tid is None:
        return None
    return cpu_seconds_of(f"{pid}/task/{tid}")  # type: ignore[arg-type]


def rss_mb(pid: int | None) -> float | None:
    """Resident memory of process ``pid`` in MB (VmRSS in /proc), or ``None`` if unknown."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


class CpuMeter:
    """CPU used by a process (or one of its threads) between :meth:`start` and :meth:`read`, in cores."""

    def __init__(self, read_seconds: Callable[[], float | None]) -> None:
        self._read_seconds = read_seconds
        self._cpu: float | None = None
        self._wall = 0.0

    def start(self) -> CpuMeter:
        self._cpu, self._wall = self._read_seconds(), time.perf_counter()
        return self

    def read(self) -> float | None:
        """Average cores used since :meth:`start` (CPU seconds per second)."""
        now = self._read_seconds()
        elapsed = time.perf_counter() - self._wall
        if now is None or self._cpu is None or elapsed <= 0:
            return None
        return (now - self._cpu) / elapsed


def descendants_cpu_seconds(root: int, name_contains: str) -> float:
    """CPU seconds used so far by the living descendants of process ``root`` whose command name
    contains ``name_contains`` (e.g. ``"chrom"``: a browser's processes), from /proc."""
    parents: dict[int, int] = {}
    names: dict[int, str] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        names[int(entry.name)] = stat[stat.index("(") + 1:stat.rindex(")")]
        parents[int(entry.name)] = int(stat[stat.rindex(")") + 2:].split()[1])
    children: dict[int, list[int]] = {}
    for pid, parent in parents.items():
        children.setdefault(parent, []).append(pid)
    total, todo = 0.0, list(children.get(root, ()))
    while todo:
        pid = todo.pop()
        todo.extend(children.get(pid, ()))
        if name_contains in names.get(pid, ""):
            total += cpu_seconds_of(pid) or 0.0
    return total


def runqueue_wait_seconds(pid: int | None) -> float | None:
    """Seconds the threads of process ``pid`` have spent ready to run but waiting for a CPU
    (``/proc/<pid>/task/*/schedstat``), or ``None`` if unknown. Against the CPU a process used,
    it tells a process that was idle from one that was starved (on a busy 2-core machine)."""
    try:
        total = 0
        for task in Path(f"/proc/{pid}/task").iterdir():
            try:
                total += int((task / "schedstat").read_text().split()[1])
            except (OSError, IndexError, ValueError):
                continue
        return total / 1e9
    except OSError:
        return None

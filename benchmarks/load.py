"""A real-size job's load (#16): what one write costs, the rate etcd sustains here, and whether a
monitor (and a page) keeps up with a 1,000-node run at that rate.

As a section of ``python -m benchmarks.run`` (``load``):

1. **One compare-and-swap** of a 100 / 1,000 / 10,000-node torch state through rdzv's backend
   (``EtcdRendezvousBackend.set_state``) on v2 and v3, interleaved with etcd's own floor for a
   value of that size (a plain put of the same bytes through the raw KV), with torch's etcd-v2
   backend on v2, and with the pieces the write is made of: ``pickle.dumps`` of the state,
   base64, the client's encoding of the request (v3: the JSON body with the value base64'd again;
   v2: the form body), rdzv's KV compare-and-swap alone, and bare HTTP requests (a put, and a
   compare-and-swap: a v3 transaction, a v2 ``prevIndex`` put) whose bodies were encoded ahead of
   time, on a kept-alive connection: etcd's own cost plus loopback, nothing of ours.
2. **The highest rate**: the load generator (:mod:`rdzv.demo.load`) writing a 1,000-node run as
   fast as one writer goes, a few seconds on each API. One writer is the ceiling for one key:
   each write names the previous one's revision.
3. **The sustained load**: a 1,000-node run (keep-alive 5 s, so 200 writes/s wanted) at the
   lower of that and the highest rate, with joins, leaves and crashes, written from a child
   process for :func:`load_seconds` (10 s ``--quick``, 60 s by default, 600 s ``--long``) on v3;
   a :class:`rdzv.monitor.Monitor` in this process follows it, and in full mode one Chromium page
   of ``panel serve app/dashboard.py`` too. Measured: the lag from each write (etcd's
   acknowledgement, ``time.time()`` in the writer) to the monitor publishing it (its subscriber
   callback) and to the page's document holding it; revisions the monitor coalesced (skipped
   undecoded); the monitor's watcher thread CPU (and each process's wait for a CPU, which tells idle
   from starved on a busy machine); resident memory after warm-up and at the end. Then the same load
   for at most 30 s on v2, followed by a monitor only, for comparison.

As a script, ``python -m benchmarks.load`` runs the load generator alone and prints its stats
(``--help``); without ``--endpoint`` it starts a throwaway etcd and stops it afterwards.
"""

from __future__ import annotations

import argparse
import base64
import http.client
import json
import math
import multiprocessing
import os
import pickle
import sys
import time
import urllib.parse
from datetime import datetime, timezone
from typing import Any

from .common import (Bench, CpuMeter, descendants_cpu_seconds, interleave, median, percentile, reason_of, row,
                     rss_mb, runqueue_wait_seconds, section, thread_cpu_seconds, unique)

TITLE = "load: one compare-and-swap, the highest rate, a 1,000-node run followed"
LOAD_NODES = 1000
KEEP_ALIVE_S = 5.0
CHURN_PER_S = 0.5  # joins, leaves and crashes a second during the sustained load
QUICK_S, FULL_S, LONG_S = 10.0, 60.0, 600.0
V2_COMPARISON_S = 30.0  # the same load followed on v2, at most this long (quick: the quick duration)
TARGET_LAG_S = 1.0  # #16: the monitor and an open page stay within 1 s of etcd (p99)
TTL = 7200


def load_seconds(quick: bool, long: bool, override: float | None) -> float:
    """The sustained load's duration: ``override``, else 10 s quick, 600 s ``--long``, else 60 s."""
    if override is not None:
        return override
    return QUICK_S if quick else LONG_S if long else FULL_S


# -- 1. one compare-and-swap ------------------------------------------------------------------

class BareHttp:
    """etcd's own cost of a put and of a compare-and-swap of one value: HTTP requests whose bodies
    were encoded ahead of time (only the revision to compare is spliced in), on one kept-alive
    connection. What is left is etcd's work, the loopback and a minimal HTTP exchange."""

    def __init__(self, api: str, endpoint: str, put_key: str, cas_key: str, value: str) -> None:
        host, port = endpoint.split(",")[0].rsplit(":", 1)
        self.api = api
        self.connection = http.client.HTTPConnection(host, int(port), timeout=60)
        if api == "v3":
            self.headers = {"Content-Type": "application/json"}
            encoded = base64.b64encode(value.encode()).decode()
            put, cas = (base64.b64encode(key.encode()).decode() for key in (put_key, cas_key))
            self.put = ("POST", "/v3/kv/put", json.dumps({"key": put, "value": encoded}).encode())
            head = json.dumps({"compare": [{"target": "MOD", "result": "EQUAL", "key": cas, "mod_revision": "@"}],
                               "success": [{"request_put": {"key": cas, "value": encoded}}],
                               "failure": [{"request_range": {"key": cas}}]})
            self._cas_parts = [part.encode() for part in head.split("@")]
            self._cas_path = "/v3/kv/txn"
        else:
            self.headers = {"Content-Type": "application/x-www-form-urlencoded"}
            form = urllib.parse.urlencode({"value": value}).encode()
            self.put = ("PUT", "/v2/keys" + put_key, form)
            self._cas_parts = [form + f"&ttl={TTL}&prevIndex=".encode(), b""]
            self._cas_path = "/v2/keys" + cas_key
        self.token = 0

    def _send(self, method: str, path: str, body: bytes) -> dict[str, Any]:
        self.connection.request(method, path, body=body, headers=self.headers)
        answer = self.connection.getresponse()
        data = answer.read()
        if answer.status >= 300:
            raise RuntimeError(f"etcd answered the bare {method} {path} with HTTP {answer.status}")
        return json.loads(data)

    def do_put(self) -> dict[str, Any]:
        return self._send(*self.put)

    def do_cas(self) -> None:
        body = str(self.token).encode().join(self._cas_parts)
        answer = self._send("POST" if self.api == "v3" else "PUT", self._cas_path, body)
        if self.api == "v3":
            if not answer.get("succeeded"):
                raise RuntimeError("the bare compare-and-swap lost with nobody else writing")
            self.token = int(answer["header"]["revision"])
        else:
            self.token = int(answer["node"]["modifiedIndex"])

    def close(self) -> None:
        self.connection.close()


def _client_encoding(api: str, key: str, value: str, token: int) -> None:
    """What rdzv's client does to a value before sending a compare-and-swap of it."""
    if api == "v3":
        put = {"key": base64.b64encode(key.encode()).decode(), "value": base64.b64encode(value.encode()).decode(),
               "lease": "1"}
        json.dumps({"compare": [{"target": "MOD", "result": "EQUAL", "key": put["key"], "mod_revision": str(token)}],
                    "success": [{"request_put": put}], "failure": [{"request_range": {"key": put["key"]}}]}).encode()
    else:
        urllib.parse.urlencode({"value": value, "ttl": TTL, "prevIndex": token}).encode()


def _form_base64_aware(value: str, token: int) -> bytes:
    """The v2 form body of a compare-and-swap of a base64 ``value``, quoted knowing base64 needs only
    ``+``, ``/`` and ``=`` escaped: the same bytes as ``urllib.parse.urlencode`` makes (checked)."""
    quoted = value.replace("+", "%2B").replace("/", "%2F").replace("=", "%3D")
    return f"value={quoted}&ttl={TTL}&prevIndex={token}".encode()


def cas_costs(bench: Bench, api: str, nodes: int, repetitions: int, prefix: str) -> dict[str, Any]:
    """Median ms of each piece of one compare-and-swap of an ``nodes``-node state on ``api``."""
    from torch.distributed.elastic.rendezvous import RendezvousParameters, etcd_rendezvous_backend

    from rdzv.backend import EtcdRendezvousBackend, create_backend
    from rdzv.demo.load import build_state
    from rdzv.kv import KeyLayout

    layout = KeyLayout(prefix)
    run_id = f"cas-{api}-{nodes}"
    params = RendezvousParameters(backend=f"rdzv-etcd-{api}", endpoint=bench.endpoint, run_id=run_id,
                                  min_nodes=1, max_nodes=nodes)
    made, _ = create_backend(params, api=api)
    backend = EtcdRendezvousBackend(made.kv, run_id, key_prefix=layout.runs_prefix)
    kv = made.kv
    state, descs = build_state(nodes)
    data = pickle.dumps(state)
    value = base64.b64encode(data).decode()
    keys = {name: layout.state_key(f"{run_id}-{name}") for name in ("floor", "kv-cas", "bare-put", "bare-cas")}
    cleanup = [(api, backend.key), *((api, key) for key in keys.values())]
    bare = BareHttp(api, bench.endpoint, keys["bare-put"], keys["bare-cas"], value)
    tokens = {"backend": backend.set_state(data, None)[1], "kv": kv.put(keys["kv-cas"], value, ttl=TTL).revision}
    bare.token = kv.put(keys["bare-cas"], value, ttl=TTL).revision
    torch_backend = torch_token = None
    if api == "v2":
        torch_params = RendezvousParameters(backend="etcd-v2", endpoint=bench.endpoint, run_id=run_id + "-torch",
                                            min_nodes=1, max_nodes=nodes)
        torch_backend, _ = etcd_rendezvous_backend.create_backend(torch_params)
        torch_token = torch_backend.set_state(data, None)[1]
        cleanup.append(("v2", f"/torch/elastic/rendezvous/{run_id}-torch"))
    beat = [0]

    def timed(action) -> Any:
        def measure() -> float:
            began = time.perf_counter()
            action()
            return time.perf_counter() - began
        return measure

    def backend_cas() -> float:
        """A heartbeat written through the backend; the seconds of ``set_state`` alone."""
        beat[0] += 1
        state.last_heartbeats[descs[beat[0] % nodes]] = datetime.now(timezone.utc)
        pickled = pickle.dumps(state)
        began = time.perf_counter()
        result = backend.set_state(pickled, tokens["backend"])
        seconds = time.perf_counter() - began
        if result is None or not result[2]:
            raise RuntimeError(f"the backend lost a compare-and-swap on {api} with nobody else writing")
        tokens["backend"] = result[1]
        return seconds

    def kv_cas() -> None:
        written, current = kv.compare_and_swap(keys["kv-cas"], value, tokens["kv"], ttl=TTL)
        if not written:
            raise RuntimeError(f"the KV lost a compare-and-swap on {api} with nobody else writing")
        tokens["kv"] = current.revision

    def torch_cas() -> None:
        nonlocal torch_token
        result = torch_backend.set_state(data, torch_token)
        if result is None or not result[2]:
            raise RuntimeError("torch's backend lost a compare-and-swap with nobody else writing")
        torch_token = result[1]

    contenders = {
        "backend_set_state": backend_cas,
        "kv_compare_and_swap": timed(kv_cas),
        "bare_http_cas": timed(bare.do_cas),
        "kv_put_floor": timed(lambda: kv.put(keys["floor"], value)),
        "bare_http_put": timed(bare.do_put),
        "pickle_dumps": timed(lambda: pickle.dumps(state)),
        "base64": timed(lambda: base64.b64encode(data).decode()),
        "client_encoding": timed(lambda: _client_encoding(api, keys["kv-cas"], value, tokens["kv"])),
    }
    if torch_backend is not None:
        contenders["torch_etcd_v2_set_state"] = timed(torch_cas)
    if api == "v2":  # what the client's form encoding could cost (see the breakdown)
        standard = urllib.parse.urlencode({"value": value, "ttl": TTL, "prevIndex": 7}).encode()
        if _form_base64_aware(value, 7) != standard:
            raise RuntimeError("the base64-aware form encoding differs from urlencode's")
        contenders["client_encoding_base64_aware"] = timed(lambda: _form_base64_aware(value, tokens["kv"]))
    try:
        interleave(contenders, 2)  # warm up: connections, leases
        samples = interleave(contenders, repetitions)
    finally:
        bare.close()
        for which, key in cleanup:
            try:
                with bench.require_server().kv(which) as cleaner:
                    cleaner.delete(key)
            except Exception:
                pass
        kv.close()
        if torch_backend is not None:
            try:
                torch_backend._client.http.clear()  # python-etcd's connection pool (a private attribute)
            except Exception:
                pass
    ms = {name: median(values) * 1000 for name, values in samples.items()}
    return {"ms": ms, "value_bytes": len(value), "pickle_bytes": len(data)}


# -- 2. the highest rate ----------------------------------------------------------------------

def highest_rate(endpoint: str, api: str, prefix: str, seconds: float) -> Any:
    """The load generator on a 1,000-node run as fast as it goes for ``seconds``; its stats."""
    from rdzv.demo.load import LoadGenerator

    return LoadGenerator(endpoint, api=api, run_id=f"max-rate-{api}", prefix=prefix, nodes=LOAD_NODES,
                         keep_alive=KEEP_ALIVE_S, duration=seconds, rate=math.inf, keep_records=False).run()


# -- 3. the sustained load ----------------------------------------------------------------------

def _generator_child(options: dict[str, Any], stop: Any, results: Any) -> None:
    """In a child process: run the load until its duration or ``stop``; put its stats and
    ``{revision: written}`` on ``results``."""
    try:
        from rdzv.demo.load import LoadGenerator

        generator = LoadGenerator(**options).start()
        deadline = time.monotonic() + options["duration"] + 5
        while not stop.is_set() and generator.running and time.monotonic() < deadline:
            stop.wait(0.2)
        generator.stop()
        stats = generator.join(60)
        written = {record.revision: record.written for record in stats.records if record.revision is not None}
        results.put(("ok", stats.to_dict(), written))
    except BaseException as error:  # reported to the parent, which raises it
        results.put(("error", reason_of(error), {}))


class ChildLoad:
    """The load generator in a spawned child process (so its CPU is not the monitor's): started
    by ``with``, stopped and joined on exit; :attr:`stats` and :attr:`written` afterwards."""

    def __init__(self, **options: Any) -> None:
        self.options = options
        context = multiprocessing.get_context("spawn")
        self._stop = context.Event()
        self._results = context.Queue()
        self._process = context.Process(target=_generator_child, args=(options, self._stop, self._results),
                                        daemon=True, name="bench-load-generator")
        self.stats: dict[str, Any] = {}
        self.written: dict[int, float] = {}

    def __enter__(self) -> ChildLoad:
        self._process.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        try:
            status, stats, written = self._results.get(timeout=self.options["duration"] + 120)
            if status != "ok":
                raise RuntimeError(f"the load generator failed: {stats}")
            self.stats, self.written = stats, written
        finally:
            self._process.join(30)
            if self._process.is_alive():
                self._process.kill()
                self._process.join()

    @property
    def pid(self) -> int | None:
        return self._process.pid


class Follower:
    """A started monitor of one run recording ``(revision, time.time())`` each time it publishes a newer one."""

    def __init__(self, endpoint: str, prefix: str, api: str, run_id: str) -> None:
        from rdzv.monitor import Monitor

        self.run_id, self.api = run_id, api
        self.monitor = Monitor(endpoint, prefix, api=api)
        self.seen: list[tuple[int, float]] = []
        self._last = -1
        self._unsubscribe = self.monitor.subscribe(self._changed)
        self.monitor.start()

    def _changed(self, _version: int) -> None:
        view = self.monitor.run(self.run_id, self.api)
        if view is not None and view.revision > self._last:
            self._last = view.revision
            self.seen.append((view.revision, time.time()))

    def watcher_cpu_seconds(self) -> float | None:
        total = 0.0
        for thread in self.monitor.threads:
            used = thread_cpu_seconds(os.getpid(), thread.native_id)
            if used is None:
                return None
            total += used
        return total

    def stop(self) -> None:
        self._unsubscribe()
        self.monitor.stop()


def sustained_load(bench: Bench, prefix: str, rate: float, seconds: float, with_page: bool, api: str = "v3"
                   ) -> dict[str, Any]:
    """The 1,000-node run at ``rate`` for ``seconds`` on ``api``, followed by a monitor (and a page)."""
    from contextlib import ExitStack

    from .serving import (DASHBOARD_APP, chromium, lags, open_page, served_app, shown_lags, take_seen,
                          track_revisions)

    run_id = f"sustained-{api}"
    follower = Follower(bench.endpoint, prefix, api, run_id)
    monitor_cpu = CpuMeter(follower.watcher_cpu_seconds)
    samples: list[tuple] = []  # (seconds in, our RSS MB, server RSS MB, revisions in the monitor's history)
    page_seen: list[tuple[int, float]] = []
    served = page = None
    try:
        with ExitStack() as stack:
            if with_page:
                served = stack.enter_context(served_app(DASHBOARD_APP, ["--endpoint", bench.endpoint, "--run-id",
                                                                        run_id, "--prefix", prefix, "--api", api]))
                browser = stack.enter_context(chromium())
            load = ChildLoad(endpoint=bench.endpoint, api=api, run_id=run_id, prefix=prefix, nodes=LOAD_NODES,
                             keep_alive=KEEP_ALIVE_S, rate=rate, churn=CHURN_PER_S, admit_after=2 * KEEP_ALIVE_S,
                             duration=seconds + 120)  # stopped below, once the measured window is over
            with load:
                deadline = time.monotonic() + 60
                while follower.monitor.run(run_id, api) is None:
                    if time.monotonic() > deadline:
                        raise TimeoutError("the monitor did not see the load's run within 60 s")
                    time.sleep(0.05)
                if with_page:
                    page, _ = open_page(browser, served.url, run_id)
                    track_revisions(page)
                server_cpu = CpuMeter(lambda: _process_cpu(served.pid)).start() if served else None
                browser_cpu = CpuMeter(lambda: descendants_cpu_seconds(os.getpid(), "chrom")).start() \
                    if with_page else None
                monitor_cpu.start()
                process_cpu = CpuMeter(time.process_time).start()
                starved = {"monitor_process": CpuMeter(lambda: runqueue_wait_seconds(os.getpid())).start(),
                           "server": CpuMeter(lambda: runqueue_wait_seconds(served.pid)).start() if served else None}
                began = time.monotonic()
                end = began + seconds
                while time.monotonic() < end and load._process.is_alive():
                    time.sleep(min(1.0, max(0.0, end - time.monotonic())))
                    samples.append((time.monotonic() - began, rss_mb(os.getpid()),
                                    rss_mb(served.pid) if served else None,
                                    len(follower.monitor.history(run_id, api))))
                    if page is not None:
                        page_seen.extend(take_seen(page))
                cpu = {"monitor_watcher": monitor_cpu.read(), "monitor_process": process_cpu.read(),
                       "server": server_cpu.read() if server_cpu else None,
                       "browser": browser_cpu.read() if browser_cpu else None}
                waited = {name: meter.read() if meter else None for name, meter in starved.items()}
                wall_began = time.time() - (time.monotonic() - began)
                load.stop()
            seen_total, skipped = follower.monitor.revisions_seen(run_id, api)
            if page is not None:
                page_seen.extend(take_seen(page))
    finally:
        follower.stop()
        try:
            with bench.require_server().kv(api) as kv:
                kv.delete(f"{prefix}/rendezvous/{run_id}")
        except Exception:
            pass
    written = load.written
    monitor_lags = lags(follower.seen, written)
    page_lags = lags(page_seen, written)
    shown = {"monitor": _spread(shown_lags(follower.seen, written)), "page": _spread(shown_lags(page_seen, written))}
    # warmed up once the monitor's history is full (it holds at most history_limit revisions) and
    # a fifth of the run has passed; a run too short to fill it says so
    limit = follower.monitor.history_limit
    later = [sample for sample in samples if sample[0] >= max(3.0, 0.2 * seconds)] or samples[-1:]
    warm = [sample for sample in later if sample[3] >= limit]
    history_filled = bool(warm)
    first_write = min(written.values(), default=wall_began)
    warm = warm or later
    return {
        "stats": load.stats, "rate_asked": rate, "seconds": seconds,
        "monitor_lag_s": _spread(monitor_lags), "page_lag_s": _spread(page_lags) if with_page else None,
        "monitor_shown": len(follower.seen), "page_shown": len(page_seen), "lag_of_revisions_shown_s": shown,
        "revisions_seen": seen_total, "revisions_skipped": skipped, "cpu_cores": cpu, "waited_for_cpu_s_per_s": waited,
        "api": api,
        "rss_mb": {"monitor_after_warmup": warm[0][1], "monitor_end": samples[-1][1] if samples else None,
                   "monitor_max": max((s[1] for s in samples if s[1] is not None), default=None),
                   "server_after_warmup": warm[0][2], "server_end": samples[-1][2] if samples else None},
        # (seconds since the load's first write, as the lags below, monitor RSS MB, server RSS MB)
        "rss_samples": [(at + wall_began - first_write, ours, server) for at, ours, server, _ in samples],
        "history_filled": history_filled,
        "history_limit": limit,
        "monitor_lag_by_second": _by_second(follower.seen, written, first_write),
        "page_lag_by_second": _by_second(page_seen, written, first_write),
    }


def _by_second(seen: list[tuple[int, float]], written: dict[int, float], began: float) -> list[tuple[int, float]]:
    """``(second since the load's first write, the largest lag of a revision shown in that second)``, for the plot."""
    worst: dict[int, float] = {}
    for revision, moment in seen:
        if revision in written:
            second = int(moment - began)
            worst[second] = max(worst.get(second, 0.0), moment - written[revision])
    return sorted(worst.items())


def _process_cpu(pid: int | None) -> float | None:
    from .common import cpu_seconds_of

    return cpu_seconds_of(pid)


def _spread(values: list[float]) -> dict[str, float | None]:
    return {"p50": percentile(values, 0.5), "p99": percentile(values, 0.99), "max": max(values, default=None),
            "count": len(values)}


# -- the section ------------------------------------------------------------------------------

def run(bench: Bench) -> dict:
    bench.require_server()
    prefix = "/" + unique("bench-load")
    sizes = {100: 10, 1000: 10, 10_000: 3} if bench.quick else {100: 60, 1000: 40, 10_000: 10}
    rows: list[dict[str, Any]] = []
    breakdown: list[dict[str, Any]] = []
    data: dict[str, Any] = {"cas": {}, "breakdown": breakdown}
    for api in ("v2", "v3"):
        for nodes, repetitions in sizes.items():
            try:
                cost = cas_costs(bench, api, nodes, repetitions, prefix)
            except Exception as error:
                rows.append({**row(f"CAS of a {nodes:,}-node state through the backend, {api}", "ms", None),
                             "status": "unavailable", "reason": reason_of(error)})
                continue
            ms = cost["ms"]
            torch_ms = ms.get("torch_etcd_v2_set_state")
            ours = ms["backend_set_state"]
            rows.append(row(
                f"CAS of a {nodes:,}-node state through the backend, {api}", "ms", ours, torch_ms,
                ratio=torch_ms / ours if torch_ms else None,
                note=f"{cost['value_bytes'] / 1000:,.0f} KB stored; etcd's floor (raw KV put of the same bytes) "
                     f"{ms['kv_put_floor']:.2f} ms, so {ours / ms['kv_put_floor']:.2f}× it; etcd's own "
                     f"compare-and-swap (bare HTTP, body pre-encoded) {ms['bare_http_cas']:.2f} ms; + pickle "
                     f"{ms['pickle_dumps']:.2f} ms" + ("; torch column: torch's etcd-v2 backend" if torch_ms else "")))
            data["cas"][f"{api}-{nodes}"] = cost
            breakdown.append({"api": api, "nodes": nodes, "value_kb": cost["value_bytes"] / 1000,
                              "pickle_ms": ms["pickle_dumps"], "base64_ms": ms["base64"],
                              "client_encoding_ms": ms["client_encoding"], "bare_put_ms": ms["bare_http_put"],
                              "bare_cas_ms": ms["bare_http_cas"], "kv_put_floor_ms": ms["kv_put_floor"],
                              "kv_cas_ms": ms["kv_compare_and_swap"], "backend_set_state_ms": ours,
                              "ours_over_bare_cas_ms": ours - ms["bare_http_cas"], "torch_set_state_ms": torch_ms,
                              "v2_form_base64_aware_ms": ms.get("client_encoding_base64_aware")})
            bench.log(f"  CAS {api} {nodes:>6} nodes: backend {ours:.2f} ms, floor {ms['kv_put_floor']:.2f} ms, "
                      f"bare HTTP {ms['bare_http_put']:.2f} ms, pickle {ms['pickle_dumps']:.2f} ms")

    calibration = 2.0 if bench.quick else 5.0
    highest: dict[str, float] = {}
    for api in ("v2", "v3"):
        try:
            stats = highest_rate(bench.endpoint, api, prefix, calibration)
        except Exception as error:
            rows.append({**row(f"highest write rate, {LOAD_NODES:,}-node run, {api}", "writes/s", None),
                         "status": "unavailable", "reason": reason_of(error)})
            continue
        finally:
            try:
                with bench.require_server().kv(api) as kv:
                    kv.delete(f"{prefix}/rendezvous/max-rate-{api}")
            except Exception:
                pass
        highest[api] = stats.achieved_rate
        wanted = LOAD_NODES / KEEP_ALIVE_S
        rows.append(row(f"highest write rate, {LOAD_NODES:,}-node run, one writer, {api}", "writes/s",
                        stats.achieved_rate, target=f"{wanted:g}/s (keep-alive {KEEP_ALIVE_S:g} s)",
                        met=stats.achieved_rate >= wanted,
                        note=f"per write p50 {stats.write_ms_p50:.1f} ms, p99 {stats.write_ms_p99:.1f} ms (pickle "
                             f"{stats.pickle_ms_p50:.1f} ms); {stats.writes} writes in {stats.seconds:.1f} s"))
        bench.log(f"  highest rate {api}: {stats.achieved_rate:.0f} writes/s")
    data["highest_rate"] = highest

    seconds = load_seconds(bench.quick, bench.long, bench.load_seconds)
    rate = min(LOAD_NODES / KEEP_ALIVE_S, highest.get("v3", LOAD_NODES / KEEP_ALIVE_S))
    with_page = not bench.quick
    bench.log(f"  sustained load: {LOAD_NODES:,} nodes at {rate:.0f} writes/s for {seconds:g} s on v3"
              + (", one page open" if with_page else ""))
    try:
        result = sustained_load(bench, prefix, rate, seconds, with_page)
    except Exception as error:
        rows.append({**row(f"sustained load: monitor lag p99, {LOAD_NODES:,} nodes", "ms", None),
                     "status": "unavailable", "reason": reason_of(error)})
        return section(TITLE, rows, data)
    data["sustained"] = result
    stats = result["stats"]
    monitor_lag, page_lag = result["monitor_lag_s"], result["page_lag_s"]
    achieved = stats["achieved_rate"]
    what = f"{LOAD_NODES:,} nodes, {achieved:.0f} writes/s for {stats['seconds']:.0f} s"
    rows.append(row(f"sustained load: monitor lag p50, {what}", "ms", _ms(monitor_lag["p50"]),
                    note=f"each write, from etcd's acknowledgement until the monitor published it or a newer "
                         f"revision; {result['monitor_shown']:,} revisions published of {stats['writes']:,} written; "
                         f"asked {result['rate_asked']:.0f}/s"))
    rows.append(row(f"sustained load: monitor lag p99, {what}", "ms", _ms(monitor_lag["p99"]),
                    target=f"≤ {TARGET_LAG_S * 1000:g} ms",
                    met=monitor_lag["p99"] is not None and monitor_lag["p99"] <= TARGET_LAG_S,
                    note=f"max {_ms(monitor_lag['max']) or 0:.0f} ms"))
    if page_lag is not None:
        rows.append(row(f"sustained load: page lag p50, {what}", "ms", _ms(page_lag["p50"]),
                        note=f"each write, until the page's document held it or a newer revision; "
                             f"{result['page_shown']:,} revisions reached the page"))
        rows.append(row(f"sustained load: page lag p99, {what}", "ms", _ms(page_lag["p99"]),
                        target=f"≤ {TARGET_LAG_S * 1000:g} ms",
                        met=page_lag["p99"] is not None and page_lag["p99"] <= TARGET_LAG_S,
                        note=f"max {_ms(page_lag['max']) or 0:.0f} ms; dashboard server CPU "
                             f"{result['cpu_cores']['server'] or 0:.2f} cores"))
    seen_total, skipped = result["revisions_seen"], result["revisions_skipped"]
    rows.append(row("sustained load: revisions the monitor skipped (coalesced)", "%",
                    100 * skipped / seen_total if seen_total else 0.0,
                    note=f"{skipped:,} of {seen_total:,} seen were folded into a newer one undecoded"))
    cpu, waited = result["cpu_cores"], result["waited_for_cpu_s_per_s"]
    rows.append(row("sustained load: monitor CPU (watcher thread)", "cores", cpu["monitor_watcher"] or 0.0,
                    note=f"the whole monitor process {cpu['monitor_process'] or 0:.2f} cores, and it waited for a CPU "
                         f"{waited['monitor_process'] or 0:.2f} s a second"
                         + (f"; the page's Chromium {cpu['browser']:.2f} cores" if cpu.get("browser") is not None
                            else "")
                         + (f"; the dashboard server {cpu['server']:.2f} cores, waited {waited['server'] or 0:.2f} "
                            "s/s" if cpu.get("server") is not None else "")))
    memory = result["rss_mb"]
    grown = (memory["monitor_end"] or 0) - (memory["monitor_after_warmup"] or 0)
    warmed = ("after warm-up (history full)" if result["history_filled"] else
              f"after 20% of the run: too short to fill the monitor's {result['history_limit']}-revision history, "
              "so this includes filling it")
    rows.append(row("sustained load: monitor process memory growth after warm-up", "MB", grown,
                    note=f"RSS {memory['monitor_after_warmup'] or 0:.0f} MB {warmed}, "
                         f"{memory['monitor_end'] or 0:.0f} MB at the end"
                         + (f"; dashboard server {memory['server_after_warmup'] or 0:.0f} → "
                            f"{memory['server_end'] or 0:.0f} MB" if memory["server_end"] else "")))
    bench.log(f"  sustained: {achieved:.0f} writes/s; monitor lag p50 {_ms(monitor_lag['p50']) or 0:.0f} ms, "
              f"p99 {_ms(monitor_lag['p99']) or 0:.0f} ms; skipped {skipped}/{seen_total}; "
              f"watcher CPU {cpu['monitor_watcher'] or 0:.2f} cores")

    # The same load followed on v2, briefly, to tell the API's watch from the monitor's own work in
    # the lag: a v2 watch returns one event per request; a v3 watch is a stream re-opened after
    # each batch, and one opened at a revision already past is answered from etcd's catch-up loop.
    compare_s = min(seconds, V2_COMPARISON_S)
    v2_rate = min(rate, highest.get("v2", rate))
    try:
        other = sustained_load(bench, prefix, v2_rate, compare_s, False, api="v2")
    except Exception as error:
        rows.append({**row("sustained load on v2: monitor lag p50", "ms", None), "status": "unavailable",
                     "reason": reason_of(error)})
        return section(TITLE, rows, data)
    data["sustained_v2"] = other
    lag, stats2 = other["monitor_lag_s"], other["stats"]
    skipped2 = 100 * other["revisions_skipped"] / other["revisions_seen"] if other["revisions_seen"] else 0.0
    rows.append(row(f"sustained load on v2, for comparison: monitor lag p50, {stats2['achieved_rate']:.0f} writes/s "
                    f"for {stats2['seconds']:.0f} s", "ms", _ms(lag["p50"]),
                    note=f"p99 {_ms(lag['p99']) or 0:.0f} ms; {skipped2:.0f}% of revisions coalesced (v3 above: "
                         f"{100 * skipped / seen_total if seen_total else 0:.0f}%); watcher CPU "
                         f"{other['cpu_cores']['monitor_watcher'] or 0:.2f} cores"))
    bench.log(f"  sustained on v2: monitor lag p50 {_ms(lag['p50']) or 0:.0f} ms, p99 {_ms(lag['p99']) or 0:.0f} ms; "
              f"{skipped2:.0f}% coalesced")
    return section(TITLE, rows, data)


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else seconds * 1000


# -- as a script: the load generator alone ------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    from rdzv.demo.load import LoadGenerator

    parser = argparse.ArgumentParser(prog="python -m benchmarks.load",
                                     description="Write torch-format rendezvous states of N nodes through rdzv's "
                                                 "backend at the rate N nodes with keep-alive K produce (N/K "
                                                 "writes/s), with joins, leaves and crashes; stops by itself.")
    parser.add_argument("--endpoint", help="etcd host:port (default: a throwaway etcd, stopped afterwards)")
    parser.add_argument("--api", choices=("v2", "v3"), default="v3")
    parser.add_argument("--run-id", default=None, help="the run (default: a fresh one)")
    parser.add_argument("--prefix", default=None, help="key prefix (default torch's /torch/elastic)")
    parser.add_argument("--nodes", type=int, default=LOAD_NODES, help="participants, up to 10,000")
    parser.add_argument("--keep-alive", type=float, default=KEEP_ALIVE_S, help="seconds between a node's heartbeats")
    parser.add_argument("--rate", type=float, default=None, help="writes/s (default nodes/keep-alive; inf: flat out)")
    parser.add_argument("--duration", type=float, default=30.0, help="seconds to run")
    parser.add_argument("--churn", type=float, default=CHURN_PER_S, help="joins+leaves+crashes per second")
    parser.add_argument("--admit-after", type=float, default=2 * KEEP_ALIVE_S,
                        help="seconds a joined node waits before a re-rendezvous takes it in (0: never)")
    parser.add_argument("--json", action="store_true", help="print the stats as JSON")
    args = parser.parse_args(argv)

    server = None
    endpoint = args.endpoint
    if endpoint is None:
        from rdzv.server import EtcdServer

        server = EtcdServer(enable_v2=True)
        server.start()
        endpoint = server.get_endpoint()
    try:
        generator = LoadGenerator(endpoint, api=args.api, run_id=args.run_id or unique("load"), prefix=args.prefix,
                                  nodes=args.nodes, keep_alive=args.keep_alive, rate=args.rate,
                                  duration=args.duration, churn=args.churn,
                                  admit_after=args.admit_after or None, keep_records=False)
        print(f"writing {args.nodes:,} nodes to {endpoint} ({args.api}) at {generator.rate:g} writes/s "
              f"for {args.duration:g} s", file=sys.stderr, flush=True)
        stats = generator.run()
    finally:
        if server is not None:
            server.stop()
    if args.json:
        print(json.dumps(stats.to_dict(), indent=2))
    else:
        print(f"{stats.writes:,} writes in {stats.seconds:.1f} s: {stats.achieved_rate:.1f}/s "
              f"(asked {stats.target_rate:g}/s); {stats.cas_lost} compare-and-swaps lost; per write p50 "
              f"{stats.write_ms_p50 or 0:.2f} ms, p99 {stats.write_ms_p99 or 0:.2f} ms (set_state p50 "
              f"{stats.cas_ms_p50 or 0:.2f} ms, pickle {stats.pickle_ms_p50 or 0:.2f} ms); state "
              f"{stats.state_bytes / 1000:,.0f} KB; ops {stats.ops}; key {stats.key}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

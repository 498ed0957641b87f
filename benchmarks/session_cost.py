"""What one more viewer costs the dashboard server, this tree against another commit (or served
by several processes against one), side by side.

    python -m benchmarks.session_cost --against REF [--sessions 10] [--rounds 2] [--seconds 30]
    python -m benchmarks.session_cost --procs N [--sessions 50] ...

One etcd and one 1,000-node load (:mod:`rdzv.demo.load`, keep-alive 5 s: as many writes as one
writer manages) under ``panel serve app/dashboard.py`` of each tree in turn, rounds interleaved
(A, B, A, B...), each with ``--sessions`` lightweight sessions
(:class:`benchmarks.serving.LightSessions`, no browser: the machine's CPU goes to the server, the
load and etcd). For each run: the server's CPU (cores), the messages each session received a
second, and their quotient, the server's CPU per message sent to a session in milliseconds;
and, from the server's own ``/metrics`` (:mod:`rdzv.ui.serving_metrics`), how long a session's
refresh waited for the server's loop and how long it took (means); then the ratio of the two
trees' medians. Few enough sessions that the server is not saturated
(10 on a 2-core machine), so each change reaches every session and the quotient is its cost.

``REF`` is checked out into a temporary git worktree (with this tree's compiled
``rdzv/_opcode_walk`` copied in), removed afterwards.

``--procs N`` compares this tree served by one process with the same served by
``panel serve --num-procs N`` (the README's way to serve more viewers): the server's CPU is then
that of all its processes, and etcd's CPU says what each process's own monitor costs etcd.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import time
from pathlib import Path

from .common import CpuMeter, cpu_seconds_of, descendants_cpu_seconds, unique
from .load import ChildLoad
from .run import BACKEND_QUOTA_BYTES
from .serving import ROOT, LightSessions, checked_out, histogram_between, served_app
from .sessions import KEEP_ALIVE_S, LOAD_NODES, METRICS_PLUGIN

WARM_UP_S = 3.0


def measure(tree: Path, endpoint: str, sessions: int, seconds: float, procs: int = 1, etcd_pid: int | None = None
            ) -> dict[str, float]:
    """One run of ``tree``'s server (``procs`` processes) with ``sessions`` lightweight sessions
    on a fresh load."""
    prefix, run_id = "/" + unique("session-cost"), "crowd"
    args = ["--endpoint", endpoint, "--run-id", run_id, "--prefix", prefix, "--api", "v3"]
    options = [*METRICS_PLUGIN, *(["--num-procs", str(procs)] if procs > 1 else [])]
    with served_app(tree / "app" / "dashboard.py", args, root=tree, options=options) as served, \
            ChildLoad(endpoint=endpoint, api="v3", run_id=run_id, prefix=prefix, nodes=LOAD_NODES,
                      keep_alive=KEEP_ALIVE_S, rate=LOAD_NODES / KEEP_ALIVE_S, duration=3600, churn=0.5,
                      admit_after=2 * KEEP_ALIVE_S) as load:
        light = LightSessions(served.url)
        try:
            light.open(sessions)
            time.sleep(WARM_UP_S)
            before = sum(light.patches)
            counted_before = served.serving_metrics()
            cpu = CpuMeter(lambda: cpu_seconds_of(served.pid) + descendants_cpu_seconds(served.pid, "python")).start()
            etcd_cpu = CpuMeter(lambda: cpu_seconds_of(etcd_pid)).start()
            time.sleep(seconds)
            cores, etcd_cores = cpu.read() or 0.0, etcd_cpu.read()
            per_session = (sum(light.patches) - before) / sessions / seconds
            counted = served.serving_metrics()
            delay, refresh = (histogram_between(counted_before[name], counted[name]) for name in ("push_delay", "refresh"))
        finally:
            light.close()
            load.stop()
    return {"cores": cores, "etcd_cores": etcd_cores if etcd_cores is not None else float("nan"),
            "messages_per_session_s": per_session,
            "push_delay_ms": (delay["mean_s"] or float("nan")) * 1000,
            "refresh_ms": (refresh["mean_s"] or float("nan")) * 1000,
            "ms_per_message": cores * 1000 / (per_session * sessions) if per_session else float("nan")}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.session_cost", description=__doc__.splitlines()[0])
    compared = parser.add_mutually_exclusive_group(required=True)
    compared.add_argument("--against", metavar="REF", help="the git commit to compare this tree with")
    compared.add_argument("--procs", type=int, metavar="N", help="compare one server process with --num-procs N")
    parser.add_argument("--sessions", type=int, default=10, help="lightweight sessions per run (default 10)")
    parser.add_argument("--rounds", type=int, default=2, help="runs of each, interleaved (default 2)")
    parser.add_argument("--seconds", type=float, default=30.0, help="the measured window of each run (default 30)")
    options = parser.parse_args(argv)
    if options.procs is not None and options.procs < 2:
        parser.error("--procs takes 2 or more (the processes compared with one)")
    from rdzv.server import EtcdServer

    with contextlib.ExitStack() as stack:
        if options.against is not None:
            other = stack.enter_context(checked_out(options.against))
            setups = {options.against: (other, 1), "this tree": (ROOT, 1)}
        else:
            setups = {"1 process": (ROOT, 1), f"{options.procs} processes": (ROOT, options.procs)}
        results: dict[str, list[dict[str, float]]] = {name: [] for name in setups}
        with EtcdServer(extra_args=[f"--quota-backend-bytes={BACKEND_QUOTA_BYTES}"]) as server:
            for round_ in range(options.rounds):
                for name, (tree, procs) in setups.items():
                    result = measure(tree, server.get_endpoint(), options.sessions, options.seconds, procs, server.pid)
                    results[name].append(result)
                    print(f"round {round_ + 1}, {name}: server {result['cores']:.2f} cores, etcd "
                          f"{result['etcd_cores']:.2f} cores, {result['messages_per_session_s']:.1f} messages per "
                          f"session a second, {result['ms_per_message']:.1f} ms of server CPU per message to a "
                          f"session; a refresh waited {result['push_delay_ms']:.0f} ms for the loop and took "
                          f"{result['refresh_ms']:.1f} ms (means)", flush=True)
    first, second = setups
    medians = {name: {figure: statistics.median(run[figure] for run in runs) for figure in runs[0]}
               for name, runs in results.items()}
    print(f"median of {options.rounds}, {options.sessions} sessions: " + "; ".join(
        f"{name} {m['ms_per_message']:.1f} ms of server CPU per message, {m['messages_per_session_s']:.1f} "
        f"messages per session a second, server {m['cores']:.2f} cores, etcd {m['etcd_cores']:.2f} cores, "
        f"refresh waited {m['push_delay_ms']:.0f} ms and took {m['refresh_ms']:.1f} ms"
        for name, m in medians.items()))
    print(f"ratio ({first} / {second}): server CPU per message "
          f"{medians[first]['ms_per_message'] / medians[second]['ms_per_message']:.2f}, messages per session "
          f"{medians[first]['messages_per_session_s'] / medians[second]['messages_per_session_s']:.2f}, a refresh's "
          f"wait {medians[first]['push_delay_ms'] / medians[second]['push_delay_ms']:.2f}, a refresh "
          f"{medians[first]['refresh_ms'] / medians[second]['refresh_ms']:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""What the dashboard's page costs the browser on a 1,000-node run, this tree against a commit.

    python -m benchmarks.page_cost --against REF [--rate 2] [--rounds 2] [--seconds 15]

One etcd and one 1,000-node load at ``--rate`` writes a second (:mod:`rdzv.demo.load`, no churn)
under ``panel serve app/dashboard.py`` of each tree in turn, rounds interleaved, each with one
real Chromium page (headless, software rendering). For each run: the CPU of the page's Chromium
(all its processes, in cores), how busy the page's main thread was (the share of the
DevTools CPU profiler's samples that were not idle), and the revisions that reached the page
a second. A low rate shows what one change costs the page; at high rates the page takes all
the CPU it can get, and the revisions it shows are the figure to compare.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import time
from pathlib import Path
from typing import Any

from .common import CpuMeter, descendants_cpu_seconds, unique
from .load import ChildLoad
from .run import BACKEND_QUOTA_BYTES
from .serving import ROOT, checked_out, chromium, open_page, served_app
from .sessions import KEEP_ALIVE_S, LOAD_NODES

WARM_UP_S = 3.0
SAMPLING_US = 500

COUNT_REVISIONS_JS = """
() => {
  // The newest revision of the selected run's timeline source, counted on its own signals (no
  // timer of ours runs in the page: the page's own work is what is measured).
  for (const doc of Bokeh.documents) for (const model of doc.all_models) {
    if (typeof model.get_column !== "function" || !model.get_column("revision") || !model.get_column("seen_at")) continue;
    window.rdzvRevisions = 0;
    let last = -1;
    const count = () => {
      const column = model.get_column("revision");
      const newest = column && column.length ? Number(column[column.length - 1]) : -1;
      if (newest > last) { last = newest; window.rdzvRevisions++; }
    };
    for (const signal of [model.change, model.streaming, model.patching]) signal.connect(count);
    return true;
  }
  return false;
}
"""


def measure(tree: Path, endpoint: str, rate: float, seconds: float) -> dict[str, float]:
    """One run of ``tree``'s page on a fresh load of ``rate`` writes a second."""
    prefix, run_id = "/" + unique("page-cost"), "crowd"
    args = ["--endpoint", endpoint, "--run-id", run_id, "--prefix", prefix, "--api", "v3"]
    with served_app(tree / "app" / "dashboard.py", args, root=tree) as served, chromium() as browser, \
            ChildLoad(endpoint=endpoint, api="v3", run_id=run_id, prefix=prefix, nodes=LOAD_NODES,
                      keep_alive=KEEP_ALIVE_S, rate=rate, duration=3600, churn=0.0) as load:
        page, _ = open_page(browser, served.url, run_id)
        if not page.evaluate(COUNT_REVISIONS_JS):
            raise RuntimeError("the page has no timeline source to count revisions on")
        time.sleep(WARM_UP_S)
        counted = page.evaluate("() => window.rdzvRevisions")
        profiler = page.context.new_cdp_session(page)
        profiler.send("Profiler.enable")
        profiler.send("Profiler.setSamplingInterval", {"interval": SAMPLING_US})
        profiler.send("Profiler.start")
        cpu = CpuMeter(lambda: descendants_cpu_seconds(os.getpid(), "chrom")).start()
        time.sleep(seconds)
        cores = cpu.read() or 0.0
        profile = profiler.send("Profiler.stop")["profile"]
        shown = (page.evaluate("() => window.rdzvRevisions") - counted) / seconds
        load.stop()
    return {"chromium_cores": cores, "main_thread_busy": _busy_share(profile), "revisions_at_page_s": shown}


def _busy_share(profile: dict[str, Any]) -> float:
    """The share of a DevTools CPU profile's samples spent anywhere but ``(idle)``."""
    idle = {node["id"] for node in profile["nodes"] if node["callFrame"]["functionName"] == "(idle)"}
    samples = profile.get("samples", [])
    return sum(sample not in idle for sample in samples) / len(samples) if samples else float("nan")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.page_cost", description=__doc__.splitlines()[0])
    parser.add_argument("--against", required=True, metavar="REF", help="the git commit to compare this tree with")
    parser.add_argument("--rate", type=float, default=2.0, help="writes a second of the 1,000-node load (default 2)")
    parser.add_argument("--rounds", type=int, default=2, help="runs of each tree, interleaved (default 2)")
    parser.add_argument("--seconds", type=float, default=15.0, help="the measured window of each run (default 15)")
    options = parser.parse_args(argv)
    from rdzv.server import EtcdServer

    results: dict[str, list[dict[str, float]]] = {options.against: [], "this tree": []}
    with contextlib.ExitStack() as stack:
        trees = {options.against: stack.enter_context(checked_out(options.against)), "this tree": ROOT}
        server = stack.enter_context(EtcdServer(extra_args=[f"--quota-backend-bytes={BACKEND_QUOTA_BYTES}"]))
        for round_ in range(options.rounds):
            for name, tree in trees.items():
                result = measure(tree, server.get_endpoint(), options.rate, options.seconds)
                results[name].append(result)
                print(f"round {round_ + 1}, {name}: Chromium {result['chromium_cores']:.2f} cores, main thread busy "
                      f"{result['main_thread_busy']:.0%}, {result['revisions_at_page_s']:.1f} revisions at the page "
                      "a second", flush=True)
    medians = {name: {figure: statistics.median(run[figure] for run in runs) for figure in runs[0]}
               for name, runs in results.items()}
    print(f"median of {options.rounds}, {options.rate:g} writes a second: " + "; ".join(
        f"{name} Chromium {m['chromium_cores']:.2f} cores, main thread busy {m['main_thread_busy']:.0%}, "
        f"{m['revisions_at_page_s']:.1f} revisions at the page a second" for name, m in medians.items()))
    old, new = medians[options.against], medians["this tree"]
    print(f"ratio ({options.against} / this tree): Chromium cores {old['chromium_cores'] / new['chromium_cores']:.2f}, "
          f"main thread busy {old['main_thread_busy'] / new['main_thread_busy']:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

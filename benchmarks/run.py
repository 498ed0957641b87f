"""Run every benchmark against one throwaway etcd, print the table, write JSON and a PNG.

    python -m benchmarks.run [--quick] [--long] [--load-seconds S] [--out DIR] [--only SECTION ...]

rdzv is measured against torch (and torch's c10d where it applies) in the same run,
interleaved. Each section is independent: one that cannot run (a missing piece, an
error) is recorded as unavailable with the reason and the others go on. The etcd and
every process a section starts are stopped before the command returns.
"""

from __future__ import annotations

import argparse
import importlib
import os
import platform
import signal
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from . import report
from .common import Bench, reason_of, unavailable
from .load import load_seconds

SECTIONS = ("server_start", "store_get", "store_add", "store_wait", "rendezvous", "rendezvous_processes", "monitor",
            "dashboard_e2e", "diagnose", "decode", "history", "sessions", "load")
DEFAULT_OUT = Path(__file__).resolve().parent


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def run_section(name: str, bench: Bench) -> dict[str, Any]:
    """One section's result; never raises (an error becomes an 'unavailable' result)."""
    began = time.perf_counter()
    title = name
    try:
        module = importlib.import_module(f"benchmarks.{name}")
        title = module.TITLE
        result = module.run(bench)
    except Exception as error:
        result = unavailable(title, reason_of(error))
    result["seconds"] = round(time.perf_counter() - began, 2)
    status = "done" if result["status"] == "ok" else f"unavailable: {result.get('reason')}"
    log(f"[{name}] {status} ({result['seconds']} s)")
    return result


BACKEND_QUOTA_BYTES = 8 * 1024**3
"""The benchmarks' etcd's space quota (etcd's default: 2 GB; 8 GB is the most it advises)."""


def start_server() -> tuple[Any, str | None]:
    """A started rdzv.server.EtcdServer with v2 and v3, or ``(None, why not)``."""
    try:
        from rdzv.server import EtcdServer

        # The loads write a whole state (about 110 KB at 1,000 nodes) tens of times a second and
        # nothing compacts: etcd's default 2 GB quota fills in about five minutes of them.
        server = EtcdServer(enable_v2=True, extra_args=[f"--quota-backend-bytes={BACKEND_QUOTA_BYTES}"])
        server.__enter__()
        return server, None
    except Exception as error:
        return None, reason_of(error)


def environment_facts(server: Any) -> dict[str, Any]:
    facts: dict[str, Any] = {"python": platform.python_version(), "cpus": os.cpu_count(), "machine": platform.machine()}
    try:
        import torch

        facts["torch"] = torch.__version__
    except ImportError:
        pass
    if server is not None:
        try:
            facts["etcd"] = server.kv("v2").ping()
        except Exception as error:
            facts["etcd"] = reason_of(error)
    return facts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, few repetitions (CI: under ~4 minutes)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="directory for results.json and results.png")
    parser.add_argument("--only", nargs="+", choices=SECTIONS, help="run only these sections")
    parser.add_argument("--long", action="store_true",
                        help=f"the sustained 1,000-node load runs {load_seconds(False, True, None):g} s (#16's "
                             f"10 minutes) instead of {load_seconds(False, False, None):g} s")
    parser.add_argument("--load-seconds", type=float, metavar="S", help="the sustained load's duration, in seconds")
    args = parser.parse_args(argv)
    if args.quick and args.long:
        parser.error("--quick and --long contradict each other")
    args.out.mkdir(parents=True, exist_ok=True)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so the finally below stops etcd

    started_at = datetime.now(timezone.utc)
    began = time.perf_counter()
    sections: dict[str, dict[str, Any]] = {}
    server, server_error = start_server()
    try:
        if server_error:
            log(f"etcd did not start: {server_error}")
        bench = Bench(quick=args.quick, server=server, server_error=server_error, log=log, long=args.long,
                      load_seconds=args.load_seconds)
        chosen = args.only or SECTIONS
        sustained = load_seconds(args.quick, args.long, args.load_seconds)
        meta = {"quick": args.quick, "long": args.long, "load_seconds": sustained,
                "started_at": started_at.isoformat(timespec="seconds"), **environment_facts(server)}
        if "load" in chosen:
            log(f"the sustained load (section 'load') runs {sustained:g} s"
                + ("" if args.long or args.quick else "; --long runs #16's 10 minutes"))
        for name in chosen:
            log(f"[{name}] running")
            sections[name] = run_section(name, bench)
    finally:
        if server is not None:
            server.__exit__(None, None, None)

    meta["duration_s"] = round(time.perf_counter() - began, 1)
    results = {"meta": meta, "sections": sections}
    png = args.out / "results.png"
    try:
        report.write_png(results, png)
        meta["png"] = str(png)
    except Exception as error:
        meta["png_error"] = reason_of(error)
        log(f"the PNG was not drawn: {meta['png_error']}")
    json_path = args.out / "results.json"
    report.write_json(results, json_path)
    print(report.format_table(results))
    print(f"\n{meta['duration_s']} s; wrote {json_path}" + (f" and {png}" if "png" in meta else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())

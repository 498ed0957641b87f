"""`python -m benchmarks.run --quick` end to end: every section measured (numbers, not
"unavailable"), the JSON and the PNG written, no etcd left behind. Speeds are reported by
the command and never asserted here."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from conftest import ROOT, subprocess_env

SECTIONS = ("server_start", "store_get", "store_add", "store_wait", "rendezvous", "rendezvous_processes", "monitor",
            "dashboard_e2e", "diagnose", "decode", "history", "sessions", "load")


def etcd_commands_under(directory) -> list[str]:
    """Command lines of running etcd processes whose data lives below ``directory``."""
    found = subprocess.run(["pgrep", "-a", "-x", "etcd"], capture_output=True, text=True)
    return [line for line in found.stdout.splitlines() if str(directory) in line]


def is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


@pytest.mark.slow
@pytest.mark.browser
@pytest.mark.timeout(480)
def test_quick_run_measures_every_section_and_cleans_up(tmp_path, request):
    out = tmp_path / "tmp"
    # TMPDIR of the run, where every etcd data directory lands; short, as Chromium puts its
    # sockets there too and socket paths are limited to about 100 characters.
    scratch = Path(tempfile.mkdtemp(prefix="rdzv-bench-"))
    request.addfinalizer(lambda: shutil.rmtree(scratch, ignore_errors=True))
    done = subprocess.run([sys.executable, "-m", "benchmarks.run", "--quick", "--out", str(out)], cwd=ROOT,
                          env={**subprocess_env(), "TMPDIR": str(scratch)}, capture_output=True, text=True,
                          timeout=460)
    assert done.returncode == 0, done.stderr[-4000:]

    results = json.loads((out / "results.json").read_text())
    assert results["meta"]["quick"] is True
    assert set(results["sections"]) == set(SECTIONS)
    for name in SECTIONS:
        section = results["sections"][name]
        assert section["status"] == "ok", f"{name} was not measured: {section.get('reason')}"
        assert section["rows"], f"{name} has no rows"
        for line in section["rows"]:
            assert line.get("status") != "unavailable", f"{name}: {line['metric']}: {line.get('reason')}"
            assert is_number(line["rdzv"]) and line["rdzv"] >= 0, f"{name}: {line}"
            assert line["torch"] is None or is_number(line["torch"]), f"{name}: {line}"
            assert line["ratio"] is None or is_number(line["ratio"]), f"{name}: {line}"
    # every add counted exactly once (final value 8·N, totals 1..8·N each returned once), for every store
    assert results["sections"]["store_add"]["data"]["exact"] == {"rdzv-v2": True, "rdzv-v3": True, "torch": True}
    assert {"rdzv-etcd-v2", "rdzv-etcd-v3", "torch-etcd-v2", "torch-c10d"} <= set(
        results["sections"]["rendezvous"]["data"]["median_s"])

    check_new_sections(results["sections"])

    assert (out / "results.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "ratio (torch/rdzv)" in done.stdout
    assert etcd_commands_under(scratch) == [], "the benchmark left an etcd running"
    leftovers = [*scratch.glob("rdzv-etcd-*"), *scratch.glob("torchelastic_etcd_data*")]
    assert leftovers == [], f"the benchmark left etcd data directories: {leftovers}"


def check_new_sections(sections: dict) -> None:
    """What the sections of #14, #15 and #16 must have measured (numbers, not speeds)."""
    sizes = {"100", "1000", "10000"}
    decode = sections["decode"]["data"]
    assert set(decode["ms"]) == sizes and set(decode["ratio_to_pickle_loads"]) == sizes
    assert all(is_number(factor) for by_path in decode["ratio_to_pickle_loads"].values()
               for factor in by_path.values())
    assert set(sections["diagnose"]["data"]["diagnose_ms"]) == {"complete", "last call, 1% dead"}

    history = sections["history"]["data"]
    assert {key.split("-")[1] for key in history["cases"]} == {"v2", "v3"}
    for case in history["cases"].values():
        assert case["held"] > 1 and is_number(case["backfill_s"]) and case["report_mb"] > 0
    assert history["time_travel"]["ms"] and all(is_number(ms) for ms in history["time_travel"]["painted_ms"])

    sessions = sections["sessions"]["data"]
    assert sessions["push_vs_poll"]["lags_s"]["push"] and sessions["push_vs_poll"]["lags_s"]["poll"]
    phases = sessions["many_viewers"]["phases"]
    assert [phase["sessions"] for phase in phases] == sorted(phase["sessions"] for phase in phases)
    assert all(phase["lags_s"] and is_number(phase["cpu_cores"]) for phase in phases)
    assert phases[-1]["light"] == phases[-1]["sessions"] - 1 and phases[-1]["patches_per_light_session_per_s"] > 0
    assert is_number(sessions["many_viewers"]["quiet"]["cpu_cores"])

    load = sections["load"]["data"]
    assert set(load["cas"]) == {f"{api}-{n}" for api in ("v2", "v3") for n in sizes}
    assert set(load["highest_rate"]) == {"v2", "v3"}
    sustained = load["sustained"]
    assert sustained["stats"]["writes"] > 0 and sustained["stats"]["cas_lost"] == 0
    assert sustained["monitor_lag_s"]["count"] > 0 and load["sustained_v2"]["monitor_lag_s"]["count"] > 0

    shapes = sections["rendezvous_processes"]["data"]["shapes"]
    assert shapes and all(shape["runs"] for shape in shapes.values())

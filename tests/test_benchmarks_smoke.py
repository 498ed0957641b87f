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
            "dashboard_e2e")


def etcd_commands_under(directory) -> list[str]:
    """Command lines of running etcd processes whose data lives below ``directory``."""
    found = subprocess.run(["pgrep", "-a", "-x", "etcd"], capture_output=True, text=True)
    return [line for line in found.stdout.splitlines() if str(directory) in line]


def is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


@pytest.mark.slow
@pytest.mark.browser
@pytest.mark.timeout(300)
def test_quick_run_measures_every_section_and_cleans_up(tmp_path, request):
    out = tmp_path / "tmp"
    # TMPDIR of the run, where every etcd data directory lands; short, as Chromium puts its
    # sockets there too and socket paths are limited to about 100 characters.
    scratch = Path(tempfile.mkdtemp(prefix="rdzv-bench-"))
    request.addfinalizer(lambda: shutil.rmtree(scratch, ignore_errors=True))
    done = subprocess.run([sys.executable, "-m", "benchmarks.run", "--quick", "--out", str(out)], cwd=ROOT,
                          env={**subprocess_env(), "TMPDIR": str(scratch)}, capture_output=True, text=True,
                          timeout=280)
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
    assert results["sections"]["store_add"]["data"]["exact"]["rdzv-v2"] in (True, False)
    assert {"rdzv-etcd-v2", "rdzv-etcd-v3", "torch-etcd-v2", "torch-c10d"} <= set(
        results["sections"]["rendezvous"]["data"]["median_s"])

    assert (out / "results.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "ratio (torch/rdzv)" in done.stdout
    assert etcd_commands_under(scratch) == [], "the benchmark left an etcd running"
    leftovers = [*scratch.glob("rdzv-etcd-*"), *scratch.glob("torchelastic_etcd_data*")]
    assert leftovers == [], f"the benchmark left etcd data directories: {leftovers}"

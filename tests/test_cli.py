"""The ``rdzv`` command: ``status`` against real runs on both APIs, ``server``, and every
failure as one sentence with a non-zero exit code."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from datetime import datetime, timezone

import pytest
from conftest import free_port, subprocess_env
from rendezvous_helpers import params, rdzv_handler

from rdzv.cli import main
from rdzv.command_line import EXIT_NOT_FOUND, EXIT_UNDECODABLE, EXIT_UNREACHABLE, EXIT_USAGE
from rdzv.state import Node, RendezvousSnapshot
from rdzv.status_command import RunStatus, format_run


def rdzv_command(*argv: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "rdzv", *argv], capture_output=True, text=True, timeout=timeout,
        env=subprocess_env(),
    )


def assert_one_sentence(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr
    assert lines[0].startswith("rdzv: ") and lines[0].endswith((".", ")")), lines[0]
    return lines[0]


@pytest.fixture
def completed_run(etcd_server, unique, api):
    """A real one-node rendezvous completed by torch's handler on our backend; yields its run id."""
    handler = rdzv_handler(params(etcd_server.get_endpoint(), unique, min_nodes=1, max_nodes=1), api=api)
    handler.next_rendezvous()
    yield unique
    handler.shutdown()


def test_status_lists_a_real_run_and_details_it(etcd_server, completed_run, api, capsys):
    endpoint = etcd_server.get_endpoint()
    assert main(["status", "--endpoint", endpoint, "--api", api]) == 0
    table = capsys.readouterr().out
    row = next(line for line in table.splitlines() if line.startswith(completed_run))
    assert row.split()[:5] == [completed_run, api, "complete", "0", "1"]

    assert main(["status", "--endpoint", endpoint, "--run-id", completed_run]) == 0
    detail = capsys.readouterr().out
    assert f"Run {completed_run} ({api}" in detail
    assert "1 participants, 0 waiting" in detail
    assert re.search(rf"127\.0\.0\.1 +{os.getpid()} +\d+ +0 +participant", detail)

    assert main(["status", "--endpoint", endpoint, "--run-id", completed_run, "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["api"] == api and data["state"] == "complete"
    assert [p["rank"] for p in data["snapshot"]["participants"]] == [0]
    assert data["snapshot"]["participants"][0]["pid"] == os.getpid()


def test_status_keeps_the_v2_and_v3_keyspaces_apart(etcd_server, unique, capsys):
    endpoint = etcd_server.get_endpoint()
    prefix = f"/{unique}"
    with etcd_server.kv(api="v3") as kv:
        kv.put(f"{prefix}/rendezvous/only-on-v3", "bm90IGEgcGlja2xl")
    assert main(["status", "--endpoint", endpoint, "--prefix", prefix, "--json"]) == 0
    runs = json.loads(capsys.readouterr().out)["runs"]
    assert [(run["run_id"], run["api"], run["state"]) for run in runs] == [("only-on-v3", "v3", "undecodable")]
    assert main(["status", "--endpoint", endpoint, "--prefix", prefix, "--api", "v2"]) == 0
    assert "No rendezvous runs" in capsys.readouterr().out


@pytest.mark.reliability
def test_undecodable_state_is_flagged_in_the_table_and_fails_the_detail(etcd_server, unique, api, capsys):
    endpoint = etcd_server.get_endpoint()
    prefix = f"/{unique}"
    with etcd_server.kv(api=api) as kv:
        kv.put(f"{prefix}/rendezvous/broken", "!!not base64!!")
    assert main(["status", "--endpoint", endpoint, "--prefix", prefix, "--api", api]) == 0
    out = capsys.readouterr().out
    assert "undecodable" in out and "broken" in out

    assert main(["status", "--endpoint", endpoint, "--prefix", prefix, "--run-id", "broken"]) == EXIT_UNDECODABLE
    message = assert_one_sentence(capsys.readouterr().err)
    assert "broken" in message and "undecodable" in message.lower()


@pytest.mark.reliability
def test_terminal_escapes_in_a_node_name_are_not_printed_raw():
    hostile = Node("\x1b[2J\x1b]0;pwned\x07evil", 1, 0)
    snapshot = RendezvousSnapshot(round=1, participants={hostile: 0})
    text = format_run(RunStatus("run", "v2", 1, snapshot, None), datetime.now(timezone.utc))
    assert "\x1b" not in text and "\x07" not in text
    assert "\\x1b[2J" in text and "evil" in text


def test_unknown_run_names_the_run_and_the_runs_there(etcd_server, completed_run, capsys):
    code = main(["status", "--endpoint", etcd_server.get_endpoint(), "--run-id", "no-such-run"])
    assert code == EXIT_NOT_FOUND
    message = assert_one_sentence(capsys.readouterr().err)
    assert "'no-such-run'" in message and completed_run in message


@pytest.mark.reliability
def test_unreachable_etcd_is_one_sentence_naming_the_endpoint():
    endpoint = f"127.0.0.1:{free_port()}"
    result = rdzv_command("status", "--endpoint", endpoint, "--timeout", "2")
    assert result.returncode == EXIT_UNREACHABLE
    message = assert_one_sentence(result.stderr)
    assert endpoint in message and "could not be reached" in message


@pytest.mark.parametrize("argv, words", [
    (["status"], "--endpoint"),
    (["status", "--endpoint", ""], "endpoint"),
    (["status", "--endpoint", "host:notaport"], "port"),
    (["status", "--endpoint", "127.0.0.1:2379", "--timeout", "-1"], "--timeout"),
    (["status", "--endpoint", "127.0.0.1:2379", "--protocol", "gopher"], "gopher"),
    (["status", "--endpoint", "127.0.0.1:2379", "--api", "v4"], "v4"),
    (["frobnicate"], "frobnicate"),
    ([], "command"),
])
@pytest.mark.reliability
def test_bad_arguments_are_one_sentence_and_exit_2(argv, words, capsys):
    assert main(argv) == EXIT_USAGE
    message = assert_one_sentence(capsys.readouterr().err)
    assert words in message


def test_rdzv_server_serves_until_interrupted_and_leaves_nothing(tmp_path):
    process = subprocess.Popen(
        [sys.executable, "-m", "rdzv", "server"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env=subprocess_env(),
    )
    try:
        first = process.stdout.readline()
        assert "etcd is serving the v2 and v3 APIs at " in first, first
        endpoint = first.rsplit(" at ", 1)[1].strip()
        status = rdzv_command("status", "--endpoint", endpoint)
        assert status.returncode == 0, status.stderr
        assert "No rendezvous runs" in status.stdout
        children = subprocess.run(["pgrep", "-P", str(process.pid)], capture_output=True, text=True).stdout.split()
        assert children, "rdzv server has no etcd child"
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 0, err
    assert "etcd stopped." in out
    for pid in children:
        assert not os.path.exists(f"/proc/{pid}") or open(f"/proc/{pid}/stat").read().split()[2] == "Z"
    after = rdzv_command("status", "--endpoint", endpoint, "--timeout", "2")
    assert after.returncode == EXIT_UNREACHABLE


@pytest.mark.browser
@pytest.mark.timeout(120)
def test_rdzv_dashboard_serves_the_live_page(etcd_server, completed_run, api, page):
    from playwright.sync_api import expect

    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "rdzv", "dashboard", "--endpoint", etcd_server.get_endpoint(),
         "--run-id", completed_run, "--port", str(port)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=subprocess_env(), start_new_session=True,
    )
    try:
        first = process.stdout.readline()
        assert f"http://127.0.0.1:{port}/dashboard" in first, first
        page.goto(f"http://127.0.0.1:{port}/dashboard", timeout=60_000)
        expect(page.locator(".rdzv-banner")).to_have_attribute("data-state", "connected", timeout=30_000)
        expect(page.get_by_text("participant", exact=True)).to_have_count(1, timeout=30_000)
        expect(page.get_by_text(str(os.getpid()), exact=True).first).to_be_visible()
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=30)


@pytest.mark.reliability
def test_rdzv_dashboard_with_bad_arguments_is_one_sentence():
    result = rdzv_command("dashboard", "--endpoint", "127.0.0.1:2379", "--api", "v9")
    assert result.returncode == EXIT_USAGE
    assert "v9" in assert_one_sentence(result.stderr)

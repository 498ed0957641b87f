"""The dashboard served by ``panel serve app/dashboard.py`` and a real headless Chromium
(Debian's, driven by Playwright): shared by the dashboard and reliability tests.

The ``serve``, ``browser`` and ``page`` fixtures are in ``conftest.py``.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

from conftest import ROOT, free_port, stop_process_group, subprocess_env

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run"]
WAIT_MS = 20_000
"""How long a browser expectation waits (ms): generous, for a loaded CI machine."""


class ServedDashboard:
    """``panel serve app/dashboard.py`` in its own process group, killed (with any etcd it
    started) on :meth:`stop`."""

    def __init__(self, args: list[str], env: dict[str, str] | None = None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/dashboard"
        command = [
            sys.executable, "-m", "panel", "serve", str(ROOT / "app" / "dashboard.py"), "--port", str(self.port),
            "--address", "127.0.0.1", f"--allow-websocket-origin=127.0.0.1:{self.port}",
        ]
        if args:
            command += ["--args", *args]
        self.log = Path(os.environ.get("TMPDIR", "/tmp")) / f"rdzv-dashboard-{self.port}.log"
        self._log_file = self.log.open("wb")
        self.process = subprocess.Popen(command, cwd=ROOT, env={**subprocess_env(), **(env or {})},
                                        stdout=self._log_file, stderr=subprocess.STDOUT, start_new_session=True)
        self._wait_listening(timeout=60)

    def _wait_listening(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"panel serve exited: {self.log.read_text(errors='replace')}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return
            except OSError:
                time.sleep(0.2)
        raise TimeoutError(f"panel serve did not listen within {timeout} s: {self.log.read_text(errors='replace')}")

    def stop(self) -> None:
        stop_process_group(self.process, grace=20)
        self._log_file.close()
        self.log.unlink(missing_ok=True)

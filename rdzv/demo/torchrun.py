"""TorchrunCluster: a real elastic job -- ``torchrun`` agents as child processes, CPU and gloo.

Each agent is ``python -m torch.distributed.run`` with one worker running
:mod:`rdzv.demo.train`, rendezvousing through etcd with the given backend. Kill an
agent and the others' workers fail their next ``all_reduce``; their agents restart
them (one of ``max_restarts``), re-rendezvous without the dead agent (dropped by the
heartbeat check) and the workers resume from the shared checkpoint.

Agents run in process groups of their own and die with this process, however it
ends (Linux parent-death signal); their workers die with them (the training
script sets the same signal). ``close()`` (also on
``with`` exit and at interpreter exit) stops everything and deletes the work
directory.
"""

from __future__ import annotations

import atexit
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from ..rendezvous_settings import RendezvousSettings
from ..etcd_process import pid_alive
from .processes import signal_tree, spawn

TORCHRUN_BACKENDS = ("rdzv-etcd-v2", "rdzv-etcd-v3", "etcd-v2")
TRAIN_SCRIPT = Path(__file__).with_name("train.py")
WORKDIR_PREFIX = "rdzv-torchrun-"
_OWNER_FILE = "owner"

AgentStatus = Literal["running", "finished", "failed", "killed", "stopped"]


@dataclass(frozen=True)
class AgentView:
    """One agent: ``status`` is ``"running"``, ``"finished"`` (exit 0), ``"failed"``
    (another exit code), ``"killed"`` (by :meth:`TorchrunCluster.kill_agent`) or
    ``"stopped"`` (by ``close()``)."""

    index: int
    pid: int
    status: AgentStatus
    returncode: int | None


@dataclass(frozen=True)
class ProgressRecord:
    """One line a worker wrote (see :mod:`rdzv.demo.train`)."""

    event: str
    agent: int
    rank: int
    world_size: int
    step: int
    loss: float | None
    restart_count: int
    resumed_from: int
    pid: int
    time: float

    @classmethod
    def from_json(cls, line: str) -> ProgressRecord:
        data = json.loads(line)
        return cls(
            event=data["event"], agent=int(data["agent"]), rank=data["rank"], world_size=data["world_size"],
            step=data["step"], loss=data["loss"], restart_count=data["restart_count"],
            resumed_from=data["resumed_from"], pid=data["pid"], time=data["time"],
        )


class TorchrunCluster:
    """A torchrun elastic job on etcd whose agents you start and kill.

    Args:
        endpoint: etcd's ``host:port``.
        run_id: the rendezvous run id (``--rdzv-id``).
        nnodes: ``"N"`` or ``"MIN:MAX"`` agents (``--nnodes``).
        backend: ``"rdzv-etcd-v2"``, ``"rdzv-etcd-v3"`` or torch's ``"etcd-v2"``.
        steps: training steps in all; step_time: seconds each worker sleeps per step.
        last_call_timeout, keep_alive_interval, keep_alive_max_attempt: the rendezvous
            settings (``--rdzv-conf``), whole seconds as torch requires.
        max_restarts, monitor_interval: torchrun's options of those names.
        workdir: where progress, checkpoint and logs go; default a new temporary
            directory, deleted by ``close()`` (or, if this process is killed, by the
            next cluster created on the machine).
        python: the interpreter that runs torchrun.
    """

    def __init__(
        self,
        endpoint: str,
        run_id: str = "torchrun-demo",
        *,
        nnodes: str = "1:3",
        backend: str = "rdzv-etcd-v2",
        steps: int = 100,
        step_time: float = 0.2,
        last_call_timeout: int = 2,
        keep_alive_interval: int = 1,
        keep_alive_max_attempt: int = 3,
        max_restarts: int = 3,
        monitor_interval: float = 0.5,
        workdir: str | Path | None = None,
        python: str = sys.executable,
    ) -> None:
        if backend not in TORCHRUN_BACKENDS:
            raise ValueError(f"Unknown torchrun backend {backend!r}; use one of {', '.join(TORCHRUN_BACKENDS)}.")
        if not re.fullmatch(r"[1-9]\d*(:[1-9]\d*)?", nnodes):
            raise ValueError(f"nnodes must be 'N' or 'MIN:MAX' with positive integers (got {nnodes!r}).")
        low, _, high = nnodes.partition(":")
        if high and int(high) < int(low):
            raise ValueError(f"In nnodes={nnodes!r} the maximum is below the minimum; write 'MIN:MAX'.")
        if not run_id:
            raise ValueError("The run id must be a non-empty string.")
        if steps < 1 or step_time < 0:
            raise ValueError("steps must be at least 1 and step_time must not be negative.")
        for name, value in (("last_call_timeout", last_call_timeout), ("keep_alive_interval", keep_alive_interval),
                            ("keep_alive_max_attempt", keep_alive_max_attempt)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(
                    f"{name} must be a whole number of seconds >= 1 (got {value!r}); torch requires integers."
                )
        self.endpoint = endpoint
        self.run_id = run_id
        self.nnodes = nnodes
        self.max_nodes = int(high or low)
        self.backend = backend
        self.steps = steps
        #: The rendezvous settings the agents run with (what a viewer needs to explain the run).
        self.settings = RendezvousSettings.from_torchrun(
            nnodes, f"last_call_timeout={last_call_timeout},keep_alive_interval={keep_alive_interval},"
                    f"keep_alive_max_attempt={keep_alive_max_attempt}")
        self._owns_workdir = workdir is None
        if workdir is None:
            sweep_stale_workdirs()
            self.workdir = Path(tempfile.mkdtemp(prefix=WORKDIR_PREFIX))
            (self.workdir / _OWNER_FILE).write_text(str(os.getpid()))
        else:
            self.workdir = Path(workdir)
        (self.workdir / "progress").mkdir(parents=True, exist_ok=True)
        (self.workdir / "logs").mkdir(exist_ok=True)
        self._command = [
            python, "-m", "torch.distributed.run",
            f"--nnodes={nnodes}", "--nproc-per-node=1",
            f"--rdzv-backend={backend}", f"--rdzv-endpoint={endpoint}", f"--rdzv-id={run_id}",
            f"--rdzv-conf=last_call_timeout={last_call_timeout},keep_alive_interval={keep_alive_interval},"
            f"keep_alive_max_attempt={keep_alive_max_attempt}",
            f"--max-restarts={max_restarts}", f"--monitor-interval={monitor_interval}",
            "--local-addr=127.0.0.1",
            str(TRAIN_SCRIPT), "--workdir", str(self.workdir), "--steps", str(steps), "--step-time", str(step_time),
        ]
        self._lock = threading.Lock()
        self._agents: list[subprocess.Popen] = []
        self._ended_by: dict[int, AgentStatus] = {}
        self._closed = False
        atexit.register(self.close)

    # -- agents ----------------------------------------------------------------

    def start_agent(self) -> AgentView:
        """Start one more agent; it joins the job at the next rendezvous round."""
        with self._lock:
            if self._closed:
                raise RuntimeError("This torchrun cluster is closed; create a new TorchrunCluster.")
            index = len(self._agents)
            env = self._agent_env(index)
            process = spawn(self._command, env=env, log=self._log_path(index), cwd=self.workdir)
            self._agents.append(process)
        return self.agent(index)

    def kill_agent(self, index: int) -> None:
        """SIGKILL the agent and its worker, as if its machine died; returns once they are gone."""
        process = self._process(index)
        if process.poll() is None:
            with self._lock:
                self._ended_by.setdefault(index, "killed")
            signal_tree(process, signal.SIGKILL)
        process.wait()

    def agent(self, index: int) -> AgentView:
        process = self._process(index)
        code = process.poll()
        if code is None:
            status: AgentStatus = "running"
        else:
            status = self._ended_by.get(index) or ("finished" if code == 0 else "failed")
        return AgentView(index, process.pid, status, code)

    @property
    def agents(self) -> list[AgentView]:
        """Every agent started, in order."""
        return [self.agent(index) for index in range(len(self._agents))]

    def logs(self, index: int) -> str:
        """What the agent and its worker printed so far."""
        self._process(index)
        path = self._log_path(index)
        return path.read_text(errors="replace") if path.exists() else ""

    # -- progress --------------------------------------------------------------

    def progress(self, agent: int | None = None) -> list[ProgressRecord]:
        """The workers' records, oldest first (of one agent, or of all)."""
        if agent is None:
            files = sorted((self.workdir / "progress").glob("*.jsonl"))
        else:
            files = [self._progress_path(agent)]
        records: list[ProgressRecord] = []
        for path in files:
            if path.exists():
                for line in path.read_text().splitlines():
                    try:
                        records.append(ProgressRecord.from_json(line))
                    except (ValueError, KeyError):  # a line being written right now
                        continue
        return sorted(records, key=lambda record: record.time)

    def checkpoint_step(self) -> int:
        """The last step rank 0 checkpointed (0 before the first)."""
        path = self.workdir / "checkpoint.json"
        try:
            return int(json.loads(path.read_text())["step"])
        except (OSError, ValueError, KeyError):
            return 0

    def wait_for_progress(
        self,
        predicate: Callable[[ProgressRecord], bool] | None = None,
        *,
        agent: int | None = None,
        step: int = 0,
        timeout: float = 60.0,
    ) -> ProgressRecord:
        """Wait for a record (of ``agent``, or of any) with ``step >= step`` that satisfies
        ``predicate``, written after this call began or before; return the newest such.

        Raises:
            TimeoutError: none came within ``timeout`` (the message quotes the agents' last log lines).
        """
        deadline = time.monotonic() + timeout
        while True:
            matches = [
                record for record in self.progress(agent)
                if record.step >= step and (predicate is None or predicate(record))
            ]
            if matches:
                return matches[-1]
            if time.monotonic() >= deadline:
                raise TimeoutError(
                    f"No worker progress matched within {timeout:g} s (step >= {step}"
                    f"{'' if agent is None else f', agent {agent}'}); the agents' last log lines:\n"
                    + self._log_tails()
                )
            time.sleep(0.2)

    def wait_for_exit(self, timeout: float = 120.0) -> list[AgentView]:
        """Wait until every agent has exited (the job finished or failed); returns their views.

        Raises:
            TimeoutError: some agent still runs after ``timeout``.
        """
        deadline = time.monotonic() + timeout
        for process in list(self._agents):
            try:
                process.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                raise TimeoutError(f"The agents still run after {timeout:g} s:\n{self._log_tails()}") from None
        return self.agents

    # -- cleanup ---------------------------------------------------------------

    def close(self, timeout: float = 10.0) -> None:
        """Stop every agent (SIGTERM, then SIGKILL after ``timeout``) with its workers,
        and delete the work directory if this cluster made it. Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            running = [(index, process) for index, process in enumerate(self._agents) if process.poll() is None]
            for index, _ in running:
                self._ended_by.setdefault(index, "stopped")
        atexit.unregister(self.close)
        for _, process in running:
            signal_tree(process, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for _, process in running:
            try:
                process.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
            signal_tree(process, signal.SIGKILL)  # the workers too, whatever the agent did
            process.wait()
        if self._owns_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> TorchrunCluster:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        states = ", ".join(f"{view.index}:{view.status}" for view in self.agents) or "no agents"
        return f"TorchrunCluster({self.run_id!r} on {self.endpoint}, {self.backend}, {states})"

    # -- helpers ---------------------------------------------------------------

    def _agent_env(self, index: int) -> dict[str, str]:
        env = dict(os.environ)
        package_root = str(Path(__file__).resolve().parents[2])
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [package_root, env.get("PYTHONPATH", "")]))
        env["RDZV_DEMO_AGENT"] = str(index)
        env["PYTHONUNBUFFERED"] = "1"
        env.setdefault("OMP_NUM_THREADS", "1")
        # Workers bootstrap through a store of their own each round, not one the rank-0 agent
        # shares: in torch 2.13 an agent joining a later round blocks for good reading
        # MASTER_ADDR, which an agent that stays rank 0 publishes only in its first round
        # (see also pytorch/pytorch#135712 on shared stores and restarts).
        env["TORCH_DISABLE_SHARE_RDZV_TCP_STORE"] = "1"
        return env

    def _process(self, index: int) -> subprocess.Popen:
        if not 0 <= index < len(self._agents):
            raise IndexError(f"No agent {index}; agents are numbered 0 to {len(self._agents) - 1}.")
        return self._agents[index]

    def _log_path(self, index: int) -> Path:
        return self.workdir / "logs" / f"agent-{index}.log"

    def _progress_path(self, index: int) -> Path:
        return self.workdir / "progress" / f"agent-{index}.jsonl"

    def _log_tails(self, lines: int = 5) -> str:
        tails = []
        for index in range(len(self._agents)):
            tail = self.logs(index).strip().splitlines()[-lines:] or ["(no output)"]
            tails.extend(f"[agent {index}] {line}" for line in tail)
        return "\n".join(tails) or "(no agents started)"


def sweep_stale_workdirs() -> list[Path]:
    """Remove the temporary work directories of clusters whose process is gone (a killed
    kernel cannot run ``close()``); return the removed paths."""
    removed = []
    for path in Path(tempfile.gettempdir()).glob(WORKDIR_PREFIX + "*"):
        try:
            owner = int((path / _OWNER_FILE).read_text())
        except (OSError, ValueError):
            continue
        if not pid_alive(owner):
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed

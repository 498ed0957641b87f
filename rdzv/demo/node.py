"""One simulated node: a thread driving a real torch ``DynamicRendezvousHandler`` the way
a torchrun agent does.

The loop: join the rendezvous; then, every keep-alive interval, ask the handler for
``num_nodes_waiting()`` and re-rendezvous when it is above zero (torch's agent does
exactly this), or when the round's membership changed under us (a peer left, or
torch's heartbeat check removed a dead one) -- which is when a real agent's workers
would fail their next collective and the agent would restart them.

torch internals used (private names, present in torch 1.9 to 2.13; look here first
when torch changes):

* ``handler._op_executor.run(op, deadline[, update_deadline])`` with torch's own
  ``_RendezvousExitOp`` and ``_RendezvousJoinOp``. A join is the sequence of
  ``next_rendezvous()`` (stop heartbeats, exit op, join op, start heartbeats)
  without its TCPStore bootstrap: a simulated node starts no workers, and its
  ``local_addr`` ("node-3") is no host a TCPStore could bind. This replaces the
  process-wide ``TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1`` switch with a per-node one.
  The join op is wrapped so that a leave, crash or stop requested meanwhile takes
  effect at its next step (torch's join op only ends on success, close or timeout).
* ``handler._start_heartbeats()`` / ``handler._stop_heartbeats()``: a crash is
  ``_stop_heartbeats()`` and nothing else -- the handler is abandoned in the state,
  and the other nodes' syncs drop it once its last heartbeat is older than
  ``keep_alive_interval * keep_alive_max_attempt``. A graceful leave stops the
  heartbeats and then runs torch's exit op, which removes the node from the state.
* ``handler._state_holder.state`` (read under ``handler._heartbeat_lock``, the lock
  torch's heartbeat thread holds while it syncs) and ``handler._this_node``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Literal

from torch.distributed.elastic.rendezvous.api import (
    RendezvousClosedError,
    RendezvousGracefulExitError,
    RendezvousTimeoutError,
)
from torch.distributed.elastic.rendezvous.dynamic_rendezvous import (
    DynamicRendezvousHandler,
    _Action,
    _RendezvousContext,
    _RendezvousExitOp,
    _RendezvousJoinOp,
)

from .handlers import RendezvousConfig

Status = Literal["joining", "waiting", "running", "left", "crashed", "closed", "error"]
FINAL_STATUSES = frozenset({"left", "crashed", "closed", "error"})

Request = Literal["leave", "crash", "stop"]


@dataclass(frozen=True)
class NodeView:
    """What one simulated node knows about itself.

    ``round`` is the round the node is in, or is waiting for; ``rank`` and
    ``world_size`` are set while it runs (and kept after it crashes or the run
    closes, as the last thing it knew). ``error`` is one sentence when ``status``
    is ``"error"``.
    """

    name: str
    rank: int | None
    world_size: int | None
    round: int | None
    status: Status
    error: str | None = None


class _Interrupted(Exception):
    """A leave, crash or stop request reached the node's thread."""

    def __init__(self, request: Request) -> None:
        super().__init__(request)
        self.request = request


class SimNode:
    """A simulated node. Create it through :meth:`rdzv.demo.DemoCluster.add_node`.

    ``name`` is the node's ``local_addr`` in the rendezvous state; ``node_id`` is
    torch's descriptor of it (``"node-3_<pid>_<n>"``), as the state lists it.
    """

    def __init__(
        self,
        name: str,
        handler: DynamicRendezvousHandler,
        config: RendezvousConfig,
        release: Callable[[], None] = lambda: None,
    ) -> None:
        self.name = name
        self.node_id = repr(handler._this_node)
        self._handler = handler
        self._config = config
        self._release = release
        self._lock = threading.Lock()
        self._view = NodeView(name, None, None, None, "joining")
        self._request: Request | None = None
        self._wake = threading.Event()
        self._members: frozenset = frozenset()
        self._round: int | None = None
        # A daemon, so that a cluster nobody closed cannot hold the interpreter open
        # (atexit handlers, which close the cluster, only run after non-daemon threads end).
        self._thread = threading.Thread(target=self._main, name=f"rdzv-demo-{name}", daemon=True)

    def __repr__(self) -> str:
        view = self.view
        return f"SimNode({self.name!r}, status={view.status!r}, rank={view.rank}, round={view.round})"

    @property
    def view(self) -> NodeView:
        with self._lock:
            return self._view

    @property
    def finished(self) -> bool:
        """True once the node has left, crashed, been closed or failed."""
        return self.view.status in FINAL_STATUSES

    @property
    def thread_alive(self) -> bool:
        return self._thread.is_alive()

    def start(self) -> None:
        self._thread.start()

    def request(self, what: Request) -> None:
        """Ask the node's thread to leave, crash or stop; the first request wins."""
        with self._lock:
            if self._request is None:
                self._request = what
        self._wake.set()

    def join(self, timeout: float | None = None) -> bool:
        """Wait for the node's thread to end; returns whether it did."""
        if self._thread.ident is not None:
            self._thread.join(timeout)
        return not self._thread.is_alive()

    # -- the node's thread ---------------------------------------------------------

    def _main(self) -> None:
        handler = self._handler
        try:
            try:
                while True:
                    self._rendezvous()
                    self._follow_round()
            except _Interrupted as interrupted:
                self._finish(interrupted.request)
        except (RendezvousClosedError, RendezvousGracefulExitError):
            handler._stop_heartbeats()
            self._set(status="closed")
        except Exception as exc:  # a thread must end with a status, never with a traceback
            handler._stop_heartbeats()
            self._set(status="error", error=self._describe(exc))
        finally:
            self._release()

    def _rendezvous(self) -> None:
        handler = self._handler
        handler._stop_heartbeats()
        deadline = handler._get_deadline(handler.settings.timeout.join)
        handler._op_executor.run(_RendezvousExitOp(), deadline)
        handler._op_executor.run(_InterruptibleJoinOp(self), deadline, handler._get_deadline)
        if self._request is not None:  # a leave requested while joining has been carried out by the op
            raise _Interrupted(self._request)
        handler._start_heartbeats()
        with handler._heartbeat_lock:
            state = handler._state_holder.state
            self._members = frozenset(state.participants)
            self._round = state.round
            rank = state.participants[handler._this_node]
        self._set(status="running", rank=rank, world_size=len(self._members), round=self._round, error=None)

    def _follow_round(self) -> None:
        """Return when a re-rendezvous is due; raise on a request or a closed run."""
        handler = self._handler
        while True:
            if self._wake.wait(self._config.keep_alive_interval):
                raise _Interrupted(self._request or "stop")
            if handler.num_nodes_waiting() > 0:  # syncs the state (at most once a second)
                return
            with handler._heartbeat_lock:
                state = handler._state_holder.state
                if state.closed:
                    raise RendezvousClosedError
                if state.round != self._round or frozenset(state.participants) != self._members:
                    return

    def _finish(self, request: Request) -> None:
        handler = self._handler
        handler._stop_heartbeats()
        if request == "crash":
            self._set(status="crashed")
        elif request == "leave":
            handler._op_executor.run(_RendezvousExitOp(), handler._get_deadline(handler.settings.timeout.close))
            self._set(status="left", rank=None, world_size=None)
        else:
            self._set(status="closed")

    def _join_step(self, ctx: _RendezvousContext) -> _Action | None:
        """The action that replaces torch's join step, or ``None`` to let torch decide."""
        request = self._request
        if request in ("crash", "stop"):
            raise _Interrupted(request)
        if request == "leave":
            state = ctx.state
            if ctx.node in state.participants:
                return _Action.REMOVE_FROM_PARTICIPANTS
            if ctx.node in state.wait_list:
                return _Action.REMOVE_FROM_WAIT_LIST
            if ctx.node in state.redundancy_list:
                return _Action.REMOVE_FROM_REDUNDANCY_LIST
            return _Action.FINISH
        state = ctx.state
        waiting = ctx.node in state.wait_list or ctx.node in state.redundancy_list
        self._set(
            status="waiting" if waiting else "joining",
            rank=None,
            world_size=None,
            round=state.round + 1 if state.complete and ctx.node not in state.participants else state.round,
        )
        return None

    def _set(self, **changes: object) -> None:
        with self._lock:
            self._view = replace(self._view, **changes)

    def _describe(self, exc: Exception) -> str:
        if isinstance(exc, RendezvousTimeoutError):
            reason = (
                f"the rendezvous did not complete within join_timeout={self._config.join_timeout:g} s"
            )
        else:
            reason = (str(exc).strip().splitlines() or [""])[0] or "no details"
            reason = f"{type(exc).__name__}: {reason}"
        return f"Node {self.name} stopped on an error ({reason})."


class _InterruptibleJoinOp:
    """torch's join op, except that the node's pending request is honoured first."""

    def __init__(self, node: SimNode) -> None:
        self._node = node
        self._torch_join = _RendezvousJoinOp()

    def __call__(self, ctx: _RendezvousContext, deadline: float) -> _Action:
        action = self._node._join_step(ctx)
        return action if action is not None else self._torch_join(ctx, deadline)

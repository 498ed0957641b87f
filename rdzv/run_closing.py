"""Closing a run, the one write a viewer offers: what an operator, a teacher or the dashboard calls.

torch closes a rendezvous with ``DynamicRendezvousHandler.set_closed()``: the state is marked
closed (``_RendezvousState.closed``), every node leaves at its next rendezvous step, and any agent
that joins afterwards fails with ``RendezvousClosedError``. :func:`close_run` does exactly that,
through torch's own handler on rdzv's backend, so the written state is torch's.

Given an :class:`~rdzv.audit.AuditLog`, every attempt is appended to it (who, when, which run,
the revision before and after, and the outcome), and nothing is written to etcd when the log
cannot be.
"""

from __future__ import annotations

from dataclasses import dataclass

from .audit import AuditEntry, AuditError, AuditLog
from .kv import KVError, Target


class CloseRunError(RuntimeError):
    """The run could not be closed; the message is one sentence saying why and what to do.
    ``revision_before`` is the state's revision when it was read (``None``: it was not);
    ``audit`` the audit log's entry for the attempt, when one was written."""

    def __init__(self, message: str, revision_before: int | None = None) -> None:
        super().__init__(message)
        self.revision_before = revision_before
        self.audit: AuditEntry | None = None


class CloseRunAuditError(AuditError):
    """The run was closed but its audit entry could not be written; ``closed`` is the outcome."""

    def __init__(self, message: str, closed: ClosedRun) -> None:
        super().__init__(message)
        self.closed = closed


@dataclass(frozen=True)
class ClosedRun:
    """The outcome of :func:`close_run`: the run, its API, and the state's revision before and after."""

    run_id: str
    api: str
    revision_before: int
    revision_after: int
    audit: AuditEntry | None = None
    """The audit log's entry for this write, when one was kept."""


def close_run(target: Target | str, run_id: str, *, api: str | None = None, audit: AuditLog | None = None,
              user: str | None = None, client: str | None = None) -> ClosedRun:
    """Close ``run_id`` at ``target`` (a :class:`~rdzv.kv.Target` or an endpoint string) the
    way torch's handler does.

    The run's state is looked up on ``api``, else the target's API, else every API the server
    offers (v3 first); closing an already closed run writes nothing new.

    With ``audit``, the attempt is appended to that log whatever its outcome, as done by
    ``user`` (the signed-in name, if any) from ``client`` (the requesting address, if any).

    Raises:
        CloseRunError: etcd did not answer, the run has no state, it could not be written, or
            ``audit`` cannot be written (then nothing was written to etcd).
        CloseRunAuditError: the run was closed but the audit entry could not be appended.
    """
    target = Target.of(target)
    if audit is None:
        return _close_run(target, run_id, api)
    try:
        audit.check()
    except AuditError as exc:
        raise CloseRunError(f"Run {run_id!r} was not closed: {str(exc).rstrip('.')}; fix it and retry.") from None

    def entry(outcome: str, api_used: str | None, before: int | None, after: int | None) -> AuditEntry:
        return AuditEntry.now(user=user, client=client, action="close-run", endpoint=target.endpoint,
                              api=api_used, run_id=run_id, revision_before=before, revision_after=after,
                              outcome=outcome)

    try:
        closed = _close_run(target, run_id, api)
    except CloseRunError as exc:
        try:
            exc.audit = audit.record(entry(f"failed: {exc}", api, exc.revision_before, None))
        except AuditError as audit_exc:
            raise CloseRunError(f"{str(exc).rstrip('.')} ({str(audit_exc).rstrip('.')}).",
                                exc.revision_before) from None
        raise
    outcome = "closed" if closed.revision_after != closed.revision_before else "unchanged"
    line = entry(outcome, closed.api, closed.revision_before, closed.revision_after)
    closed = ClosedRun(closed.run_id, closed.api, closed.revision_before, closed.revision_after, line)
    try:
        audit.record(line)
    except AuditError as exc:
        raise CloseRunAuditError(f"Run {run_id!r} was closed, but {str(exc)[0].lower()}{str(exc)[1:]}",
                                 closed) from None
    return closed


def _close_run(target: Target, run_id: str, api: str | None) -> ClosedRun:
    from torch.distributed import HashStore
    from torch.distributed.elastic.rendezvous.api import RendezvousError
    from torch.distributed.elastic.rendezvous.dynamic_rendezvous import (
        DynamicRendezvousHandler,
    )

    from .backend import EtcdRendezvousBackend

    key = target.layout.state_key(run_id)
    for candidate in ((api,) if api else target.apis[::-1]):
        kv = target.connect(candidate)
        try:
            try:
                before = kv.get(key)
            except KVError as exc:
                raise CloseRunError(f"Run {run_id!r} could not be closed: {str(exc).rstrip('.')}.") from None
            if before is None:
                continue
            backend = EtcdRendezvousBackend(kv, run_id, key_prefix=target.layout.runs_prefix)
            # The handler never uses the store to close; a local one keeps it off etcd.
            handler = DynamicRendezvousHandler.from_backend(
                run_id, HashStore(), backend, min_nodes=1, max_nodes=1, local_addr="rdzv-close-run"
            )
            try:
                handler.set_closed()
                after = kv.get(key)
            except (RendezvousError, KVError) as exc:
                raise CloseRunError(f"Run {run_id!r} could not be closed ({str(exc).rstrip('.')}); check that "
                                    "etcd is reachable and retry.", before.revision) from None
            return ClosedRun(run_id, candidate, before.revision, after.revision if after else before.revision)
        finally:
            kv.close()
    where = f"the {api} API of {target}" if api else str(target)
    raise CloseRunError(f"Run {run_id!r} has no state at {where} below {target.layout.runs_dir}; nothing to close.")

"""The audit log of writes: one JSON line per write, appended to a file, saying who did what to
which run, when (UTC), the state's revision before and after, and how it ended.

Every write the dashboard offers goes through :func:`rdzv.run_closing.close_run` with an
:class:`AuditLog`; a notebook or script may pass one too. The file is only ever appended to
(``O_APPEND``: lines of concurrent writers never interleave), created with mode 0600, and each
line is flushed to disk before the write is reported done.
"""

from __future__ import annotations

import json
import os
import threading
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

__all__ = ["AuditEntry", "AuditError", "AuditLog", "default_audit_path"]


class AuditError(OSError):
    """The audit log could not be written; the message is one sentence saying which file and why."""


def default_audit_path() -> Path:
    """Where the audit log goes when none is named: ``$XDG_STATE_HOME/rdzv/audit.log``
    (``~/.local/state/rdzv/audit.log``)."""
    state = os.environ.get("XDG_STATE_HOME", "").strip()
    return (Path(state) if state else Path.home() / ".local" / "state") / "rdzv" / "audit.log"


@dataclass(frozen=True)
class AuditEntry:
    """One write: ``outcome`` is ``closed``, ``unchanged`` (it was closed already) or
    ``failed: <why>``; ``user`` is the signed-in name (``None`` without sign-in); ``client`` the
    address the request came from (``None`` outside a served page)."""

    time: str
    user: str | None
    client: str | None
    action: str
    endpoint: str
    api: str | None
    run_id: str
    revision_before: int | None
    revision_after: int | None
    outcome: str

    @classmethod
    def now(cls, **fields) -> AuditEntry:
        stamp = datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        return cls(time=stamp, **fields)

    def line(self) -> str:
        """The entry as one JSON line (no newline)."""
        return json.dumps(asdict(self), ensure_ascii=False, separators=(", ", ": "))

    def sentence(self) -> str:
        """The entry for a person, e.g. ``2024-05-01T10:00:00.000Z alice from 10.0.0.7 closed run
        'job' (revision 12 -> 13).``"""
        who = self.user or "someone without sign-in"
        if self.client:
            who += f" from {self.client}"
        run = f"run {self.run_id!r}"
        if self.outcome == "closed":
            what = f"closed {run} (revision {self.revision_before} -> {self.revision_after})"
        elif self.outcome == "unchanged":
            what = f"closed {run}, which was closed already (revision {self.revision_before} unchanged)"
        else:
            reason = self.outcome.removeprefix("failed: ").rstrip(".")
            what = f"could not close {run}: {reason}"
        return f"{self.time} {who} {what}."


class AuditLog:
    """An append-only file of :class:`AuditEntry` lines (default :func:`default_audit_path`)."""

    def __init__(self, path: str | os.PathLike | None = None) -> None:
        self.path = Path(path).expanduser() if path is not None else default_audit_path()
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"AuditLog({str(self.path)!r})"

    def _open(self) -> int:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            return os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        except OSError as exc:
            raise AuditError(f"The audit log {self.path} cannot be written ({exc.strerror or exc}).") from None

    def check(self) -> None:
        """Make sure the file can be appended to (creating it if need be).

        Raises:
            AuditError: it cannot.
        """
        os.close(self._open())

    def record(self, entry: AuditEntry) -> AuditEntry:
        """Append ``entry`` and flush it to disk.

        Raises:
            AuditError: the file could not be written.
        """
        data = (entry.line() + "\n").encode()
        with self._lock:
            fd = self._open()
            try:
                os.write(fd, data)
                os.fsync(fd)
            except OSError as exc:
                raise AuditError(f"The audit log {self.path} cannot be written ({exc.strerror or exc}).") from None
            finally:
                os.close(fd)
        return entry

    def entries(self) -> list[AuditEntry]:
        """Every entry in the file, oldest first (none when it does not exist)."""
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return []
        return [AuditEntry(**json.loads(line)) for line in text.splitlines() if line.strip()]

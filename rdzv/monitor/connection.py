"""The monitor's connection status, from what each followed API's last request did."""

from __future__ import annotations

from datetime import datetime, timedelta

from ..text import age, utc_time
from .model import ConnectionStatus

#: How long "recovered" is shown after etcd answers again (unless a change arrives sooner).
RECOVERED_FOR = timedelta(seconds=10)


class ConnectionTracker:
    """Combines the health of every followed API into one :class:`ConnectionStatus`.

    etcd is "unreachable" while any followed API fails (since its earliest failure),
    "connecting" until some API answered, "recovered" for :data:`RECOVERED_FOR` after
    every API answers again (or until the next watched change), "connected" otherwise.
    Each method returns the new status when it differs from the current one, else
    ``None``. Not thread-safe: the monitor calls it under its lock.
    """

    def __init__(self, endpoint: str, apis: tuple[str, ...], now: datetime) -> None:
        self.endpoint = endpoint
        self._apis = set(apis)
        self._answered: set[str] = set()
        # api -> (failing since, reason, whether etcd answered with an error rather than not at all)
        self._failing: dict[str, tuple[datetime, str, bool]] = {}
        self._outage_began: datetime | None = None
        self._recovered_at: datetime | None = None
        self.status = ConnectionStatus("connecting", now, f"Connecting to etcd at {endpoint}.")

    def answered(self, api: str, now: datetime) -> ConnectionStatus | None:
        """``api`` answered a request."""
        self._answered.add(api)
        self._failing.pop(api, None)
        return self._refresh(now)

    def failed(self, api: str, reason: str, now: datetime, *, answered: bool = False) -> ConnectionStatus | None:
        """``api`` could not be reached, for ``reason`` (a few words); with ``answered``, etcd
        answered with an error and ``reason`` is its whole sentence."""
        since = self._failing.get(api, (now,))[0]
        self._failing[api] = (since, reason, answered)
        return self._refresh(now)

    def dropped(self, api: str, now: datetime) -> ConnectionStatus | None:
        """``api`` is not followed any more (the server does not offer it)."""
        self._apis.discard(api)
        self._answered.discard(api)
        self._failing.pop(api, None)
        return self._refresh(now)

    def changed(self, now: datetime) -> ConnectionStatus | None:
        """A watched change arrived: a recovery is over."""
        self._recovered_at = None
        return self._refresh(now)

    def tick(self, now: datetime) -> ConnectionStatus | None:
        """Time passed: a recovery shown long enough becomes "connected"."""
        if self._recovered_at is not None and now - self._recovered_at >= RECOVERED_FOR:
            self._recovered_at = None
        return self._refresh(now)

    def _refresh(self, now: datetime) -> ConnectionStatus | None:
        status = self._compute(now)
        if status.state == self.status.state and status.message == self.status.message:
            return None
        self.status = status
        return status

    def _outage_message(self, since: datetime) -> str:
        unanswered = sorted((api, reason) for api, (_, reason, answered) in self._failing.items() if not answered)
        if unanswered:
            reasons = "; ".join(f"{api}: {reason}" if len(self._apis) > 1 else reason for api, reason in unanswered)
            return (f"etcd at {self.endpoint} is unreachable since {utc_time(since)} ({reasons}); "
                    "the monitor keeps retrying and shows the last state it saw.")
        sentence = min(self._failing.items())[1][1]
        return f"{sentence.rstrip('.')} (since {utc_time(since)}; the monitor keeps retrying)."

    def _compute(self, now: datetime) -> ConnectionStatus:
        current = self.status
        if self._failing:
            since = min(moment for moment, _, _ in self._failing.values())
            if self._outage_began is None:
                self._outage_began = since
            return ConnectionStatus("unreachable", since, self._outage_message(since))
        if not self._answered:
            return current
        if self._outage_began is not None:
            outage = now - self._outage_began
            self._outage_began = None
            self._recovered_at = now
            return ConnectionStatus(
                "recovered", now,
                f"etcd at {self.endpoint} is reachable again since {utc_time(now)} after {age(outage)} "
                "away; the monitor re-read every run.",
            )
        if self._recovered_at is not None:
            return current
        since = current.since if current.state == "connected" else now
        apis = " and ".join(sorted(self._answered))
        plural = "s" if len(self._answered) > 1 else ""
        message = f"Connected to etcd at {self.endpoint}, following the {apis} API{plural}."
        return ConnectionStatus("connected", since, message)

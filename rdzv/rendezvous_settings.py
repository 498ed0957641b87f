"""The settings of a run's rendezvous handlers, as a viewer knows them: one value, no torch import.

torch's ``DynamicRendezvousHandler`` decides everything a viewer wants to explain from a few
settings (``dynamic_rendezvous.RendezvousSettings`` and ``RendezvousTimeout``): ``min_nodes`` and
``max_nodes`` (torchrun's ``--nnodes MIN:MAX``), ``join_timeout`` (600 s), ``last_call_timeout``
(30 s), ``close_timeout`` (30 s), ``keep_alive_interval`` (5 s) and ``keep_alive_max_attempt``
(3); the defaults are torch 2.13's ``create_handler``'s. None of them is in the state itself.

A node is *dead* by torch's rule (``_RendezvousStateHolder._sanitize``) when its last heartbeat
is older than ``keep_alive_interval * keep_alive_max_attempt``; the next handler that writes the
state removes it. That age, :attr:`RendezvousSettings.heartbeat_expiry`, is what "stale" means
everywhere in rdzv: the node table, ``rdzv status``, the diagnosis and the metrics.

:meth:`RendezvousSettings.given` names the settings that were actually provided (by flags, by a
plugin's published settings, by a demo cluster); the others are torch's defaults, which a viewer
may not assume a job uses.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Hashable, Mapping
from dataclasses import dataclass, field, fields, replace
from functools import cached_property
from datetime import datetime, timedelta
from typing import Any, TypeVar

_Node = TypeVar("_Node", bound=Hashable)

__all__ = ["DURATIONS", "RendezvousSettings", "SettingsError", "read_published_settings"]

logger = logging.getLogger(__name__)

#: The duration settings, in seconds, by their ``--rdzv-conf`` names.
DURATIONS = ("join_timeout", "last_call_timeout", "close_timeout", "keep_alive_interval")


class SettingsError(ValueError):
    """A rendezvous setting that cannot be used; the message is one sentence naming it."""


@dataclass(frozen=True)
class RendezvousSettings:
    """What a run's handlers were configured with (durations in seconds).

    ``given`` holds the names of the settings that were provided rather than defaulted.
    Raises :class:`SettingsError` for a value torch itself would refuse.
    """

    min_nodes: int | None = None
    max_nodes: int | None = None
    join_timeout: float = 600.0
    last_call_timeout: float = 30.0
    close_timeout: float = 30.0
    keep_alive_interval: float = 5.0
    keep_alive_max_attempt: int = 3
    given: frozenset[str] = field(default=frozenset(), compare=False)

    def __post_init__(self) -> None:
        for name in DURATIONS:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
                raise SettingsError(f"The rendezvous setting {name} must be a positive number of seconds, not {value!r}.")
            object.__setattr__(self, name, float(value))
        attempts = self.keep_alive_max_attempt
        if isinstance(attempts, bool) or not isinstance(attempts, int) or attempts < 1:
            raise SettingsError(f"The rendezvous setting keep_alive_max_attempt must be a whole number of at least 1, "
                                f"not {attempts!r}.")
        for name in ("min_nodes", "max_nodes"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise SettingsError(f"The rendezvous setting {name} must be a whole number of at least 1, not {value!r}.")
        if self.min_nodes is not None and self.max_nodes is not None and self.max_nodes < self.min_nodes:
            raise SettingsError(f"max_nodes ({self.max_nodes}) must be at least min_nodes ({self.min_nodes}); "
                                "torchrun's --nnodes is MIN:MAX.")
        unknown = set(self.given) - {f.name for f in fields(self) if f.name != "given"}
        if unknown:
            raise SettingsError(f"Unknown rendezvous settings named as given: {', '.join(sorted(unknown))}.")

    # -- what the settings decide ---------------------------------------------------

    @cached_property
    def heartbeat_expiry(self) -> timedelta:
        """How long after its last heartbeat torch counts a node as dead (interval x attempts)."""
        return timedelta(seconds=self.keep_alive_interval * self.keep_alive_max_attempt)

    def stale_after(self, last_heartbeat: datetime) -> datetime:
        """The moment after which a node last heard at ``last_heartbeat`` counts as dead
        (:meth:`is_stale` is true at every moment after it)."""
        return last_heartbeat + self.heartbeat_expiry

    def is_stale(self, last_heartbeat: datetime | None, now: datetime) -> bool:
        """Whether a node last heard at ``last_heartbeat`` counts as dead at ``now`` (torch's
        ``_sanitize``: strictly older than :attr:`heartbeat_expiry`). No heartbeat: not stale."""
        return last_heartbeat is not None and last_heartbeat < self.stale_cutoff(now)

    def stale_among(self, last_heartbeats: Mapping[_Node, datetime], now: datetime) -> frozenset[_Node]:
        """The nodes of ``last_heartbeats`` that :meth:`is_stale` counts as dead at ``now`` (the
        same rule, with the cut-off worked out once for all of them)."""
        cutoff = self.stale_cutoff(now)
        return frozenset(node for node, last in last_heartbeats.items() if last < cutoff)

    def stale_cutoff(self, now: datetime) -> datetime:
        """Heartbeats older than this (strictly) are stale at ``now``."""
        return now - self.heartbeat_expiry

    def knows(self, *names: str) -> bool:
        """Whether every setting in ``names`` was provided rather than defaulted."""
        return all(name in self.given for name in names)

    # -- where settings come from ---------------------------------------------------------

    @classmethod
    def provided(cls, **values: Any) -> RendezvousSettings:
        """Settings of which every one named in ``values`` counts as given."""
        return cls(**values, given=frozenset(values))

    @classmethod
    def from_torchrun(cls, nnodes: str | None = None, rdzv_conf: str | None = None) -> RendezvousSettings:
        """The settings torchrun would give its handlers for ``--nnodes`` (``N`` or ``MIN:MAX``)
        and ``--rdzv-conf`` (``key=value,...``); keys other than the settings above (``timeout``,
        ``read_timeout``, ``protocol``, ...) are accepted and ignored, as torch's handler does.
        """
        values: dict[str, Any] = {}
        if nnodes is not None and str(nnodes).strip():
            values.update(_parse_nnodes(str(nnodes).strip()))
        if rdzv_conf is not None and str(rdzv_conf).strip():
            for item in str(rdzv_conf).split(","):
                if not item.strip():
                    continue
                key, sep, value = item.partition("=")
                key = key.strip().replace("-", "_")
                if not sep:
                    raise SettingsError(f"--rdzv-conf takes key=value pairs separated by commas; {item.strip()!r} "
                                        "has no '='.")
                if key in DURATIONS:
                    values[key] = _number(key, value)
                elif key == "keep_alive_max_attempt":
                    values[key] = _whole(key, value)
        return cls.provided(**values)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RendezvousSettings:
        """The inverse of :meth:`to_dict`; unknown keys are ignored, bad values raise
        :class:`SettingsError` (published settings are read from etcd: never trusted)."""
        if not isinstance(data, Mapping):
            raise SettingsError("Published rendezvous settings must be a JSON object.")
        names = {f.name for f in fields(cls)} - {"given"}
        return cls.provided(**{key: data[key] for key in names if key in data and data[key] is not None})

    def to_dict(self) -> dict[str, Any]:
        """The provided settings only (defaults are not written down as facts)."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name in self.given}

    def merged(self, other: RendezvousSettings) -> RendezvousSettings:
        """These settings, with every setting ``other`` provided taking precedence."""
        values = {name: getattr(other, name) for name in other.given}
        return replace(self, **values, given=self.given | other.given)


def read_published_settings(text: str) -> RendezvousSettings | None:
    """The settings a run's handlers published as JSON ``text`` (:meth:`RendezvousSettings.to_dict`),
    or ``None`` when they are not valid settings: read from etcd, so never trusted, never fatal."""
    try:
        return RendezvousSettings.from_dict(json.loads(text))
    except (ValueError, TypeError, RecursionError) as exc:
        logger.warning("Ignoring published rendezvous settings that are not valid: %s", str(exc)[:200])
        return None


def _parse_nnodes(text: str) -> dict[str, int]:
    low, sep, high = text.partition(":")
    try:
        min_nodes = int(low)
        max_nodes = int(high) if sep else min_nodes
    except ValueError:
        raise SettingsError(f"--nnodes must be N or MIN:MAX, as torchrun takes it, not {text!r}.") from None
    return {"min_nodes": min_nodes, "max_nodes": max_nodes}


def _number(key: str, text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise SettingsError(f"--rdzv-conf {key} must be a number of seconds, not {text.strip()!r}.") from None


def _whole(key: str, text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise SettingsError(f"--rdzv-conf {key} must be a whole number, not {text.strip()!r}.") from None

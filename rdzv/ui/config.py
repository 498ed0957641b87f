"""The dashboard's settings, from ``panel serve app/dashboard.py --args ...``, ``rdzv dashboard``
and ``RDZV_*`` variables, through the one builder :mod:`rdzv.options`.

Command-line arguments win over environment variables. Every mistake raises :class:`ConfigError`
with one sentence saying what is wrong and what to do.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from ..kv import Target
from ..options import (
    DEFAULT_POLL_MS,
    SERVER_ONLY,
    OptionsError,
    Serving,
    add_dashboard_arguments,
    flag,
    resolve,
    resolve_serving,
)
from ..rendezvous_settings import RendezvousSettings


class ConfigError(ValueError):
    """A bad dashboard setting; the message is one sentence for the person who started it."""


@dataclass(frozen=True)
class DashboardConfig:
    """Where the dashboard looks and what it may do: ``replay`` (a recording file), else
    ``target``; neither means the demo."""

    target: Target | None = None
    replay: str | None = None
    run_id: str | None = None
    settings: RendezvousSettings = field(default_factory=RendezvousSettings)
    allow_writes: bool = False
    poll_ms: int = DEFAULT_POLL_MS
    serving: Serving = field(default_factory=Serving)
    """Sign-in, writers, audit log, HTTPS: who may see and do what. A served page applies it per
    visitor (:func:`rdzv.ui.auth.session_page`: ``--writers`` turns writes on for those names);
    a notebook's dashboard has one local user and follows ``allow_writes`` alone."""

    def __post_init__(self) -> None:
        if not 50 <= self.poll_ms <= 10_000:
            raise ConfigError(f"--poll-ms must be between 50 and 10000 milliseconds, not {self.poll_ms}.")

    @property
    def demo(self) -> bool:
        return self.target is None and self.replay is None


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one sentence instead of usage text and an exit
        raise ConfigError(f"The dashboard arguments are wrong: {message}; see `--help` for the accepted arguments.")

    def exit(self, status: int = 0, message: str | None = None) -> None:
        raise ConfigError(message.strip() if message else "The dashboard printed its help; start it without --help.")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="panel serve app/dashboard.py --args", add_help=True,
                     description="Live view of PyTorch elastic rendezvous runs on etcd; no endpoint starts the demo.")
    add_dashboard_arguments(parser)
    return parser


def config_from_args(args: argparse.Namespace | Mapping, environ: Mapping[str, str] | None = None, *,
                     spell=None) -> DashboardConfig:
    """The checked settings of parsed arguments (or a mapping of the same names) and ``environ``."""
    values = dict(vars(args) if isinstance(args, argparse.Namespace) else args)
    spelling = {"spell": spell} if spell else {}
    try:
        resolved = resolve(values, environ, **spelling)
        serving = resolve_serving(values, environ, **spelling)
    except OptionsError as exc:
        raise ConfigError(str(exc)) from None
    replay = values.get("replay") or None
    if replay is not None and values.get("allow_writes"):
        raise ConfigError("A replayed recording cannot be written to; drop --allow-writes (or --writers).")
    return DashboardConfig(target=resolved.target, run_id=resolved.run_id, settings=resolved.settings,
                           replay=replay, allow_writes=bool(values.get("allow_writes")),
                           poll_ms=values.get("poll_ms") or DEFAULT_POLL_MS,
                           serving=serving)


def parse_config(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> DashboardConfig:
    """The settings from ``argv`` (without the program name; what ``panel serve app/dashboard.py
    --args`` passes) and ``environ`` (default: os.environ).

    Sign-in, HTTPS and websocket origins are ``panel serve``'s own flags: given after ``--args``
    they could not take effect, so they are refused with a sentence saying where they go.
    """
    args = build_parser().parse_args(list(argv or []))
    misplaced = [name for name in SERVER_ONLY if getattr(args, name, None) is not None]
    if misplaced:
        name = flag(misplaced[0])
        raise ConfigError(f"{name} is panel serve's own flag and has no effect after --args; give it before "
                          f"(panel serve app/dashboard.py {name} ... --args ...), or use rdzv dashboard.")
    return config_from_args(args, environ)

"""What every ``rdzv`` subcommand shares: exit codes, the one-sentence failure, JSON output, and
turning flags plus ``RDZV_*`` variables into a target (through :mod:`rdzv.options`)."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass

from .kv import KVError, KVUnavailableError, Target
from .monitor import RunHistory, RunNotFoundError, history_of, read_run_history, replay
from .options import OptionsError, Resolved, resolve
from .recording import RecordingError
from .rendezvous_settings import RendezvousSettings

EXIT_OK = 0
EXIT_USAGE = 2
EXIT_UNREACHABLE = 3
EXIT_NOT_FOUND = 4
EXIT_UNDECODABLE = 5


class CommandError(Exception):
    """A failure to report as one sentence, with the exit code to use."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


def resolve_target(args: argparse.Namespace, *, timeout: float) -> tuple[Target, Resolved]:
    """The target (required) and the rest of the settings of a subcommand that reads etcd;
    ``timeout`` is its read timeout unless ``--timeout``/``RDZV_TIMEOUT`` gives one."""
    try:
        resolved = resolve(args, timeout=timeout)
    except OptionsError as exc:
        raise CommandError(str(exc), EXIT_USAGE) from None
    if resolved.target is None:
        raise CommandError("No etcd endpoint was given; pass --endpoint HOST:PORT or set RDZV_ENDPOINT.", EXIT_USAGE)
    return resolved.target, resolved


DEFAULT_LIMIT = 1000
"""Revisions read back unless ``--limit`` says otherwise."""


@dataclass(frozen=True)
class Story:
    """A run's history, the settings to explain it with (flags, ``RDZV_*`` and what its handlers
    published), and where it was read, in one phrase (``"etcd at host:2379 below /torch/elastic"``,
    ``"recording run.rdzv"``)."""

    history: RunHistory
    settings: RendezvousSettings
    source: str


def add_story_arguments(parser: argparse.ArgumentParser) -> None:
    """``--limit`` and ``--replay``, for the commands that tell a run's story."""
    parser.add_argument("--limit", type=int, default=DEFAULT_LIMIT,
                        help=f"read back at most this many revisions (default {DEFAULT_LIMIT})")
    parser.add_argument("--replay", metavar="FILE", help="read the story from a recording (rdzv record) "
                        "instead of etcd")


def read_story(args: argparse.Namespace, command: str, *, timeout: float) -> Story:
    """The story of the run the settings name: read back from etcd, or from ``--replay FILE``.

    Raises:
        CommandError: bad arguments or an unreadable recording (2), etcd unreachable (3), no such run (4).
    """
    if args.limit < 1:
        raise CommandError(f"--limit must be at least 1, not {args.limit}.", EXIT_USAGE)
    if args.replay:
        try:
            resolved = resolve(args, timeout=timeout)
        except OptionsError as exc:
            raise CommandError(str(exc), EXIT_USAGE) from None
    else:
        target, resolved = resolve_target(args, timeout=timeout)
    if resolved.run_id is None:
        raise CommandError(f"rdzv {command} needs a run: pass --run-id RUN or set RDZV_RUN_ID.", EXIT_USAGE)
    try:
        if args.replay:
            monitor = replay(args.replay)
            history, source = history_of(monitor, resolved.run_id), monitor.source
        else:
            history = read_run_history(target, resolved.run_id, args.limit)
            source = f"{target} below {target.prefix or '/'}"
    except RecordingError as exc:
        raise CommandError(str(exc), EXIT_USAGE) from None
    except KVUnavailableError as exc:
        raise CommandError(sentence(str(exc)), EXIT_UNREACHABLE) from None
    except RunNotFoundError as exc:
        raise CommandError(str(exc), EXIT_NOT_FOUND) from None
    except KVError as exc:
        raise CommandError(sentence(str(exc)), EXIT_UNREACHABLE) from None
    published = history.published
    settings = resolved.settings.merged(published) if published is not None else resolved.settings
    return Story(history, settings, source)


def print_json(data: object) -> None:
    json.dump(data, sys.stdout, indent=2, default=str)
    sys.stdout.write("\n")


def sentence(text: str) -> str:
    """``text`` as a sentence: stripped, ending with a period."""
    text = text.strip()
    return text if text.endswith(".") else text + "."


def clause(text: str) -> str:
    """``text`` as a clause inside a sentence: no final period."""
    return text.strip().rstrip(".")

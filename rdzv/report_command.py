"""``rdzv report``: one run's story as one self-contained HTML file (:func:`rdzv.report.render_report`).

It reads etcd once, as ``rdzv history`` does, renders the report and writes it atomically (a temp
file in the same directory, renamed over ``--out``), so a reader never sees half a report and a
failure leaves no partial file. Failures are one sentence with the exit codes of ``rdzv status``:
2 for bad arguments (no ``--out``, a directory that does not exist), 3 when etcd does not answer,
4 for an unknown run.

The story comes from etcd or, with ``--replay FILE``, from a recording (:func:`rdzv.command_line.read_story`).
"""

from __future__ import annotations

import argparse
import os
import tempfile
from datetime import datetime
from pathlib import Path

from .command_line import EXIT_OK, EXIT_USAGE, CommandError, Story, add_story_arguments, clause, read_story
from .report import render_report
from .status_command import READ_TIMEOUT
from .text import printable, utc_now


def add_report_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", metavar="FILE", help="the HTML file to write, e.g. report.html (required)")
    add_story_arguments(parser)


def run_report(args: argparse.Namespace) -> int:
    """Write the report of the run to ``--out``; print where it is; return the exit code."""
    out = output_path(args.out)
    story = read_story(args, "report", timeout=READ_TIMEOUT)
    path, size = write_report(story, out)
    print(f"Wrote the report of run {printable(story.history.run_id)} ({len(story.history.revisions)} revisions, "
          f"{_size(size)}) to {printable(str(path))}")
    return EXIT_OK


def output_path(out: str | None) -> Path:
    """``--out`` as an absolute path, once its directory exists and it is not a directory itself.

    Raises:
        CommandError: (exit 2) no ``--out``, or one that cannot be written.
    """
    if not out:
        raise CommandError("rdzv report needs a file to write: pass --out FILE, e.g. --out report.html.", EXIT_USAGE)
    path = Path(out).expanduser().absolute()
    if path.is_dir():
        raise CommandError(f"--out {printable(out)} is a directory; name a file in it, e.g. "
                           f"{printable(str(path / 'report.html'))}.", EXIT_USAGE)
    directory = path.parent
    if not directory.is_dir():
        raise CommandError(f"Cannot write --out {printable(out)}: the directory {printable(str(directory))} "
                           "does not exist.", EXIT_USAGE)
    if not os.access(directory, os.W_OK | os.X_OK):
        raise CommandError(f"Cannot write --out {printable(out)}: the directory {printable(str(directory))} "
                           "is not writable.", EXIT_USAGE)
    return path


def write_report(story: Story, out: Path, generated_at: datetime | None = None) -> tuple[Path, int]:
    """Render ``story`` and write it to ``out`` atomically; return the path and its size in bytes.

    Raises:
        CommandError: (exit 2) the file could not be written.
    """
    document = render_report(story.history, story.settings, source=story.source,
                             generated_at=generated_at or utc_now()).encode("utf-8")
    try:
        write_atomically(out, document)
    except OSError as exc:
        raise CommandError(f"Cannot write --out {printable(str(out))}: {clause(exc.strerror or str(exc))}.",
                           EXIT_USAGE) from None
    return out, len(document)


def write_atomically(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temp file in its directory, renamed over it once
    complete and synced; the file gets the permissions a new file gets (the umask's)."""
    descriptor, temp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fchmod(handle.fileno(), 0o666 & ~_umask())
            os.fsync(handle.fileno())
        os.replace(temp, path)
    except BaseException:
        try:
            os.unlink(temp)
        except FileNotFoundError:
            pass
        raise


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _size(size: int) -> str:
    return f"{size} bytes" if size < 1024 else f"{size / 1024:.0f} KiB" if size < 1024 ** 2 else \
        f"{size / 1024 ** 2:.1f} MiB"

"""The recording file: every revision of a cluster's runs and store, kept on disk as it happens.

A recording outlives etcd: it holds what etcd held (the text of each key at each revision, as
the KV layer returns it, so states stay base64 text), when it was seen, and on which API. It is
replayed without etcd, through the same safe decoder as live data; this module never decodes a
state and reads nothing but strings, numbers and booleans from the file.

Format, one record per line::

    <compact JSON, ASCII only>\\t<CRC32 of the JSON bytes, 8 lowercase hex digits>\\n

The first line is the header ``{"format": "rdzv-recording", "version": 1, "endpoint": ...,
"prefix": ..., "started_at": ...}``; every later line is one :class:`RecordedEvent`. Datetimes are
ISO 8601 in UTC with an explicit offset. Any change to what a line holds bumps :data:`VERSION`;
a reader refuses a newer version (and asks for an upgrade) rather than guess.

Durability: :class:`Recorder` writes each line with one ``os.write`` on an ``O_APPEND`` file
descriptor, with no userspace buffer, so once :meth:`Recorder.write` returns the record is in
the kernel and survives a SIGKILL of the recorder; a kill *during* the write can leave only a
prefix of that one line (a "torn tail", without its newline). It does not ``fsync`` each record
(a power cut may lose the last records the kernel had not written out yet); :meth:`Recorder.close`
does.

Damage: :func:`load_recording` loads every intact record up to the first damaged line and says
in :attr:`Recording.damage` where and why it stopped. Every single-bit flip is caught (CRC32);
a torn tail reads as "cut short".

Appending: reopening an existing recording validates it first. A torn tail (the last line has
no newline) is truncated away, since it is a record the killed recorder never finished and
nothing can read; the next record then starts where the last complete one ended, so after a
kill and a restart the whole file reads cleanly again. Any other damage makes the
:class:`Recorder` refuse to append (records after the damage could never be read back), as
does a file that is not a recording, a newer version, or a recording of another endpoint or
prefix; a refused file is left exactly as it was. One recorder at a time: the file is locked
(``flock``) while a :class:`Recorder` has it open.
"""

from __future__ import annotations

import errno
import json
import os
import re
import stat
import threading
import zlib
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, NoReturn

from .state import MAX_STATE_BYTES

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX: no lock, the rest works
    fcntl = None  # type: ignore[assignment]

__all__ = [
    "FORMAT",
    "MAX_HEADER_BYTES",
    "MAX_RECORD_BYTES",
    "VERSION",
    "RecordedEvent",
    "Recorder",
    "Recording",
    "RecordingError",
    "load_recording",
]

FORMAT = "rdzv-recording"
VERSION = 1

_MiB = 1024 * 1024
_MAX_STATE_BASE64 = (MAX_STATE_BYTES + 2) // 3 * 4
MAX_RECORD_BYTES = 1 << (_MAX_STATE_BASE64 + _MiB).bit_length()
"""The longest record line (JSON, tab, checksum and newline) written or read: 128 MiB. The largest
state the decoder accepts is 64 MiB pickled, 85.3 MiB as base64; this is the next power of two
above that plus 1 MiB for the key and the other fields. A longer line is refused as damage
without being read whole, and :meth:`Recorder.write` refuses an event whose line would be longer."""

MAX_HEADER_BYTES = _MiB
"""The longest header line read; a longer first line means the file is not a recording."""

_API = ("v2", "v3")
_KINDS = ("put", "delete")
_MAX_REVISION = 2**63 - 1  # etcd revisions are int64
_MAX_DATETIME_CHARS = 64
_EVENT_FIELDS = ("api", "key", "kind", "value", "revision", "seen_at", "read_back", "time_estimated")
_HEADER_FIELDS = ("format", "version", "endpoint", "prefix", "started_at")
_HEADER_START = b'{"format":"' + FORMAT.encode() + b'"'

_CHECKSUM = re.compile(rb"[0-9a-f]{8}")
# A JSON string literal, or an unterminated one up to the end: every attempt that starts at a
# quote succeeds, so substituting these is linear in the line length however hostile the line.
_STRING = re.compile(rb'"[^"\\]*(?:\\(?:.|\Z)[^"\\]*)*(?:"|\Z)', re.DOTALL)
# What a record holds outside its strings (braces, colons, commas, numbers, true/false/null):
# about 70 bytes. Refusing more bounds the objects json.loads may build from one line.
_MAX_SKELETON_BYTES = 512


class RecordingError(ValueError):
    """A recording cannot be read, or cannot be written to; the message is one sentence saying
    what happened and what to do."""


@dataclass(frozen=True, slots=True)
class RecordedEvent:
    """One change of one etcd key, as recorded.

    ``value`` is the text etcd held, exactly as the KV layer returns it (a state is base64 text;
    bytes that are not UTF-8 are surrogate escapes), ``None`` for a delete. ``revision`` is the v2
    ``modifiedIndex`` or the v3 ``mod_revision``. ``seen_at`` (UTC) is when the recorder saw the
    change, or, when ``time_estimated``, an estimate of when it was written; ``read_back`` marks a
    revision read back from etcd's history rather than seen live.
    """

    api: str
    key: str
    kind: str
    value: str | None
    revision: int
    seen_at: datetime
    read_back: bool = False
    time_estimated: bool = False


@dataclass(frozen=True)
class Recording:
    """A loaded recording: its header and every event up to the first damaged record.

    ``damage`` is ``None`` when the whole file read cleanly, else one sentence saying where
    reading stopped (byte offset and record number, counting events from 1 after the header)
    and why.
    """

    endpoint: str
    prefix: str
    started_at: datetime
    events: tuple[RecordedEvent, ...]
    damage: str | None
    path: str


# -- encoding ---------------------------------------------------------------------------------


def _line(obj: dict[str, Any]) -> bytes:
    data = json.dumps(obj, ensure_ascii=True, separators=(",", ":"), allow_nan=False).encode("ascii")
    return data + b"\t%08x\n" % zlib.crc32(data)


def _iso(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).isoformat(timespec="microseconds")


def _is_etcd_text(text: str) -> bool:
    """Whether ``text`` is what the KV layer can hold: UTF-8, with undecodable bytes as surrogate
    escapes (so no other lone surrogate, which JSON could not carry back unchanged)."""
    try:
        text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        return False
    return True


def _field_problem(
    api: Any, key: Any, kind: Any, value: Any, revision: Any, read_back: Any, time_estimated: Any
) -> tuple[str, str] | None:
    """``(field, what is wrong with it)`` for the first bad one of these event fields; ``None`` if none."""
    if not (isinstance(api, str) and api in _API):
        return "api", 'is not "v2" or "v3"'
    if not (isinstance(key, str) and key and _is_etcd_text(key)):
        return "key", "is not a non-empty etcd key"
    if not (isinstance(kind, str) and kind in _KINDS):
        return "kind", 'is not "put" or "delete"'
    if kind == "delete" and value is not None:
        return "value", "is not null, although the event is a delete"
    if kind == "put" and not (isinstance(value, str) and _is_etcd_text(value)):
        return "value", "is not etcd text, although the event is a put"
    if not (type(revision) is int and 0 <= revision <= _MAX_REVISION):
        return "revision", "is not a whole number from 0 to 2**63 - 1"
    if type(read_back) is not bool:
        return "read_back", "is not true or false"
    if type(time_estimated) is not bool:
        return "time_estimated", "is not true or false"
    return None


# -- decoding ---------------------------------------------------------------------------------


class _Bad(Exception):
    """Internal: a line is unreadable; ``predicate`` completes "the record ..." or "its header ..."."""

    def __init__(self, predicate: str, cut_short: bool = False) -> None:
        super().__init__(predicate)
        self.predicate = predicate
        self.cut_short = cut_short


_CUT_SHORT = "is cut short, as when the recorder was killed while writing"
_NO_CHECKSUM = "does not end in a checksum, so the file was changed or corrupted here"
_CHECKSUM_MISMATCH = "has a checksum that does not match its contents, so the file was changed or corrupted here"
_NOT_JSON = "is not a JSON object of the recording format"


def _size_text(size: int) -> str:
    return f"{size // _MiB} MiB" if size % _MiB == 0 else f"{size} bytes"


def _too_long(limit: int) -> str:
    return f"is longer than the {_size_text(limit)} a record may take"


def _skeleton_size(data: bytes) -> int:
    """How many bytes of ``data`` lie outside JSON string literals."""
    if b"\\" not in data and data.count(b'"') <= 64:  # no escapes: quotes pair up (a state value, fast)
        return sum(map(len, data.split(b'"')[0::2]))
    return len(_STRING.sub(b"", data))


def _parse_line(line: bytes) -> dict[str, Any]:
    """The JSON object of one complete line (ending in a newline), checksum verified."""
    body = line[:-1]
    if len(body) < 9 or body[-9] != 0x09 or not _CHECKSUM.fullmatch(body, len(body) - 8):
        raise _Bad(_NO_CHECKSUM)
    data = body[:-9]
    if zlib.crc32(data) != int(body[-8:], 16):
        raise _Bad(_CHECKSUM_MISMATCH)
    if _skeleton_size(data) > _MAX_SKELETON_BYTES:
        raise _Bad(_NOT_JSON)
    try:
        obj = json.loads(data.decode("utf-8"))
    except (ValueError, RecursionError):
        raise _Bad(_NOT_JSON) from None
    if not isinstance(obj, dict):
        raise _Bad(_NOT_JSON)
    return obj


def _check_names(obj: dict[str, Any], names: tuple[str, ...]) -> None:
    for name in names:
        if name not in obj:
            raise _Bad(f"has no field {name!r}")
    for name in obj:
        if name not in names:
            raise _Bad(f"has an unknown field {name[:40]!a}")


def _parse_datetime(text: Any, name: str) -> datetime:
    problem = _Bad(f"has a field {name!r} that is not an ISO 8601 time with a time zone")
    if not isinstance(text, str) or len(text) > _MAX_DATETIME_CHARS:
        raise problem
    try:
        moment = datetime.fromisoformat(text)
        if moment.utcoffset() is None:
            raise problem
        return moment.astimezone(timezone.utc)
    except (ValueError, OverflowError):
        raise problem from None


def _parse_event(line: bytes) -> RecordedEvent:
    obj = _parse_line(line)
    _check_names(obj, _EVENT_FIELDS)
    problem = _field_problem(
        obj["api"], obj["key"], obj["kind"], obj["value"], obj["revision"], obj["read_back"], obj["time_estimated"]
    )
    if problem is not None:
        raise _Bad(f"has a field {problem[0]!r} that {problem[1]}")
    return RecordedEvent(
        api=obj["api"], key=obj["key"], kind=obj["kind"], value=obj["value"], revision=obj["revision"],
        seen_at=_parse_datetime(obj["seen_at"], "seen_at"), read_back=obj["read_back"],
        time_estimated=obj["time_estimated"],
    )


@dataclass(frozen=True)
class _Header:
    endpoint: str
    prefix: str
    started_at: datetime


@dataclass(frozen=True)
class _Damage:
    offset: int  # byte offset of the damaged line
    record: int  # its number, counting events from 1
    predicate: str
    cut_short: bool

    def sentence(self) -> str:
        loaded = self.record - 1
        if loaded == 0:
            before = "no record before it was loaded"
        elif loaded == 1:
            before = "the one record before it was loaded"
        else:
            before = f"the {loaded} records before it were loaded"
        return (
            f"The recording stops being readable at byte {self.offset} (record {self.record}): "
            f"the record {self.predicate}; {before}."
        )


class _HeaderProblem(Exception):
    """Internal: the file has no usable header; ``what`` happened, and ``newer`` when an upgrade helps."""

    def __init__(self, what: str, kind: str) -> None:
        super().__init__(what)
        self.what = what
        self.kind = kind  # "newer", "damaged" or "other"

    def for_reading(self) -> RecordingError:
        if self.kind == "newer":
            return RecordingError(f"{self.what}; upgrade rdzv to read it.")
        if self.kind == "damaged":
            return RecordingError(f"{self.what}, so it cannot be read; pick an intact copy of it.")
        return RecordingError(f"{self.what}; pick a file written by `rdzv record`.")

    def for_appending(self) -> RecordingError:
        todo = "upgrade rdzv or record into another file" if self.kind == "newer" else "record into another file"
        return RecordingError(f"{self.what}, so nothing was appended to it; {todo}.")


def _read_header(file, path: str) -> tuple[_Header, int]:
    """The header and its length in bytes; :class:`_HeaderProblem` if there is none."""
    line = file.readline(MAX_HEADER_BYTES + 1)
    if not line:
        raise _HeaderProblem(f"The file {path} is empty, so it is not a recording", "other")
    looks_like_one = _HEADER_START.startswith(line[: len(_HEADER_START)])  # a header, or what is left of one
    try:
        if len(line) > MAX_HEADER_BYTES:
            raise _Bad(_too_long(MAX_HEADER_BYTES))
        if not line.endswith(b"\n"):
            raise _Bad(_CUT_SHORT, cut_short=True)
        obj = _parse_line(line)
        if obj.get("format") != FORMAT:
            looks_like_one = False
            raise _Bad(_NOT_JSON)
        version = obj.get("version")
        if type(version) is int and version > VERSION:
            raise _HeaderProblem(
                f"The file {path} was recorded by a newer rdzv (recording format version {version}; this rdzv "
                f"reads version {VERSION} and older)", "newer",
            )
        if version != VERSION:
            raise _Bad("has a field 'version' that is not a known version")
        _check_names(obj, _HEADER_FIELDS)
        for name in ("endpoint", "prefix"):
            if not isinstance(obj[name], str):
                raise _Bad(f"has a field {name!r} that is not text")
        header = _Header(obj["endpoint"], obj["prefix"], _parse_datetime(obj["started_at"], "started_at"))
    except _Bad as bad:
        if looks_like_one:
            raise _HeaderProblem(
                f"The file {path} starts like an rdzv recording, but its header {bad.predicate}", "damaged"
            ) from None
        raise _HeaderProblem(
            f"The file {path} is not an rdzv recording (its first line is not a recording header)", "other"
        ) from None
    return header, len(line)


def _scan(file, path: str, keep: bool) -> tuple[_Header, list[RecordedEvent], int, _Damage | None]:
    """Read a recording from the start: header, events (only when ``keep``), the number of intact
    records, and the first damage (``None`` when the file read cleanly to its end)."""
    header, offset = _read_header(file, path)
    limit = MAX_RECORD_BYTES
    events: list[RecordedEvent] = []
    count = 0
    while line := file.readline(limit + 1):
        try:
            if len(line) > limit:
                raise _Bad(_too_long(limit))
            if not line.endswith(b"\n"):
                raise _Bad(_CUT_SHORT, cut_short=True)
            event = _parse_event(line)
        except _Bad as bad:
            return header, events, count, _Damage(offset, count + 1, bad.predicate, bad.cut_short)
        if keep:
            events.append(event)
        count += 1
        offset += len(line)
    return header, events, count, None


def _unreadable(path: str, exc: OSError) -> NoReturn:
    if isinstance(exc, FileNotFoundError):
        raise RecordingError(f"There is no recording at {path}; check the path.") from None
    raise RecordingError(
        f"The recording {path} cannot be read ({exc.strerror or exc}); check the path and its permissions."
    ) from None


def load_recording(path: str | os.PathLike) -> Recording:
    """Load the recording at ``path``: every intact record up to the first damaged one.

    Only strings, numbers and booleans are read; states stay base64 text for the safe decoder.

    Raises:
        RecordingError: the file is missing, unreadable, empty, not a recording (no valid header),
            or from a newer format version. Damage after the header is not an error: the records
            before it are returned and :attr:`Recording.damage` says where reading stopped.
    """
    name = os.fsdecode(os.fspath(path))
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))  # a FIFO must not hang the open
        try:
            mode = os.fstat(fd).st_mode
            if stat.S_ISDIR(mode):
                raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR))
            if not stat.S_ISREG(mode):
                raise RecordingError(
                    f"The path {name} is not a regular file, so it is not a recording; pick a recording file."
                )
            os.set_blocking(fd, True)
            file = open(fd, "rb")  # noqa: SIM115 - closed by the with below
        except BaseException:
            os.close(fd)
            raise
        with file:
            header, events, _, damage = _scan(file, name, keep=True)
    except _HeaderProblem as problem:
        raise problem.for_reading() from None
    except OSError as exc:
        _unreadable(name, exc)
    return Recording(
        endpoint=header.endpoint, prefix=header.prefix, started_at=header.started_at, events=tuple(events),
        damage=None if damage is None else damage.sentence(), path=name,
    )


# -- writing ----------------------------------------------------------------------------------


class Recorder:
    """Appends :class:`RecordedEvent` records to a recording file, each durable on return.

    Creates the file (or fills an empty one) with a header; an existing recording is validated
    and appended to (see the module docstring: a torn tail is dropped, any other problem refused
    with :class:`RecordingError` and the file left unchanged). ``endpoint`` and ``prefix`` are
    what the header says is recorded; appending to a recording of another endpoint or prefix is
    refused.

    Attributes:
        path: the file, as text.
        count: records written by this recorder (not counting the header or earlier records).
        existing_records: intact records the file held when it was opened.
        torn_bytes_dropped: the size of the torn tail truncated away on opening (0 if none).
        started_at: when the recording began (the header's time, for an existing recording).

    Opening an existing recording reads and checks all of it once (as :func:`load_recording`
    does, at a few hundred MB/s) before the first record is appended.

    Thread-safe; usable as a context manager; :meth:`close` may be called more than once.
    """

    def __init__(self, path: str | os.PathLike, *, endpoint: str, prefix: str) -> None:
        if not isinstance(endpoint, str) or not isinstance(prefix, str):
            raise RecordingError("A recorder's endpoint and prefix are text; pass them as str.")
        self.path = os.fsdecode(os.fspath(path))
        self.endpoint = endpoint
        self.prefix = prefix
        self.count = 0
        self.existing_records = 0
        self.torn_bytes_dropped = 0
        self._lock = threading.Lock()
        try:
            flags = os.O_RDWR | os.O_APPEND | os.O_CREAT | getattr(os, "O_CLOEXEC", 0)
            self._fd: int | None = os.open(path, flags, 0o644)
        except OSError as exc:
            raise RecordingError(
                f"Cannot open {self.path} to record into ({exc.strerror or exc}); pick a writable path."
            ) from None
        try:
            status = os.fstat(self._fd)
            if not stat.S_ISREG(status.st_mode):
                raise RecordingError(f"The path {self.path} is not a regular file; record into a file.")
            self._lock_file()
            self._size = os.fstat(self._fd).st_size
            if self._size == 0:
                self.started_at = datetime.now(timezone.utc)
                self._append(_line({
                    "format": FORMAT, "version": VERSION, "endpoint": endpoint, "prefix": prefix,
                    "started_at": _iso(self.started_at),
                }))
            else:
                self._open_existing()
        except BaseException:
            os.close(self._fd)
            self._fd = None
            raise

    def _lock_file(self) -> None:
        if fcntl is None:  # pragma: no cover
            return
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RecordingError(
                f"Another recorder is writing {self.path}; stop it first or record into another file."
            ) from None
        except OSError:  # a file system without locks: record anyway
            pass

    def _open_existing(self) -> None:
        try:
            with open(os.dup(self._fd), "rb") as file:
                header, _, count, damage = _scan(file, self.path, keep=False)
        except _HeaderProblem as problem:
            raise problem.for_appending() from None
        except OSError as exc:
            raise RecordingError(
                f"Cannot read {self.path} before appending to it ({exc.strerror or exc}), so nothing was appended "
                "to it; check its permissions."
            ) from None
        if (header.endpoint, header.prefix) != (self.endpoint, self.prefix):
            raise RecordingError(
                f"The file {self.path} is a recording of {header.endpoint!r} under {header.prefix!r}, not of "
                f"{self.endpoint!r} under {self.prefix!r}, so nothing was appended to it; record into another file."
            )
        if damage is not None and not damage.cut_short:
            raise RecordingError(
                f"The file {self.path} is damaged at byte {damage.offset} (record {damage.record}) and records "
                "appended after that could never be read back, so nothing was appended to it; record into another file."
            )
        if damage is not None:
            try:
                os.ftruncate(self._fd, damage.offset)
            except OSError as exc:
                raise RecordingError(
                    f"Cannot cut the torn last record off {self.path} ({exc.strerror or exc}); check that the file "
                    "is writable."
                ) from None
            self.torn_bytes_dropped = self._size - damage.offset
            self._size = damage.offset
        self.existing_records = count
        self.started_at = header.started_at

    def _append(self, line: bytes) -> None:
        """Write ``line`` at the end: one ``os.write`` (more only if the kernel takes a part);
        on failure the partial line is cut off again, so the file stays readable."""
        assert self._fd is not None
        view = memoryview(line)
        try:
            while view:
                view = view[os.write(self._fd, view):]
        except OSError as exc:
            try:
                os.ftruncate(self._fd, self._size)
            except OSError:
                self._close()  # a torn line may remain: refuse to write after it
                raise RecordingError(
                    f"Writing to {self.path} failed ({exc.strerror or exc}) and the partial record could not be "
                    "removed; the recorder stopped, and reopening the file drops that record."
                ) from None
            raise RecordingError(
                f"Writing to {self.path} failed ({exc.strerror or exc}); the record was not written, so free space "
                "or pick another file."
            ) from None
        self._size += len(line)

    def write(self, event: RecordedEvent) -> None:
        """Append one event; when this returns, the record survives a SIGKILL of this process.

        Raises:
            RecordingError: the recorder is closed, the event is not valid (its fields are checked
                as the loader checks them), its line would exceed :data:`MAX_RECORD_BYTES`, or the
                write failed (then nothing of it stays in the file).
        """
        if not isinstance(event, RecordedEvent):
            raise RecordingError(f"Only a RecordedEvent can be recorded, not a {type(event).__name__}.")
        problem = _field_problem(
            event.api, event.key, event.kind, event.value, event.revision, event.read_back, event.time_estimated
        )
        if problem is None and not (isinstance(event.seen_at, datetime) and event.seen_at.utcoffset() is not None):
            problem = "seen_at", "is not a datetime with a time zone"
        if problem is not None:
            raise RecordingError(f"The event cannot be recorded: its {problem[0]!r} field {problem[1]}.")
        try:
            seen_at = _iso(event.seen_at)
        except OverflowError:
            raise RecordingError(
                "The event cannot be recorded: its 'seen_at' is out of the range of UTC times."
            ) from None
        line = _line({
            "api": event.api, "key": event.key, "kind": event.kind, "value": event.value,
            "revision": event.revision, "seen_at": seen_at, "read_back": event.read_back,
            "time_estimated": event.time_estimated,
        })
        limit = MAX_RECORD_BYTES
        if len(line) > limit:
            raise RecordingError(
                f"The event of {event.key[:80]!a} at revision {event.revision} takes {len(line)} bytes, more "
                f"than the {_size_text(limit)} a record may take, so it was not recorded."
            )
        with self._lock:
            if self._fd is None:
                raise RecordingError(f"The recorder of {self.path} is closed; open a new Recorder to write.")
            self._append(line)
            self.count += 1

    @property
    def closed(self) -> bool:
        return self._fd is None

    def _close(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            try:
                os.fsync(fd)
            except OSError:
                pass
            finally:
                os.close(fd)  # releases the lock

    def close(self) -> None:
        """Flush the file to disk and close it (releasing the lock); later calls do nothing."""
        with self._lock:
            self._close()

    def __enter__(self) -> Recorder:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self.closed else "open"
        return f"Recorder({self.path!r}, {state}, {self.count} records written)"

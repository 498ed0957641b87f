"""The one protocol through which rdzv talks to etcd.

Everything above this layer (the store, the rendezvous backend, the monitor,
the dashboard) uses only :class:`KV`; the v2 and v3 APIs each implement it once.

Values are text (``str``). rdzv keeps torch's layout on both APIs: store keys
and values, and rendezvous states, are base64 text, so a v2 and a v3 keyspace
read alike.

Every value carries its *revision*: the v2 ``modifiedIndex`` or the v3
``mod_revision``. A revision is what compare-and-swap compares against and
what a watch starts from.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from typing import Literal


class KVError(Exception):
    """Base of every error raised by a :class:`KV` implementation."""


class KVUnavailableError(KVError):
    """etcd could not be reached (refused, timed out, or every member is down).

    ``endpoint`` is the endpoint list tried, ``reason`` a few words saying why
    ("connection refused"), and ``members`` maps each member tried to its own reason.
    """

    def __init__(self, message: str, *, endpoint: str | None = None, reason: str | None = None,
                 members: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.endpoint = endpoint
        self.reason = reason or message.rstrip(".")
        self.members = dict(members or {})


class KVCompactedError(KVError):
    """A watch asked for a revision etcd no longer keeps.

    v2 keeps only its last 1,000 events ("event index cleared"); v3 drops
    revisions older than its last compaction. The caller must re-list and
    watch again from the revision the listing returns.
    """

    def __init__(self, message: str, *, current_revision: int | None = None, oldest_revision: int | None = None
                 ) -> None:
        super().__init__(message)
        self.current_revision = current_revision
        #: The oldest revision etcd still keeps, when it said so.
        self.oldest_revision = oldest_revision


def read_back_result(found: list[Event], complete_from: int | None, limit: int) -> ReadBack:
    """The :class:`ReadBack` of the events ``found`` (oldest first): from the key's last creation
    on, if one was seen (then nothing before it is missing), and at most the newest ``limit``."""
    created = [index for index, event in enumerate(found) if event.created]
    if created:
        found, complete_from = found[created[-1]:], None
    kept = found[-limit:] if limit > 0 else []
    return ReadBack(tuple(kept), complete_from, limited=len(kept) < len(found))


READ_BACK_WAIT = 2.0
"""Seconds a read-back watch waits for the next event of a key it knows has one."""


@dataclass(frozen=True, slots=True)
class KeyValue:
    """One key as etcd holds it: its full path, its text value, its revision."""

    key: str
    value: str
    revision: int


@dataclass(frozen=True, slots=True)
class Event:
    """One change seen by a watch.

    ``kind`` is ``"put"`` for any write (create, set, compare-and-swap) and
    ``"delete"`` for a delete or a TTL expiry; ``value`` is ``None`` for a delete.
    ``created``: this put created the key, when the API says so (v3 always; v2 for a
    create-if-absent write); it is not part of an event's equality.
    """

    kind: Literal["put", "delete"]
    key: str
    value: str | None
    revision: int
    created: bool = field(default=False, compare=False)


@dataclass(frozen=True, slots=True)
class ReadBack:
    """A key's earlier revisions that etcd still kept, oldest first (puts and deletes).

    ``complete_from``: the story is complete from this revision on; ``None`` when nothing
    before the first event was lost (the key's history starts there). ``limited``: older
    revisions may exist but were not read, because ``limit`` were already.
    """

    events: tuple[Event, ...]
    complete_from: int | None
    limited: bool


@dataclass(frozen=True, slots=True)
class Listing:
    """The keys under a prefix and the store-wide revision at which they were read.

    Watching from ``revision + 1`` sees every change made after the listing.
    """

    items: tuple[KeyValue, ...]
    revision: int


class KV(abc.ABC):
    """A key-value view of one etcd cluster (any of its members).

    Every method raises :class:`KVUnavailableError` when etcd cannot be
    reached within the client's read timeout; none of them hangs longer than
    that (``watch`` waits at most its own ``timeout``).
    """

    #: ``"v2"`` or ``"v3"``.
    api: str

    #: The endpoints this client talks to, as ``host:port[,host:port...]``.
    endpoint: str

    @abc.abstractmethod
    def get(self, key: str) -> KeyValue | None:
        """Return the key, or ``None`` when it does not exist. One request."""

    @abc.abstractmethod
    def get_or_revision(self, key: str) -> KeyValue | int:
        """Return the key, or when it is absent the store-wide revision at the read.

        Watching from the returned revision ``+ 1`` sees the key appear. One request.
        """

    @abc.abstractmethod
    def create(self, key: str, value: str, ttl: int | None = None) -> tuple[bool, KeyValue]:
        """Write the key only if it does not exist.

        Returns ``(True, written)`` when it was created, otherwise
        ``(False, current)`` with the value that was already there.
        """

    @abc.abstractmethod
    def compare_and_swap(
        self, key: str, value: str, revision: int, ttl: int | None = None
    ) -> tuple[bool, KeyValue | None]:
        """Write the key only if its revision is still ``revision``.

        Returns ``(True, written)`` on success, otherwise ``(False, current)``
        where ``current`` is the value now held (``None`` if the key is gone).
        """

    @abc.abstractmethod
    def put(self, key: str, value: str, ttl: int | None = None) -> KeyValue:
        """Write the key unconditionally. ``ttl`` (seconds) makes it expire ``ttl``
        seconds after this write; ``None`` means it never expires."""

    @abc.abstractmethod
    def delete(self, key: str) -> bool:
        """Delete the key. Returns whether it existed."""

    @abc.abstractmethod
    def list(self, prefix: str) -> Listing:
        """Return every key below ``prefix`` (recursively), with the read's revision.

        ``prefix`` names a directory: ``"/a/b"`` lists ``/a/b/...``, not ``/a/bc``.
        A prefix with nothing below it gives an empty listing, not an error.
        """

    @abc.abstractmethod
    def watch(self, prefix: str, start_revision: int, timeout: float) -> list[Event]:
        """Wait up to ``timeout`` seconds for changes below ``prefix`` (or to the key
        ``prefix`` itself) with revision ``>= start_revision``.

        Returns the events in revision order as soon as there is at least one
        (possibly several), or ``[]`` when the timeout passes first. Raises
        :class:`KVCompactedError` when ``start_revision`` is older than etcd keeps.
        """

    def read_back(self, key: str, before_revision: int, limit: int) -> ReadBack:
        """The revisions of ``key`` older than ``before_revision`` (the key's revision now, as a
        listing gave it) that etcd still keeps: at most the newest ``limit``, oldest first.

        This default replays watches forward from the oldest revision etcd keeps (v2 keeps
        its last 1,000 events of the whole store), one request per event of the key.
        """
        found: list[Event] = []
        start, complete_from = 1, None
        while start < before_revision:
            try:
                batch = self.watch(key, start, timeout=READ_BACK_WAIT)
            except KVCompactedError as exc:
                oldest = exc.oldest_revision or exc.current_revision or before_revision
                if oldest <= start:  # no progress is possible: say where the story is complete from
                    complete_from = before_revision
                    break
                start = complete_from = oldest
                continue
            mine = [event for event in batch if event.key == key and event.revision < before_revision]
            found.extend(mine)
            if not batch or len(mine) < len(batch) and batch[-1].revision >= before_revision:
                break
            start = batch[-1].revision + 1
        return read_back_result(found, complete_from, limit)

    @abc.abstractmethod
    def ping(self) -> str:
        """Return the server's version string; raises :class:`KVUnavailableError`."""

    def close(self) -> None:
        """Release connections. The object must not be used afterwards."""

    def __enter__(self) -> KV:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def join_key(prefix: str, name: str) -> str:
    """Join a directory-like prefix and a name with exactly one ``/``."""
    return prefix.rstrip("/") + "/" + name

"""EtcdStore: a ``torch.distributed.Store`` on etcd, drop-in for torch's.

Key layout (the same as torch's, so both read each other's keys): the store key
``k`` lives at ``<prefix>/<base64(k)>`` and holds ``base64(value)``.

Unlike torch's, a ``get`` of a present key costs one request however many keys
the store holds, waiting watches only the awaited key, and ``add`` reads before it
writes (torch's first tries a create that fails on every key that exists) and backs
off for a random, growing time after a lost compare-and-swap.
"""

from __future__ import annotations

import base64
import binascii
import random
import time
from collections.abc import Callable
from datetime import timedelta

from torch.distributed import DistStoreError, Store

from .errors import raising_rendezvous_errors
from .kv import KV, KeyValue, KVCompactedError, as_kv, join_key

_NO_WAIT = timedelta(0)


class StoreTimeoutError(LookupError, DistStoreError):
    """Keys were not set within the store's timeout.

    A ``LookupError`` like torch's EtcdStore raises, and a ``DistStoreError``
    like torch's TCPStore raises, so code written for either catches it.
    """


class EtcdStore(Store):
    """A ``torch.distributed.Store`` whose keys live in etcd below ``prefix``.

    Args:
        client: an :class:`rdzv.kv.KV` or a python-etcd ``etcd.Client`` (as torch's takes).
        prefix: the etcd directory holding the keys, e.g. ``/torch/elastic/store``.
        timeout: how long ``get``/``wait`` block for a missing key (default: torch's 300 s).

    ``get``, ``wait`` and ``multi_get`` block until every key is set or the timeout
    passes, then raise :class:`StoreTimeoutError`. Keys and values may be ``str``
    (encoded as UTF-8) or ``bytes``; values come back as ``bytes``. When etcd cannot be
    reached (within the client's read timeout) every operation raises torch's
    ``RendezvousConnectionError``.
    """

    def __init__(self, client: object, prefix: str, timeout: timedelta | None = None) -> None:
        super().__init__()
        self._kv: KV = as_kv(client)
        self.prefix = prefix.rstrip("/") + "/"
        if timeout is not None:
            self.set_timeout(timeout)

    @property
    def kv(self) -> KV:
        """The key-value client the store talks through."""
        return self._kv

    @property
    def client(self) -> object:
        """The python-etcd ``etcd.Client`` the store uses, as torch's ``EtcdStore.client``
        exposes it. A store built on a v2 :class:`~rdzv.kv.KV` gives the client of the member
        currently in use; one on the v3 API has no python-etcd client and raises
        ``AttributeError``."""
        client = getattr(self._kv, "client", None)
        if client is None:
            raise AttributeError(f"This EtcdStore talks to etcd's {self._kv.api} API and has no python-etcd client; "
                                 "use .kv instead.")
        return client

    @raising_rendezvous_errors
    def set(self, key: str | bytes, value: str | bytes) -> None:
        self._kv.put(self._path(key), _encode(value))

    @raising_rendezvous_errors
    def get(self, key: str | bytes) -> bytes:
        return self._wait_for(self._path(key), self._deadline(None), key)

    @raising_rendezvous_errors
    def add(self, key: str | bytes, num: int) -> int:
        """Add ``num`` to the integer at ``key`` (absent counts as 0); return the new value."""
        return int(self._read_modify_write(key, lambda held: str(int(held or b"0") + int(num)).encode()))

    @raising_rendezvous_errors
    def append(self, key: str | bytes, value: str | bytes) -> None:
        """Append ``value`` to the bytes at ``key`` (absent counts as empty)."""
        suffix = _to_bytes(value)
        self._read_modify_write(key, lambda held: (held or b"") + suffix)

    @raising_rendezvous_errors
    def compare_set(self, key: str | bytes, expected_value: str | bytes, desired_value: str | bytes) -> bytes:
        """Set ``key`` to ``desired_value`` if it holds ``expected_value``; return what it holds after.

        c10d's contract: an absent key is set only when ``expected_value`` is empty;
        otherwise an absent key returns ``expected_value`` and a mismatch returns
        the current value, unchanged.
        """
        path = self._path(key)
        expected, desired = _to_bytes(expected_value), _to_bytes(desired_value)
        losses = 0
        while True:
            current = self._kv.get(path)
            if current is None:
                if expected:
                    return expected
                created, current = self._kv.create(path, _encode(desired))
                if created:
                    return desired
            held = _decode(current.value, key)
            if held != expected:
                return held
            swapped, _ = self._kv.compare_and_swap(path, _encode(desired), current.revision)
            if swapped:
                return desired
            losses += 1
            _back_off(losses)

    @raising_rendezvous_errors
    def check(self, keys: list[str | bytes]) -> bool:
        """Whether every key is set right now (no waiting)."""
        return all(self._kv.get(self._path(key)) is not None for key in keys)

    @raising_rendezvous_errors
    def wait(self, keys: list[str | bytes], override_timeout: timedelta | None = None) -> None:
        deadline = self._deadline(override_timeout)
        for key in keys:
            self._wait_for(self._path(key), deadline, key)

    @raising_rendezvous_errors
    def multi_get(self, keys: list[str | bytes]) -> list[bytes]:
        deadline = self._deadline(None)
        return [self._wait_for(self._path(key), deadline, key) for key in keys]

    @raising_rendezvous_errors
    def multi_set(self, keys: list[str | bytes], values: list[str | bytes]) -> None:
        if len(keys) != len(values):
            raise ValueError(f"multi_set got {len(keys)} keys but {len(values)} values; pass one value per key.")
        for key, value in zip(keys, values):
            self.set(key, value)

    @raising_rendezvous_errors
    def delete_key(self, key: str | bytes) -> bool:
        return self._kv.delete(self._path(key))

    @raising_rendezvous_errors
    def num_keys(self) -> int:
        return len(self._kv.list(self.prefix).items)

    @raising_rendezvous_errors
    def list_keys(self) -> list[str]:
        """Every key of the store, decoded (keys that are not valid UTF-8 are skipped)."""
        names = []
        for item in self._kv.list(self.prefix).items:
            try:
                names.append(base64.b64decode(item.key[len(self.prefix):], validate=True).decode())
            except (binascii.Error, UnicodeDecodeError):
                continue
        return names

    def _read_modify_write(self, key: str | bytes, change: Callable[[bytes | None], bytes]) -> bytes:
        """Atomically replace the bytes at ``key`` with ``change(current)`` (``None`` when
        absent); return what was written. Reads first (no doomed create on a key that
        exists); a lost compare-and-swap backs off, then reads again."""
        path = self._path(key)
        current = self._kv.get(path)
        losses = 0
        while True:
            new = change(None if current is None else _decode(current.value, key))
            if current is None:
                written, _ = self._kv.create(path, _encode(new))
            else:
                written, _ = self._kv.compare_and_swap(path, _encode(new), current.revision)
            if written:
                return new
            losses += 1
            _back_off(losses)
            current = self._kv.get(path)

    def _path(self, key: str | bytes) -> str:
        return join_key(self.prefix, _encode(key))

    def _deadline(self, override: timedelta | None) -> float:
        timeout = self.timeout if override is None else override
        return time.monotonic() + max(timeout, _NO_WAIT).total_seconds()

    def _wait_for(self, path: str, deadline: float, key: str | bytes) -> bytes:
        while True:
            found = self._kv.get_or_revision(path)
            if isinstance(found, KeyValue):
                return _decode(found.value, key)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise StoreTimeoutError(
                    f"The key {_show(key)} was not set in EtcdStore '{self.prefix}' within the timeout; "
                    "check that the process meant to set it is running."
                )
            try:
                self._kv.watch(path, found + 1, remaining)
            except KVCompactedError:
                continue


def _to_bytes(value: str | bytes) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode()
    raise ValueError(f"Store keys and values must be str or bytes, not {type(value).__name__}.")


def _encode(value: str | bytes) -> str:
    return base64.b64encode(_to_bytes(value)).decode()


def _decode(text: str, key: str | bytes) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except binascii.Error:
        raise ValueError(
            f"The value of store key {_show(key)} is not base64; it was not written by an EtcdStore."
        ) from None


def _show(key: str | bytes) -> str:
    return repr(key if isinstance(key, str) else key.decode(errors="replace"))


def _back_off(losses: int) -> None:
    """After the ``losses``-th lost compare-and-swap in a row, sleep a random time below 20 ms,
    40 ms, 80 ms... (at most 200 ms) so racing writers spread out: a failed write costs etcd
    a Raft round like a successful one. (torch's EtcdStore sleeps 0-100 ms every time.)"""
    time.sleep(random.uniform(0, min(0.2, 0.02 * 2 ** min(losses - 1, 8))))

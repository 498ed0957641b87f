"""EtcdRendezvousBackend and create_backend: drop-in for torch's ``etcd-v2`` backend.

Layout (torch's): the state of run ``R`` is ``base64(pickle)`` at
``/torch/elastic/rendezvous/R`` with a TTL of two hours after the last write;
the token is the key's revision (v2 ``modifiedIndex``, v3 ``mod_revision``).
The store of the job lives at ``/torch/elastic/store``.
"""

from __future__ import annotations

import base64
import binascii

from torch.distributed import Store
from torch.distributed.elastic.rendezvous.api import (
    RendezvousConnectionError,
    RendezvousParameters,
    RendezvousStateError,
)
from torch.distributed.elastic.rendezvous.dynamic_rendezvous import RendezvousBackend, Token

from .errors import as_rendezvous_errors
from .kv import KV, KeyValue, as_kv, connect, join_key
from .store import EtcdStore
from .write_turns import WRITE_TURNS, WriteTurns

RENDEZVOUS_PREFIX = "/torch/elastic/rendezvous"
STORE_PREFIX = "/torch/elastic/store"
DEFAULT_TTL = 7200


class EtcdRendezvousBackend(RendezvousBackend):
    """Holds the rendezvous state of one run in etcd for torch's ``DynamicRendezvousHandler``.

    Args:
        client: an :class:`rdzv.kv.KV` or a python-etcd ``etcd.Client``.
        run_id: the run id; must be non-empty.
        key_prefix: the directory holding the state (the key is ``key_prefix/run_id``);
            without one the key is ``run_id`` itself, as in torch.
        ttl: seconds the state lives after its last write; default two hours.
        write_turns: where handlers of this process that lost a compare-and-swap wait
            to retry one at a time (see :mod:`rdzv.write_turns`); ``None`` returns a
            loss at once, as torch's backends do.

    Contract (torch's ``RendezvousBackend``): ``get_state`` returns ``(state, token)``
    or ``None``; ``set_state`` writes only if ``token`` is still current and returns
    ``(state, token, written)``, or ``None`` if the state no longer exists. etcd
    failures raise :class:`RendezvousConnectionError`; a state that is not base64
    raises :class:`RendezvousStateError`.
    """

    def __init__(self, client: object, run_id: str, key_prefix: str | None = None, ttl: int | None = None, *,
                 write_turns: WriteTurns | None = WRITE_TURNS) -> None:
        if not run_id:
            raise ValueError("The run id must be a non-empty string.")
        self._kv: KV = as_kv(client)
        self._run_id = run_id
        self._key = join_key(key_prefix, run_id) if key_prefix else run_id
        self._ttl = ttl if ttl and ttl > 0 else DEFAULT_TTL
        # A private WriteTurns that never makes anyone wait stands for "no turns".
        self._turns = write_turns if write_turns is not None else WriteTurns(lapses_after_s=0.0, longest_wait_s=0.0)
        self._turn_key = (self._kv.api, self._kv.endpoint, self._key)

    @property
    def name(self) -> str:
        return f"rdzv-etcd-{self._kv.api}"

    @property
    def key(self) -> str:
        """The etcd key holding the state."""
        return self._key

    @property
    def kv(self) -> KV:
        return self._kv

    def get_state(self) -> tuple[bytes, Token] | None:
        self._turns.end_turn(self._turn_key)
        with as_rendezvous_errors():
            current = self._kv.get(self._key)
        self._turns.seen(self._turn_key, current)
        return None if current is None else self._decode(current)

    def set_state(self, state: bytes, token: Token | None = None) -> tuple[bytes, Token, bool] | None:
        value = base64.b64encode(state).decode()
        if token:
            try:
                revision = int(token)
            except (TypeError, ValueError):
                current = self.get_state()
                return None if current is None else (*current, False)
        try:
            with as_rendezvous_errors():
                if token:
                    written, current = self._kv.compare_and_swap(self._key, value, revision, ttl=self._ttl)
                else:
                    written, current = self._kv.create(self._key, value, ttl=self._ttl)
            self._turns.seen(self._turn_key, current)
        finally:
            self._turns.end_turn(self._turn_key)
        if written:
            return state, current.revision, True
        current = self._turns.take_turn(self._turn_key, current)
        if current is None:
            return None
        return (*self._decode(current), False)

    def _decode(self, current: KeyValue) -> tuple[bytes, Token]:
        try:
            state = base64.b64decode(current.value, validate=True)
        except binascii.Error as exc:
            raise RendezvousStateError(
                f"The rendezvous state of run '{self._run_id}' at {self._key} is corrupt (not base64); "
                "delete the key to start the run afresh."
            ) from exc
        return state, current.revision


def create_kv(params: RendezvousParameters, api: str | None = None) -> KV:
    """A KV client from torch's rendezvous parameters (endpoint, ``read_timeout``,
    ``protocol``, ``ssl_cert``, ``ssl_cert_key``, ``ca_cert``, and ``etcd_api``).

    ``api`` (from the plugin name) wins over the ``etcd_api`` parameter; the default is v2.
    Raises ``ValueError`` for bad parameters, with torch's messages.
    """
    read_timeout = params.get_as_int("read_timeout", 60)
    if read_timeout is None or read_timeout <= 0:
        raise ValueError("The read timeout must be a positive integer.")
    return connect(
        params.endpoint,
        api or str(params.get("etcd_api", "v2")).strip().lower(),
        read_timeout=read_timeout,
        protocol=str(params.get("protocol", "http")),
        ssl_cert=params.get("ssl_cert") or None,
        ssl_cert_key=params.get("ssl_cert_key") or None,
        ca_cert=params.get("ca_cert") or None,
    )


def create_backend(params: RendezvousParameters, api: str | None = None) -> tuple[EtcdRendezvousBackend, Store]:
    """Create the backend and store of a run, as torch's ``create_backend`` does.

    Parameters (``--rdzv-conf``): ``read_timeout`` (s, default 60), ``protocol``
    (``http``/``https``), ``ssl_cert``, ``ssl_cert_key``, ``ca_cert``, and ``etcd_api``
    (``v2``/``v3``; ``api`` given by a plugin name wins). The endpoint may list several
    members (``h1:2379,h2:2379``); requests fail over between them.

    Raises:
        ValueError: a bad parameter.
        RendezvousConnectionError: no etcd member answered within ``read_timeout``.
    """
    kv = create_kv(params, api)
    with as_rendezvous_errors():
        kv.ping()
    backend = EtcdRendezvousBackend(kv, params.run_id, key_prefix=RENDEZVOUS_PREFIX)
    return backend, EtcdStore(kv, STORE_PREFIX)


__all__ = [
    "DEFAULT_TTL",
    "RENDEZVOUS_PREFIX",
    "STORE_PREFIX",
    "EtcdRendezvousBackend",
    "RendezvousConnectionError",
    "create_backend",
    "create_kv",
]

"""EtcdRendezvousBackend and create_backend: drop-in for torch's ``etcd-v2`` backend.

Layout (torch's, :mod:`rdzv.kv.layout`): the state of run ``R`` is ``base64(pickle)`` at
``/torch/elastic/rendezvous/R`` with a TTL of two hours after the last write; the token is
the key's revision (v2 ``modifiedIndex``, v3 ``mod_revision``). The store of the job lives
at ``/torch/elastic/store``.

The backend's ``name`` is the name of the plugin it serves (``rdzv-etcd-v2`` or
``rdzv-etcd-v3``), not torch's ``etcd-v2``: torch's handler reports it from ``get_backend()``
(``DynamicRendezvousHandler.from_backend`` takes ``backend.name``), and torchrun finds the
plugin under that name. Code that matches on ``backend.name == "etcd-v2"`` to
recognise an etcd backend should test ``name in ("etcd-v2", "rdzv-etcd-v2", "rdzv-etcd-v3")``
or ``isinstance(backend, rdzv.EtcdRendezvousBackend)``.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import time

from torch.distributed import Store
from torch.distributed.elastic.rendezvous.api import (
    RendezvousConnectionError,
    RendezvousParameters,
    RendezvousStateError,
)
from torch.distributed.elastic.rendezvous.dynamic_rendezvous import (
    RendezvousBackend,
    Token,
)

from .errors import as_rendezvous_errors
from .kv import (
    DEFAULT_PREFIX,
    KV,
    KeyLayout,
    KeyValue,
    KVError,
    Target,
    TargetError,
    as_kv,
    join_key,
)
from .kv.layout import STATE_TTL
from .rendezvous_settings import RendezvousSettings
from .store import EtcdStore
from .write_turns import WRITE_TURNS, WriteTurns

logger = logging.getLogger(__name__)

RENDEZVOUS_PREFIX = KeyLayout(DEFAULT_PREFIX).runs_prefix
STORE_PREFIX = KeyLayout(DEFAULT_PREFIX).store_prefix
DEFAULT_TTL = STATE_TTL


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
        #: Where :func:`create_backend` wants the handler's settings published (``None``: nowhere).
        self.settings_key: str | None = None
        self._published: tuple[str, str] | None = None  # (key, JSON) of the settings to keep published
        self._published_at = 0.0

    @property
    def name(self) -> str:
        """The plugin name, ``rdzv-etcd-v2`` or ``rdzv-etcd-v3`` (not torch's ``etcd-v2``: see
        the module docstring for code that matches on names)."""
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
            if self._published is not None and time.monotonic() - self._published_at > self._ttl / 4:
                self._publish()
            return state, current.revision, True
        current = self._turns.take_turn(self._turn_key, current)
        if current is None:
            return None
        return (*self._decode(current), False)

    def publish_settings(self, settings: RendezvousSettings, key: str) -> None:
        """Publish the handler's ``settings`` as JSON at ``key`` (see
        :meth:`rdzv.kv.KeyLayout.settings_key`) with the state's TTL, and again with a
        successful state write whenever a quarter of the TTL has passed since, so the
        settings live as long as the state. A viewer takes them instead of guessing torch's
        defaults. Failing to publish never fails the rendezvous."""
        self._published = (key, json.dumps(settings.to_dict(), sort_keys=True))
        self._publish()

    def _publish(self) -> None:
        key, text = self._published
        self._published_at = time.monotonic()
        try:
            self._kv.put(key, text, ttl=self._ttl)
        except KVError as exc:
            logger.warning("Could not publish the rendezvous settings at %s: %s", key, exc)

    def _decode(self, current: KeyValue) -> tuple[bytes, Token]:
        try:
            state = base64.b64decode(current.value, validate=True)
        except binascii.Error as exc:
            raise RendezvousStateError(
                f"The rendezvous state of run '{self._run_id}' at {self._key} is corrupt (not base64); "
                "delete the key to start the run afresh."
            ) from exc
        return state, current.revision


def target_from_params(params: RendezvousParameters, api: str | None = None) -> Target:
    """The :class:`~rdzv.kv.Target` of torch's rendezvous parameters: the endpoint, and from
    ``--rdzv-conf`` ``read_timeout`` (whole seconds, default 60, as torch reads it), ``protocol``,
    ``ssl_cert``, ``ssl_cert_key``, ``ca_cert`` and ``etcd_api``.

    ``api`` (from the plugin name) wins over the ``etcd_api`` parameter; the default is v2.
    Raises ``ValueError`` (:class:`~rdzv.kv.TargetError`) for a parameter that cannot work.
    """
    try:
        return Target.of(
            params.endpoint,
            api=api or str(params.get("etcd_api", "v2")).strip().lower(),
            read_timeout=params.get_as_int("read_timeout", 60),
            protocol=str(params.get("protocol", "http")),
            ssl_cert=params.get("ssl_cert") or None,
            ssl_cert_key=params.get("ssl_cert_key") or None,
            ca_cert=params.get("ca_cert") or None,
        )
    except TargetError as exc:
        # Code written for torch's backend may match on torch's own sentences for these two.
        torch_message = _TORCH_MESSAGES.get(exc.setting)
        raise TargetError(torch_message or str(exc), exc.setting) from None


_TORCH_MESSAGES = {
    "read_timeout": "The read timeout must be a positive integer.",
    "protocol": "The protocol must be HTTP or HTTPS.",
}


def create_kv(params: RendezvousParameters, api: str | None = None) -> KV:
    """A KV client from torch's rendezvous parameters (see :func:`target_from_params`)."""
    return target_from_params(params, api).connect()


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
    target = target_from_params(params, api)
    kv = target.connect()
    with as_rendezvous_errors():
        kv.ping()
    layout = target.layout
    backend = EtcdRendezvousBackend(kv, params.run_id, key_prefix=layout.runs_prefix)
    backend.settings_key = layout.settings_key(params.run_id)
    return backend, EtcdStore(kv, layout.store_prefix)


def handler_settings(handler: object) -> RendezvousSettings:
    """The settings of torch's ``DynamicRendezvousHandler`` (its ``settings`` property: torch's
    ``RendezvousSettings`` and ``RendezvousTimeout``) as a viewer takes them."""
    settings = handler.settings  # type: ignore[attr-defined]
    return RendezvousSettings.provided(
        min_nodes=settings.min_nodes, max_nodes=settings.max_nodes,
        join_timeout=settings.timeout.join.total_seconds(), last_call_timeout=settings.timeout.last_call.total_seconds(),
        close_timeout=settings.timeout.close.total_seconds(),
        keep_alive_interval=settings.keep_alive_interval.total_seconds(),
        keep_alive_max_attempt=settings.keep_alive_max_attempt,
    )


def publish_handler_settings(handler: object, backend: object) -> None:
    """Publish ``handler``'s settings through ``backend`` when it is rdzv's, made by
    :func:`create_backend` (torch's own backend publishes nothing)."""
    key = getattr(backend, "settings_key", None)
    if isinstance(backend, EtcdRendezvousBackend) and key:
        backend.publish_settings(handler_settings(handler), key)


__all__ = [
    "DEFAULT_TTL",
    "RENDEZVOUS_PREFIX",
    "STORE_PREFIX",
    "EtcdRendezvousBackend",
    "RendezvousConnectionError",
    "create_backend",
    "create_kv",
    "handler_settings",
    "publish_handler_settings",
    "target_from_params",
]

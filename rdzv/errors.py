"""Error types a person may see, and the translation of KV errors into torch's."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from torch.distributed.elastic.rendezvous.api import RendezvousConnectionError

from .kv import KVError, KVUnavailableError


@contextlib.contextmanager
def as_rendezvous_errors() -> Iterator[None]:
    """Re-raise etcd connection failures as torch's :class:`RendezvousConnectionError`.

    torch's dynamic rendezvous treats that type as "etcd is down": heartbeats log it
    and carry on, joins fail cleanly. Other KV errors (etcd answered, but with an
    error) are raised as :class:`RendezvousConnectionError` too, since the handler
    cannot act on them either; the message keeps etcd's words.
    """
    try:
        yield
    except KVUnavailableError as exc:
        raise RendezvousConnectionError(str(exc)) from exc
    except KVError as exc:
        raise RendezvousConnectionError(str(exc)) from exc

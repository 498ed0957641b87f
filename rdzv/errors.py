"""The translation of KV errors into torch's rendezvous errors."""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator
from typing import TypeVar

from torch.distributed.elastic.rendezvous.api import RendezvousConnectionError, RendezvousError

from .kv import KVError

_F = TypeVar("_F", bound=Callable)

# Errors about the caller's input or data, which the caller must see as they are.
_NOT_CONNECTION_ERRORS = (RendezvousError, ValueError, TypeError, LookupError)


@contextlib.contextmanager
def as_rendezvous_errors() -> Iterator[None]:
    """Re-raise etcd failures as torch's :class:`RendezvousConnectionError`.

    torch's dynamic rendezvous treats that type as "etcd is down": heartbeats log it and
    carry on, joins fail cleanly. Its heartbeat thread catches only ``RendezvousError``
    and dies on anything else, so any unexpected error from the etcd client (not a
    ``ValueError``/``TypeError``/``LookupError`` about the caller's input) becomes a
    ``RendezvousConnectionError`` too: a transient failure must never end heartbeats.
    """
    try:
        yield
    except _NOT_CONNECTION_ERRORS:
        raise
    except KVError as exc:
        raise RendezvousConnectionError(str(exc)) from exc
    except Exception as exc:
        raise RendezvousConnectionError(f"The etcd client failed unexpectedly ({type(exc).__name__}: {exc}).") from exc


def raising_rendezvous_errors(method: _F) -> _F:
    """Decorate ``method`` to run inside :func:`as_rendezvous_errors`."""

    @functools.wraps(method)
    def wrapper(*args, **kwargs):
        with as_rendezvous_errors():
            return method(*args, **kwargs)

    return wrapper  # type: ignore[return-value]

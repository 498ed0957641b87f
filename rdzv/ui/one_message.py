"""One websocket message for everything a served session's callback changed.

Bokeh's server session sends each changed property as its own ``PATCH-DOC`` message, and each
message builds a serializer over every model of the session's document: with a dozen views
changing together, sending cost more than the changes. :func:`one_message` lets the changes
happen as usual (each model's Python callbacks run at once, as Bokeh runs them) but keeps the
session from sending them one by one; when the body ends, it sends them as one ``PATCH-DOC``
message to each of the session's connections (repeated changes of a property combined as
Bokeh's ``hold("combine")`` combines them).

Only the session's own change callback is diverted, and only for patches: anything else the
document announces meanwhile (a callback another thread adds) reaches the session at once.
Panel's ``pn.io.hold`` is not used: it holds every event, on a threaded server defers the
release to a later tick and then sends the events one by one, and its release drops the
models' Python callbacks and can lose events another thread adds while it swaps its list.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from bokeh.document.callbacks import _combine_document_events
from bokeh.document.events import DocumentPatchedEvent


@contextmanager
def one_message(document) -> Iterator[None]:
    """Run the body with the served session of ``document`` collecting its patches, then send
    them as one message. Must run inside a Bokeh session callback (the document locked), where
    Bokeh waits for the session's writes; elsewhere (no session, no lock, the document on hold,
    a Bokeh without these internals) the body runs and Bokeh sends as it always does. Nested,
    the outermost sends."""
    session = getattr(getattr(document, "session_context", None), "session", None)
    receivers = getattr(document.callbacks, "_change_callbacks", None)
    if (session is None or receivers is None or session not in receivers
            or getattr(session, "_pending_writes", None) is None or document.callbacks.hold_value is not None
            or getattr(receivers[session], "collecting", False)):  # inside another one_message: that one sends
        yield
        return
    deliver = receivers[session]
    patches: list[DocumentPatchedEvent] = []

    def collect(event) -> None:
        if isinstance(event, DocumentPatchedEvent):
            _combine_document_events(event, patches)
        else:
            deliver(event)

    collect.collecting = True
    receivers[session] = collect
    try:
        yield
    finally:
        if receivers.get(session) is collect:
            receivers[session] = deliver
        if patches:
            for connection in list(session._subscribed_connections):
                message = connection.protocol.create("PATCH-DOC", patches)
                session._pending_writes.append(connection._socket.send_message(message))

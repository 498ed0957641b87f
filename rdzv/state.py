"""Rendezvous state bytes -> an immutable :class:`RendezvousSnapshot`, safely and without torch.

torch's ``DynamicRendezvousHandler`` keeps the shared state of a run as ``pickle.dumps`` of a
``_RendezvousState`` (torch's etcd-v2 backend and ours store base64 of those bytes). Unpickling
untrusted bytes with :func:`pickle.loads` runs whatever code they name, and even pure data can
crash the interpreter (a deeply nested tuple used as a dict key overflows the C stack) or make it
allocate gigabytes (a memo index of 2**31). So decoding happens in two steps:

1. :func:`_check_opcodes` walks the opcodes without building anything: only data, memo, framing
   and object opcodes are allowed, memo indices must be dense, nesting is bounded by
   :data:`MAX_NESTING`, and nothing may follow ``STOP``.
2. :class:`_RestrictedUnpickler` builds the objects. Its ``find_class`` resolves exactly five
   globals: torch's ``_RendezvousState`` and ``_NodeDesc`` (to inert stand-ins of this module that
   only collect the attributes the pickle sets) and ``datetime.datetime``, ``datetime.timezone``
   and ``datetime.timedelta`` (what ``datetime.now(timezone.utc)`` pickles as). Anything else is
   refused.

The result is then type-checked field by field. Every failure, whatever its cause, raises
:class:`UndecodableStateError`.
"""

from __future__ import annotations

import base64
import binascii
import copy
import io
import pickle
from bisect import bisect_left
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from functools import cached_property
from operator import attrgetter
from types import MappingProxyType
from typing import Any, Literal

from .rendezvous_settings import RendezvousSettings

__all__ = [
    "MAX_NESTING",
    "MAX_OPERATIONS",
    "MAX_STATE_BYTES",
    "Membership",
    "Node",
    "RendezvousSnapshot",
    "UndecodableStateError",
    "decode_state",
    "decode_state_b64",
    "state_bytes",
    "node_order",
]

MAX_STATE_BYTES = 64 * 1024 * 1024
"""States larger than this (pickled) are refused; a 10,000-node state is about 0.9 MB."""

MAX_NESTING = 100
"""Containers nested deeper than this are refused; torch's states nest six levels deep."""

MAX_OPERATIONS = 4_000_000
"""Pickles of more opcodes are refused: each can create an object, so this bounds the memory a
payload can claim. torch's states take about 26 per node (a 10,000-node state: 260,000)."""

TORCH_MODULE = "torch.distributed.elastic.rendezvous.dynamic_rendezvous"

Membership = Literal["participant", "waiting", "redundant"]

_INT64 = 1 << 63


class UndecodableStateError(ValueError):
    """The bytes are not a rendezvous state written by torch's ``DynamicRendezvousHandler``.

    ``reason`` says what is wrong in a few words (``"truncated pickle"``,
    ``"forbidden global 'posix.system'"``); ``run_id`` is the run, if the caller named it.
    """

    def __init__(self, reason: str, run_id: str | None = None) -> None:
        self.reason = reason
        self.run_id = run_id
        of_run = f" of run '{run_id}'" if run_id is not None else ""
        super().__init__(
            f"The rendezvous state{of_run} is undecodable ({reason}); it is not a state written by "
            "torch's DynamicRendezvousHandler, so find what wrote it or delete it to start the run afresh."
        )


@dataclass(frozen=True, order=True, slots=True)
class Node:
    """A rendezvous node, as torch's ``_NodeDesc``: ordered by (addr, pid, local_id) like torch."""

    addr: str
    pid: int
    local_id: int
    # Nodes are hashed on every lookup in a snapshot or a diff: compute it once.
    _hash: int = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_hash", hash((self.addr, self.pid, self.local_id)))

    def __hash__(self) -> int:
        return self._hash

    def __reduce__(self) -> tuple[type[Node], tuple[str, int, int]]:
        # Not the cached hash: str hashes differ between processes.
        return Node, (self.addr, self.pid, self.local_id)

    def __str__(self) -> str:
        return f"{self.addr}_{self.pid}_{self.local_id}"

    def to_dict(self) -> dict[str, Any]:
        return {"addr": self.addr, "pid": self.pid, "local_id": self.local_id}


node_order = attrgetter("addr", "pid", "local_id")
"""``sorted(nodes, key=node_order)`` sorts like ``sorted(nodes)``, several times faster."""


def _as_utc(moment: datetime) -> datetime:
    """``moment`` if it has a timezone, else ``moment`` read as UTC."""
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=timezone.utc)


def _now(now: datetime | None) -> datetime:
    return datetime.now(timezone.utc) if now is None else _as_utc(now)


@dataclass(frozen=True, repr=False)
class RendezvousSnapshot:
    """One immutable reading of a run's rendezvous state.

    The fields are torch's ``_RendezvousState``: ``participants`` maps each node of the round to
    its rank (all 0 until the round completes), ``wait_list`` and ``redundancy_list`` hold the
    nodes waiting for the next round, ``last_heartbeats`` each node's last keep-alive (timezone
    aware). The defaults are the state of a new run. Whatever mappings and sets are passed are
    copied into read-only ones, so a snapshot never changes after construction.
    """

    round: int = 0
    complete: bool = False
    closed: bool = False
    deadline: datetime | None = None
    participants: Mapping[Node, int] = field(default_factory=dict)
    wait_list: frozenset[Node] = frozenset()
    redundancy_list: frozenset[Node] = frozenset()
    last_heartbeats: Mapping[Node, datetime] = field(default_factory=dict)

    def __post_init__(self) -> None:
        freeze = object.__setattr__
        freeze(self, "participants", MappingProxyType(dict(self.participants)))
        freeze(self, "wait_list", frozenset(self.wait_list))
        freeze(self, "redundancy_list", frozenset(self.redundancy_list))
        freeze(self, "last_heartbeats", MappingProxyType(dict(self.last_heartbeats)))

    def __hash__(self) -> int:
        return hash((
            self.round, self.complete, self.closed, self.deadline,
            frozenset(self.participants.items()), self.wait_list, self.redundancy_list,
            frozenset(self.last_heartbeats.items()),
        ))

    def __repr__(self) -> str:
        return (
            f"RendezvousSnapshot(round={self.round}, complete={self.complete}, closed={self.closed}, "
            f"participants={len(self.participants)}, waiting={len(self.wait_list)}, "
            f"redundant={len(self.redundancy_list)})"
        )

    @property
    def world_size(self) -> int:
        """The number of participants."""
        return len(self.participants)

    @property
    def nodes(self) -> frozenset[Node]:
        """Every node the state mentions: participants, both lists and heartbeats."""
        return frozenset(self.participants).union(self.wait_list, self.redundancy_list, self.last_heartbeats)

    def ranked(self) -> tuple[tuple[Node, int], ...]:
        """``(node, rank)`` of every participant, by rank, then node."""
        return tuple(sorted(self.participants.items(), key=lambda item: (item[1], node_order(item[0]))))

    def membership(self, node: Node) -> Membership | None:
        """Where ``node`` stands: a participant, waiting, redundant, or not in the rendezvous."""
        if node in self.participants:
            return "participant"
        if node in self.wait_list:
            return "waiting"
        if node in self.redundancy_list:
            return "redundant"
        return None

    def heartbeat_age(self, node: Node, now: datetime | None = None) -> timedelta | None:
        """How long ago ``node`` last sent a heartbeat (``now``: default the current time), or
        ``None`` if the state holds none for it. A naive ``now`` is read as UTC."""
        last = self.last_heartbeats.get(node)
        return None if last is None else _now(now) - last

    def stale(self, now: datetime | None = None, settings: RendezvousSettings | None = None) -> frozenset[Node]:
        """The nodes torch would drop as dead at ``now`` under ``settings`` (default: torch's
        keep-alive defaults); the rule is :meth:`RendezvousSettings.is_stale`."""
        return (settings or RendezvousSettings()).stale_among(self.last_heartbeats, _now(now))

    def stale_count(self, now: datetime | None = None, settings: RendezvousSettings | None = None) -> int:
        """``len(self.stale(now, settings))``, found by bisection in the heartbeats in time order
        (sorted once per snapshot), so asking again at another moment does not visit every node."""
        cutoff = (settings or RendezvousSettings()).stale_cutoff(_now(now))
        return bisect_left(self._heartbeats_in_order, cutoff)

    @cached_property
    def _heartbeats_in_order(self) -> tuple[datetime, ...]:
        return tuple(sorted(self.last_heartbeats.values()))

    def with_heartbeats(self, changed: Mapping[Node, datetime], deadline: datetime | None) -> RendezvousSnapshot:
        """This snapshot with the heartbeats of ``changed`` and ``deadline`` instead of its own:
        what a heartbeat-only revision holds (torch's keep-alive rewrites nothing else). It shares
        the participants and lists, and works out anything derived from the heartbeats anew (a
        shallow copy would carry this snapshot's cached values over)."""
        patched = copy.copy(self)
        for name in _CACHED:
            patched.__dict__.pop(name, None)
        if changed:
            heartbeats = dict(self.last_heartbeats)
            heartbeats.update(changed)
            object.__setattr__(patched, "last_heartbeats", MappingProxyType(heartbeats))
        object.__setattr__(patched, "deadline", deadline)
        return patched

    def to_dict(self) -> dict[str, Any]:
        """The snapshot as JSON-ready data (datetimes in ISO 8601, lists sorted);
        :meth:`from_dict` reads it back."""

        def nodes(which: Iterable[Node]) -> list[dict[str, Any]]:
            return [node.to_dict() for node in sorted(which, key=node_order)]

        return {
            "round": self.round,
            "complete": self.complete,
            "closed": self.closed,
            "deadline": None if self.deadline is None else self.deadline.isoformat(),
            "participants": [{**node.to_dict(), "rank": rank} for node, rank in self.ranked()],
            "wait_list": nodes(self.wait_list),
            "redundancy_list": nodes(self.redundancy_list),
            "last_heartbeats": [
                {**node.to_dict(), "time": self.last_heartbeats[node].isoformat()}
                for node in sorted(self.last_heartbeats, key=node_order)
            ],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RendezvousSnapshot:
        """The snapshot :meth:`to_dict` returned ``data`` for."""

        def node(item: Mapping[str, Any]) -> Node:
            return Node(item["addr"], item["pid"], item["local_id"])

        deadline = data.get("deadline")
        return cls(
            round=data["round"],
            complete=data["complete"],
            closed=data["closed"],
            deadline=None if deadline is None else datetime.fromisoformat(deadline),
            participants={node(item): item["rank"] for item in data["participants"]},
            wait_list=frozenset(map(node, data["wait_list"])),
            redundancy_list=frozenset(map(node, data["redundancy_list"])),
            last_heartbeats={node(item): datetime.fromisoformat(item["time"]) for item in data["last_heartbeats"]},
        )


_CACHED = tuple(name for name, value in vars(RendezvousSnapshot).items() if isinstance(value, cached_property))
"""What a snapshot caches from its own fields (see :meth:`RendezvousSnapshot.with_heartbeats`)."""


def decode_state_b64(text: str | bytes, *, run_id: str | None = None) -> RendezvousSnapshot:
    """Decode a state as etcd holds it: base64 of the pickled ``_RendezvousState``.

    Raises:
        UndecodableStateError: ``text`` is not base64, or :func:`decode_state` refuses the bytes.
    """
    return decode_state(state_bytes(text, run_id=run_id), run_id=run_id)


def state_bytes(text: str | bytes, *, run_id: str | None = None) -> bytes:
    """The pickled bytes of a state as etcd holds it (base64 text).

    Raises:
        UndecodableStateError: ``text`` is too large for a state, or not base64.
    """
    if not isinstance(text, (str, bytes, bytearray)):
        raise TypeError(f"A base64 state is str or bytes, not {type(text).__name__}.")
    if len(text) > (MAX_STATE_BYTES + 2) // 3 * 4:
        raise UndecodableStateError(f"larger than {MAX_STATE_BYTES // (1024 * 1024)} MiB", run_id)
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise UndecodableStateError("not base64", run_id) from None


def decode_state(data: bytes | bytearray | memoryview, *, run_id: str | None = None) -> RendezvousSnapshot:
    """Decode ``pickle.dumps`` of torch's ``_RendezvousState`` into a snapshot.

    torch pickles with Python's default protocol (4, or 5 from Python 3.14); older protocols are
    refused, since they need globals (``builtins.set``, ``_codecs.encode``) a state otherwise does not.

    Never imports torch and never runs code named by the bytes; ``run_id`` only names the run in
    errors. Naive datetimes are read as UTC.

    Raises:
        UndecodableStateError: anything wrong with the bytes: too large, truncated, not a pickle,
            a global other than the five a state needs, nesting deeper than :data:`MAX_NESTING`,
            a field missing or of the wrong type.
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"A pickled state is bytes, not {type(data).__name__}.")
    data = bytes(data)
    try:
        if len(data) > MAX_STATE_BYTES:
            raise _Refusal(f"larger than {MAX_STATE_BYTES // (1024 * 1024)} MiB")
        _check_opcodes(data)
        return _snapshot_of(_load(data))
    except _Refusal as refusal:
        raise UndecodableStateError(refusal.reason, run_id) from None


class _Refusal(Exception):
    """Internal: why the bytes are refused (becomes an :class:`UndecodableStateError`)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


# --- step 1: the opcode check -------------------------------------------------------------

# Each allowed opcode has a kind (its effect on the stack) and an argument: the width of its
# argument, of its length prefix (COUNTED: the data follows), or the tuple size (TUPLE_N).
_KIND_NAMES = ("UNSUPPORTED", "GET", "MEMOIZE", "FIXED", "COUNTED", "EMPTY", "MARK", "EXTEND", "BUILD", "CALL",
               "TUPLE_N", "FROM_MARK", "SETITEM", "NEWOBJ_EX", "STACK_GLOBAL", "PUT", "FRAME", "GLOBAL", "POP",
               "POP_MARK", "DUP", "PROTO", "STOP")
(UNSUPPORTED, GET, MEMOIZE, FIXED, COUNTED, EMPTY, MARK, EXTEND, BUILD, CALL, TUPLE_N, FROM_MARK,
 SETITEM, NEWOBJ_EX, STACK_GLOBAL, PUT, FRAME, GLOBAL, POP, POP_MARK, DUP, PROTO, STOP) = range(len(_KIND_NAMES))
_OPCODES: dict[int, tuple[bytes, ...]] = {
    GET: (pickle.BINGET, pickle.LONG_BINGET),
    MEMOIZE: (pickle.MEMOIZE,),
    FIXED: (pickle.NONE, pickle.NEWTRUE, pickle.NEWFALSE, pickle.BININT1, pickle.BININT2, pickle.BININT,
            pickle.BINFLOAT),
    COUNTED: (pickle.SHORT_BINUNICODE, pickle.BINUNICODE, pickle.BINUNICODE8, pickle.SHORT_BINBYTES,
              pickle.BINBYTES, pickle.BINBYTES8, pickle.BYTEARRAY8, pickle.LONG1, pickle.LONG4),
    EMPTY: (pickle.EMPTY_TUPLE, pickle.EMPTY_LIST, pickle.EMPTY_DICT, pickle.EMPTY_SET),
    MARK: (pickle.MARK,),
    EXTEND: (pickle.APPENDS, pickle.SETITEMS, pickle.ADDITEMS),
    BUILD: (pickle.BUILD, pickle.APPEND),
    CALL: (pickle.REDUCE, pickle.NEWOBJ),
    TUPLE_N: (pickle.TUPLE1, pickle.TUPLE2, pickle.TUPLE3),
    FROM_MARK: (pickle.TUPLE, pickle.LIST, pickle.DICT, pickle.FROZENSET),
    SETITEM: (pickle.SETITEM,),
    NEWOBJ_EX: (pickle.NEWOBJ_EX,),
    STACK_GLOBAL: (pickle.STACK_GLOBAL,),
    PUT: (pickle.BINPUT, pickle.LONG_BINPUT),
    FRAME: (pickle.FRAME,),
    GLOBAL: (pickle.GLOBAL,),
    POP: (pickle.POP,),
    POP_MARK: (pickle.POP_MARK,),
    DUP: (pickle.DUP,),
    PROTO: (pickle.PROTO,),
    STOP: (pickle.STOP,),
}
_ARGUMENT_WIDTH = {
    pickle.BINGET: 1, pickle.LONG_BINGET: 4, pickle.BININT1: 1, pickle.BININT2: 2, pickle.BININT: 4,
    pickle.BINFLOAT: 8, pickle.SHORT_BINUNICODE: 1, pickle.BINUNICODE: 4, pickle.BINUNICODE8: 8,
    pickle.SHORT_BINBYTES: 1, pickle.BINBYTES: 4, pickle.BINBYTES8: 8, pickle.BYTEARRAY8: 8, pickle.LONG1: 1,
    pickle.LONG4: 4, pickle.TUPLE1: 1, pickle.TUPLE2: 2, pickle.TUPLE3: 3, pickle.BINPUT: 1,
    pickle.LONG_BINPUT: 4, pickle.FRAME: 8, pickle.PROTO: 1,
}
_KIND = [UNSUPPORTED] * 256
_ARGUMENT = [0] * 256
for _kind_of, _opcodes in _OPCODES.items():
    for _opcode in _opcodes:
        _KIND[_opcode[0]] = _kind_of
        _ARGUMENT[_opcode[0]] = _ARGUMENT_WIDTH.get(_opcode, 0)
del _kind_of, _opcodes, _opcode
PROTO_OPCODE = pickle.PROTO[0]

# What the walk refuses, by the outcome names of rdzv._opcode_walk (which walks in C).
_TRUNCATED, _MALFORMED = "truncated pickle", "malformed pickle"
_OUT_OF_SEQUENCE = "a memo index out of sequence"
_TRAILING_BYTES = "bytes after the end of the pickle"


def _too_deep() -> _Refusal:
    return _Refusal(f"nested deeper than {MAX_NESTING} levels")


def _too_many_operations() -> _Refusal:
    return _Refusal(f"more than {MAX_OPERATIONS:,} pickle operations")


def _unsupported(opcode: int) -> _Refusal:
    return _Refusal(f"unsupported pickle opcode 0x{opcode:02x}")


_OUTCOMES: dict[str, Any] = {
    "ok": None,
    "too deep": lambda _detail: _too_deep(),
    "truncated": lambda _detail: _Refusal(_TRUNCATED),
    "malformed": lambda _detail: _Refusal(_MALFORMED),
    "memo out of sequence": lambda _detail: _Refusal(_OUT_OF_SEQUENCE),
    "unsupported": _unsupported,
    "too many operations": lambda _detail: _too_many_operations(),
    "trailing bytes": lambda _detail: _Refusal(_TRAILING_BYTES),
}


def _compiled_walk():
    """rdzv._opcode_walk's walk and its outcomes as refusals, if it was built and numbers the kinds
    as this module does; else None (the walk runs in Python)."""
    try:
        from . import _opcode_walk
    except ImportError:
        return None
    if _opcode_walk.KINDS != _KIND_NAMES or set(_opcode_walk.OUTCOMES) != set(_OUTCOMES):
        return None
    return _opcode_walk.walk, [_OUTCOMES[name] for name in _opcode_walk.OUTCOMES]


_COMPILED = _compiled_walk()
_KIND_TABLE, _ARGUMENT_TABLE = bytes(_KIND), bytes(_ARGUMENT)


SHORT_BINBYTES = pickle.SHORT_BINBYTES[0]
DATETIME_PAYLOAD = 10
"""Bytes of a pickled datetime's state (its ``SHORT_BINBYTES`` argument)."""


def _check_opcodes(data: bytes, payloads: list[int] | None = None) -> None:
    """Walk the pickle's opcodes, tracking how deep each stack item nests, and refuse what
    :class:`_RestrictedUnpickler` must never see: unknown or unneeded opcodes (persistent ids,
    extension codes, ``INST``/``OBJ``, protocol 0 text opcodes, out-of-band buffers), sparse
    memo indices, nesting deeper than :data:`MAX_NESTING`, more than :data:`MAX_OPERATIONS`
    opcodes, a truncated stream, trailing bytes.

    A tuple's depth is exact (tuples never change); a list, dict, set or object deepened after
    being memoized may be counted shallower through the memo, which is harmless: such
    containers are unhashable or hash by identity, so nothing recurses into them while loading.

    ``payloads``, if given, receives the offset of every 10-byte ``SHORT_BINBYTES`` argument
    (what a datetime pickles its value as), for :mod:`rdzv.state_stream`.
    """
    if len(data) < 2 or data[0] != PROTO_OPCODE or not 4 <= data[1] <= pickle.HIGHEST_PROTOCOL:
        raise _Refusal("not a pickle of protocol 4 or later")
    if _COMPILED is None:
        _walk_in_python(data, payloads)
        return
    walk, refusals = _COMPILED
    outcome, detail = walk(data, _KIND_TABLE, _ARGUMENT_TABLE, MAX_NESTING, MAX_OPERATIONS, payloads)
    if outcome:
        raise refusals[outcome](detail)


def _walk_in_python(data: bytes, payloads: list[int] | None) -> None:
    """:func:`_check_opcodes` after the header, in Python (where rdzv._opcode_walk was not built,
    and as the reference the tests hold the C walk to)."""
    size = len(data)
    stack: list[int] = []  # the nesting depth of each item on the unpickler's stack
    marks: list[int] = []  # where each open MARK is on the stack
    memo: list[int] = []
    push, pop, remember = stack.append, stack.pop, memo.append
    kinds, arguments, limit = _KIND, _ARGUMENT, MAX_NESTING
    position = 0
    # The branches are ordered by how often torch's states use them.
    try:
        for _ in range(MAX_OPERATIONS):
            opcode = data[position]
            kind = kinds[opcode]
            position += 1
            if kind == GET:
                width = arguments[opcode]
                if width == 1:
                    push(memo[data[position]])
                else:
                    push(memo[int.from_bytes(data[position:position + width], "little")])
                position += width
            elif kind == MEMOIZE:
                remember(stack[-1])
            elif kind == FIXED:
                position += arguments[opcode]
                push(0)
            elif kind == COUNTED:
                width = arguments[opcode]
                if width == 1:
                    if payloads is not None and opcode == SHORT_BINBYTES and data[position] == DATETIME_PAYLOAD:
                        payloads.append(position + 1)
                    position += 1 + data[position]
                else:
                    position += width + int.from_bytes(data[position:position + width], "little")
                push(0)
            elif kind == EMPTY:
                push(1)
            elif kind == MARK:
                marks.append(len(stack))
            elif kind == EXTEND:  # container, MARK, items -> container
                start = marks.pop()
                if len(stack) > start:
                    depth = 1 + max(stack[start:])
                    del stack[start:]
                    if depth > stack[-1]:
                        if depth > limit:
                            raise _too_deep()
                        stack[-1] = depth
            elif kind == BUILD:  # object, state -> object; list, item -> list
                depth = 1 + pop()
                if depth > stack[-1]:
                    if depth > limit:
                        raise _too_deep()
                    stack[-1] = depth
            elif kind == CALL:  # callable, arguments -> object
                depth = pop()
                if depth > stack[-1]:
                    stack[-1] = depth
            elif kind == TUPLE_N:
                count = arguments[opcode]
                if len(stack) < count:
                    raise IndexError
                depth = 1 + max(stack[-count:])
                del stack[-count:]
                if depth > limit:
                    raise _too_deep()
                push(depth)
            elif kind == FROM_MARK:
                start = marks.pop()
                depth = 1 + max(stack[start:], default=0)
                del stack[start:]
                if depth > limit:
                    raise _too_deep()
                push(depth)
            elif kind == SETITEM:  # dict, key, value -> dict
                depth = 1 + max(pop(), pop())
                if depth > stack[-1]:
                    if depth > limit:
                        raise _too_deep()
                    stack[-1] = depth
            elif kind == NEWOBJ_EX:  # class, arguments, keyword arguments -> object
                depth = max(pop(), pop())
                if depth > stack[-1]:
                    stack[-1] = depth
            elif kind == STACK_GLOBAL:  # module, name -> global
                pop()
                stack[-1] = 0
            elif kind == PUT:
                width = arguments[opcode]
                index = int.from_bytes(data[position:position + width], "little")
                position += width
                if index < len(memo):
                    memo[index] = stack[-1]
                elif index == len(memo):
                    remember(stack[-1])
                else:
                    raise _Refusal(_OUT_OF_SEQUENCE)
            elif kind == FRAME or kind == PROTO:
                position += arguments[opcode]
            elif kind == GLOBAL:  # two lines: module, name
                position = data.index(b"\n", data.index(b"\n", position) + 1) + 1
                push(0)
            elif kind == POP:
                if stack and (not marks or len(stack) > marks[-1]):
                    pop()
                else:
                    marks.pop()
            elif kind == POP_MARK:
                del stack[marks.pop():]
            elif kind == DUP:
                push(stack[-1])
            elif kind == STOP:
                break
            else:
                raise _unsupported(opcode)
        else:
            raise _too_many_operations()
    except ValueError:  # a GLOBAL without its two lines
        raise _Refusal(_TRUNCATED) from None
    except IndexError:  # read past the end, or popped an empty stack
        raise _Refusal(_TRUNCATED if position >= size else _MALFORMED) from None
    if position > size:
        raise _Refusal(_TRUNCATED)
    if position < size:
        raise _Refusal(_TRAILING_BYTES)
    if len(stack) != 1 or marks:
        raise _Refusal(_MALFORMED)


# --- step 2: the restricted unpickler --------------------------------------------------------


class _Record:
    """An inert stand-in for an object of an allowed torch class: it only keeps the attributes
    the pickle sets (``BUILD``), and takes no constructor arguments."""

    __slots__ = ("fields",)
    torch_name = "object"

    def __setstate__(self, state: object) -> None:
        if hasattr(self, "fields"):
            raise _Refusal(f"a {self.torch_name} built twice")
        if type(state) is tuple and len(state) == 2:  # (instance dict or None, slot values)
            instance, slots = state
            state = {**(instance or {}), **(slots or {})} if _all_dicts(instance, slots) else None
        if type(state) is not dict:
            raise _Refusal(f"a {self.torch_name} whose attributes are not a dict")
        self.fields = state


def _all_dicts(*values: object) -> bool:
    return all(value is None or type(value) is dict for value in values)


class _StateRecord(_Record):
    __slots__ = ()
    torch_name = "_RendezvousState"


class _NodeRecord(_Record):
    __slots__ = ("node",)  # the Node it converts to, set once its attributes are known good
    torch_name = "_NodeDesc"

    def __setstate__(self, state: object) -> None:
        _Record.__setstate__(self, state)
        fields = self.fields
        addr, pid, local_id = fields.get("addr"), fields.get("pid"), fields.get("local_id")
        if (type(addr) is str and type(pid) is int and type(local_id) is int
                and -_INT64 <= pid < _INT64 and -_INT64 <= local_id < _INT64):
            self.node = _interned(addr, pid, local_id)


_ALLOWED_GLOBALS: dict[tuple[str, str], object] = {
    (TORCH_MODULE, "_RendezvousState"): _StateRecord,
    (TORCH_MODULE, "_NodeDesc"): _NodeRecord,
    ("datetime", "datetime"): datetime,
    ("datetime", "timezone"): timezone,
    ("datetime", "timedelta"): timedelta,
}


def _clip(name: str) -> str:
    """``name`` shortened and escaped for an error message."""
    text = name if len(name) <= 60 else name[:57] + "..."
    return text.encode("unicode_escape").decode("ascii").replace("'", "\\'")


class _RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that resolves only the globals a rendezvous state needs."""

    def find_class(self, module: str, name: str) -> object:
        try:
            return _ALLOWED_GLOBALS[module, name]
        except (KeyError, TypeError):
            raise _Refusal(f"forbidden global '{_clip(str(module))}.{_clip(str(name))}'") from None

    def persistent_load(self, pid: object) -> object:
        raise _Refusal("a persistent id")


def _load(data: bytes) -> object:
    try:
        return _RestrictedUnpickler(io.BytesIO(data), fix_imports=False).load()
    except _Refusal:
        raise
    except EOFError:
        raise _Refusal("truncated pickle") from None
    except RecursionError:
        raise _Refusal("nested too deeply") from None
    except MemoryError:
        raise _Refusal("too large to load") from None
    except Exception as exc:
        raise _Refusal(f"malformed pickle, {type(exc).__name__}") from None


# --- step 3: fields to snapshot --------------------------------------------------------------


_NONE = type(None)
_MISSING = object()


def _kind(value: object) -> str:
    if isinstance(value, _Record):
        return value.torch_name
    return "None" if value is None else type(value).__name__


def _typed(value: Any, expected: tuple[type, ...], what: str) -> Any:
    """``value`` if its type is exactly one of ``expected`` (an int: within 64 bits)."""
    if type(value) not in expected:
        names = " or ".join("None" if kind is _NONE else kind.__name__ for kind in expected)
        raise _Refusal(f"{what} is {_kind(value)}, expected {names}")
    if type(value) is int and not -_INT64 <= value < _INT64:
        raise _Refusal(f"{what} is out of the 64-bit range")
    return value


def _field(record: _Record, name: str, expected: tuple[type, ...], default: object = _MISSING) -> Any:
    """The attribute ``name`` the pickle set on ``record``, type-checked."""
    fields = getattr(record, "fields", None)
    if fields is None:
        raise _Refusal(f"a {record.torch_name} without attributes")
    value = fields.get(name, default)
    if value is _MISSING:
        raise _Refusal(f"a {record.torch_name} without '{name}'")
    what = f"'{name}'" if type(record) is _StateRecord else f"a {record.torch_name}'s '{name}'"
    return _typed(value, expected, what)


def _node(record: object, where: str) -> Node:
    if type(record) is not _NodeRecord:
        raise _Refusal(f"'{where}' holds {_kind(record)}, expected _NodeDesc")
    node = getattr(record, "node", None)
    if node is None:  # never built, or an attribute is wrong: say which
        _field(record, "addr", (str,)), _field(record, "pid", (int,)), _field(record, "local_id", (int,))
        raise _Refusal(f"a malformed _NodeDesc in '{where}'")  # not reached: the checks above refuse
    return node


_INTERNED: dict[tuple[str, int, int], Node] = {}
_INTERNED_LIMIT = 100_000


def _interned(addr: str, pid: int, local_id: int) -> Node:
    """The one Node decoded states use for ``(addr, pid, local_id)``, so that comparing the
    snapshots of two revisions (a diff, a heartbeat check) finds each node by identity instead
    of comparing its fields. The table is emptied when it reaches :data:`_INTERNED_LIMIT`."""
    key = (addr, pid, local_id)
    node = _INTERNED.get(key)
    if node is None:
        if len(_INTERNED) >= _INTERNED_LIMIT:
            _INTERNED.clear()
        node = _INTERNED[key] = Node(addr, pid, local_id)
    return node


_SETS = (set, frozenset)


def _snapshot_of(loaded: object) -> RendezvousSnapshot:
    """The snapshot of an unpickled state. A node record's Node was made as it was built; where
    a record has none (it is not a _NodeDesc, or one with a wrong attribute), :func:`_node` says
    why. (Only _NodeRecord has a ``node`` attribute among what the unpickler can make.)"""
    if type(loaded) is not _StateRecord:
        raise _Refusal(f"the pickle holds {_kind(loaded)}, not a _RendezvousState")
    deadline = _field(loaded, "deadline", (datetime, _NONE))
    return RendezvousSnapshot(
        round=_field(loaded, "round", (int,)),
        complete=_field(loaded, "complete", (bool,)),
        closed=_field(loaded, "closed", (bool,)),
        deadline=None if deadline is None else _as_utc(deadline),
        participants={
            (getattr(node, "node", None) or _node(node, "participants")):
                rank if type(rank) is int and -_INT64 <= rank < _INT64 else _typed(rank, (int,), "a participant's rank")
            for node, rank in _field(loaded, "participants", (dict,)).items()
        },
        wait_list=frozenset(
            getattr(node, "node", None) or _node(node, "wait_list") for node in _field(loaded, "wait_list", _SETS)
        ),
        # redundancy_list arrived in later torch releases; a state without it has none.
        redundancy_list=frozenset(
            getattr(node, "node", None) or _node(node, "redundancy_list")
            for node in _field(loaded, "redundancy_list", _SETS, set())
        ),
        last_heartbeats={
            (getattr(node, "node", None) or _node(node, "last_heartbeats")):
                _as_utc(moment) if type(moment) is datetime else _typed(moment, (datetime,), "a heartbeat")
            for node, moment in _field(loaded, "last_heartbeats", (dict,)).items()
        },
    )

"""Hostile input for rdzv.state: well over a thousand payloads (random bytes and opcode streams, bad
base64, truncated and oversized states, pickles that name os.system, eval, exec, subprocess,
__import__ and getattr chains, deep nesting, memo abuse, fields of the wrong type). Every one
must raise UndecodableStateError: no other exception, no crash, and no code run (a canary file
that any of the payloads would create, if run, must not exist)."""

from __future__ import annotations

import base64
import builtins
import os
import pickle
import random
import struct
import subprocess
from collections.abc import Callable, Iterator
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import pytest
from torch.distributed.elastic.rendezvous.dynamic_rendezvous import _NodeDesc, _RendezvousState

from rdzv.state import (
    MAX_OPERATIONS,
    MAX_STATE_BYTES,
    TORCH_MODULE,
    RendezvousSnapshot,
    UndecodableStateError,
    decode_state,
    decode_state_b64,
)

pytestmark = [pytest.mark.reliability, pytest.mark.timeout(120)]

SEED = 20240611
Payloads = list[tuple[str, bytes | str]]


@pytest.fixture
def rng() -> random.Random:
    return random.Random(SEED)


@pytest.fixture
def canary(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "CANARY"
    yield path
    assert not path.exists(), "a payload ran code"


def real_state(nodes: int = 4, **fields) -> _RendezvousState:
    """A state as torch's handler writes it (see test_state.py)."""
    now = datetime.now(timezone.utc)
    descs = [_NodeDesc(f"node-{i}.example.com", 4000 + i, i % 3) for i in range(nodes)]
    state = _RendezvousState()
    state.round, state.complete, state.deadline = 2, False, now + timedelta(seconds=30)
    state.participants = {desc: 0 for desc in descs[: max(1, nodes - 2)]}
    state.wait_list = set(descs[max(1, nodes - 2): nodes - 1])
    state.redundancy_list = set(descs[nodes - 1:]) if nodes > 2 else set()
    state.last_heartbeats = {desc: now - timedelta(milliseconds=i) for i, desc in enumerate(descs)}
    for name, value in fields.items():
        setattr(state, name, value)
    return state


def refused(payloads: Payloads, decode: Callable[[bytes | str], object] = decode_state) -> int:
    """Decode each payload; fail listing those not refused with UndecodableStateError."""
    problems = []
    for label, payload in payloads:
        try:
            decode(payload)
            problems.append(f"{label}: decoded")
        except UndecodableStateError:
            pass
        except Exception as exc:  # noqa: BLE001 - the point is that nothing else escapes
            problems.append(f"{label}: {type(exc).__name__}: {exc}")
    assert not problems, f"{len(problems)} of {len(payloads)} not refused, e.g. {problems[:5]}"
    return len(payloads)


# --- hand-built opcodes ----------------------------------------------------------------------

HEADER = b"\x80\x04"


def text(value: str) -> bytes:
    data = value.encode("utf-8", "surrogatepass")
    if len(data) < 256:
        return b"\x8c" + bytes([len(data)]) + data
    return b"X" + struct.pack("<I", len(data)) + data


def global_(module: str, name: str) -> bytes:
    return text(module) + text(name) + b"\x93"


def call(function: bytes, *arguments: bytes) -> bytes:
    return function + b"(" + b"".join(arguments) + b"tR"


def program(body: bytes) -> bytes:
    return HEADER + body + b"."


class Reduces:
    """Pickles as ``function(*arguments)``: what a malicious writer would put in a state."""

    def __init__(self, function: Callable, *arguments: object) -> None:
        self.function, self.arguments = function, arguments

    def __reduce__(self):
        return self.function, self.arguments


def hostile_calls(canary: Path) -> list[tuple[str, Reduces]]:
    command = f"touch {canary}"
    return [
        ("os.system", Reduces(os.system, command)),
        ("builtins.eval", Reduces(builtins.eval, f"open({str(canary)!r}, 'w')")),
        ("builtins.exec", Reduces(builtins.exec, f"open({str(canary)!r}, 'w')")),
        ("subprocess.Popen", Reduces(subprocess.Popen, ["touch", str(canary)])),
        ("subprocess.call", Reduces(subprocess.call, ["touch", str(canary)])),
        ("builtins.open", Reduces(builtins.open, str(canary), "w")),
        ("builtins.__import__", Reduces(builtins.__import__, "os")),
        ("builtins.getattr", Reduces(getattr, Reduces(builtins.__import__, "os"), "system")),
        ("pickle.loads", Reduces(pickle.loads, pickle.dumps(Reduces(os.system, command)))),
        ("datetime.date", Reduces(date, 2024, 1, 1)),
        ("builtins.set", Reduces(set, [1])),
        ("builtins.object", Reduces(object)),
    ]


# --- the payloads, by kind ---------------------------------------------------------------------


def random_bytes(rng: random.Random) -> Payloads:
    payloads: Payloads = []
    for i in range(300):
        body = rng.randbytes(rng.choice([0, 1, 2, 8, 64, 512, 3000]))
        prefix = [b"", HEADER, HEADER + b"\x95" + struct.pack("<Q", len(body))][i % 3]
        payloads.append((f"random bytes #{i}", prefix + body))
    return payloads


ALLOWED_GLOBALS = [("datetime", "datetime"), ("datetime", "timedelta"), ("datetime", "timezone"),
                   (TORCH_MODULE, "_RendezvousState"), (TORCH_MODULE, "_NodeDesc")]


def random_program(rng: random.Random) -> bytes:
    """Random opcodes that keep the stack and memo consistent, so they pass the opcode check and
    the unpickler calls the allowed classes with nonsense (NEWOBJ, REDUCE, BUILD on anything)."""
    scalars: list[Callable[[], bytes]] = [
        lambda: rng.choice([b"N", b"\x88", b"\x89", b")", b"]", b"}", b"\x8f"]),
        lambda: b"K" + bytes([rng.randrange(256)]),
        lambda: b"J" + struct.pack("<i", rng.randrange(-2**31, 2**31)),
        lambda: b"G" + struct.pack("<d", rng.uniform(-1e9, 1e9)),
        lambda: text(rng.choice(["round", "complete", "deadline", "participants", "addr", "pid", "x" * 300])),
        lambda: b"C\x0a" + rng.randbytes(10),
        lambda: global_(*rng.choice(ALLOWED_GLOBALS)),
    ]
    # opcode: (items it needs above the innermost mark, items it leaves in their place)
    operations = {b"\x85": (1, 1), b"\x86": (2, 1), b"\x87": (3, 1), b"R": (2, 1), b"\x81": (2, 1),
                  b"\x92": (3, 1), b"b": (2, 1), b"a": (2, 1), b"s": (3, 1), b"0": (1, 0), b"2": (1, 2)}
    from_mark = [b"t", b"l", b"d", b"\x91", b"e", b"u", b"\x90", b"1"]  # the last four need an item below the mark
    body, sizes, memo = [b"("], [0], 0  # sizes: items above each open mark
    for _ in range(rng.randrange(1, 120)):
        choice = rng.random()
        if choice < 0.4:
            body.append(rng.choice(scalars)())
            sizes[-1] += 1
        elif choice < 0.5 and sizes[-1]:
            body.append(b"\x94")
            memo += 1
        elif choice < 0.6 and memo:
            body.append(b"h" + bytes([rng.randrange(min(memo, 256))]))
            sizes[-1] += 1
        elif choice < 0.7 and len(sizes) < 6:
            body.append(b"(")
            sizes.append(0)
        elif choice < 0.8 and len(sizes) > 1:
            opcode = rng.choice(from_mark if sizes[-2] else from_mark[:4])
            body.append(opcode)
            sizes.pop()
            sizes[-1] += {b"t": 1, b"l": 1, b"d": 1, b"\x91": 1}.get(opcode, 0)
        else:
            opcode, (needs, leaves) = rng.choice(list(operations.items()))
            if sizes[-1] >= needs:
                body.append(opcode)
                sizes[-1] += leaves - needs
    body.append(b"t" * (len(sizes) - 1) + b"l")
    return program(b"".join(body))


def random_programs(rng: random.Random) -> Payloads:
    return [(f"random program #{i}", random_program(rng)) for i in range(300)]


def bad_base64(rng: random.Random) -> Payloads:
    good = base64.b64encode(pickle.dumps(real_state())).decode()
    payloads: Payloads = []
    for i in range(60):
        at = rng.randrange(len(good))
        payloads.append((f"base64 with a bad character #{i}", good[:at] + rng.choice("!*-_.é \n\t%") + good[at + 1:]))
    for i in range(40):
        alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=!@#$ \n"
        payloads.append((f"random text #{i}", "".join(rng.choice(alphabet) for _ in range(rng.randrange(1, 400)))))
    for i in range(40):  # cut anywhere: bad padding or a truncated pickle
        payloads.append((f"truncated base64 #{i}", good[: rng.randrange(len(good))]))
    payloads += [
        ("padding stripped", good.rstrip("=") + "A"),
        ("empty", ""),
        ("url-safe alphabet", good.replace("+", "-").replace("/", "_") + "-_"),
        ("oversized", "A" * ((MAX_STATE_BYTES + 2) // 3 * 4 + 4)),
        ("bytes, not ascii", "gASV".encode() + b"\xff"),
    ]
    return payloads


def truncations(rng: random.Random) -> Payloads:
    small = pickle.dumps(real_state())
    large = pickle.dumps(real_state(2000))
    return ([(f"first {n} of {len(small)} bytes", small[:n]) for n in range(len(small))]
            + [(f"first {n} of {len(large)} bytes", large[:n]) for n in sorted(rng.sample(range(len(large)), 60))])


def hostile_globals(canary: Path) -> Payloads:
    payloads: Payloads = []
    for name, hostile in hostile_calls(canary):
        for protocol in range(pickle.HIGHEST_PROTOCOL + 1):
            payloads.append((f"{name} alone, protocol {protocol}", pickle.dumps(hostile, protocol=protocol)))
        for field in ("round", "deadline", "participants", "wait_list", "last_heartbeats"):
            payloads.append((f"{name} as '{field}'", pickle.dumps(real_state(**{field: hostile}))))
        node = _NodeDesc("h", 1, 0)
        object.__setattr__(node, "addr", hostile)
        payloads.append((f"{name} as a node's addr", pickle.dumps(real_state(participants={node: 0}))))
    command = text(f"touch {canary}")
    payloads += [
        ("getattr(__import__('os'), 'system')(...)", program(call(call(
            global_("builtins", "getattr"), call(global_("builtins", "__import__"), text("os")), text("system")),
            command))),
        ("posix.system via STACK_GLOBAL", program(call(global_("posix", "system"), command))),
        ("os.system via GLOBAL", program(b"cos\nsystem\n(" + command + b"tR")),
        ("__builtin__.eval, protocol 2 names", program(b"c__builtin__\neval\n(" + text("1") + b"tR")),
        ("copy_reg._reconstructor", program(call(global_("copy_reg", "_reconstructor"), b"N"))),
        ("copyreg._reconstructor", program(call(global_("copyreg", "_reconstructor"), b"N"))),
        ("INST opcode", HEADER + b"(" + command + b"ios\nsystem\n."),
        ("OBJ opcode", HEADER + b"(" + global_("os", "system") + command + b"o."),
        ("PERSID", HEADER + b"Pos.system\n."),
        ("BINPERSID", HEADER + command + b"Q."),
        ("EXT1", HEADER + b"\x82\x01."),
        ("EXT2", HEADER + b"\x83\x01\x00."),
        ("EXT4", HEADER + b"\x84\x01\x00\x00\x00."),
        ("NEXT_BUFFER", b"\x80\x05\x97."),
        ("READONLY_BUFFER", b"\x80\x05\x97\x98."),
    ]
    near_misses = [
        ("datetime", "datetime.__reduce__"), ("datetime", "datetime.now.__self__"), ("datetime ", "datetime"),
        ("datetime", "tzinfo"), ("datetime", "sys"), (TORCH_MODULE, "_RendezvousState.__init__.__globals__"),
        (TORCH_MODULE, "pickle"), (TORCH_MODULE, "_NodeDescGenerator"), (TORCH_MODULE, "datetime"),
        (TORCH_MODULE + " ", "_NodeDesc"), ("rdzv.state", "Node"), ("rdzv.state", "_StateRecord"),
        ("builtins", "getattr"), ("nt", "system"), ("torch", "load"),
    ]
    for module, name in near_misses:
        payloads.append((f"global {module}.{name}", program(call(global_(module, name)))))
    return payloads


def abused_allowed_classes() -> Payloads:
    """The five allowed globals, called the way no state calls them."""
    state, node = global_(TORCH_MODULE, "_RendezvousState"), global_(TORCH_MODULE, "_NodeDesc")
    dt, td, tz = global_("datetime", "datetime"), global_("datetime", "timedelta"), global_("datetime", "timezone")
    return [
        ("state class called with an argument", program(call(state, b"N"))),
        ("state NEWOBJ with arguments", program(state + b"(K\x01t\x81")),
        ("state NEWOBJ_EX with keywords", program(state + b")}" + text("round") + b"K\x01s\x92")),
        ("state built twice", program(state + b")\x81}b}b")),
        ("state built from a list", program(state + b")\x81]b")),
        ("state built with slots that are not a dict", program(state + b")\x81N]\x86b")),
        ("BUILD on the state class itself", program(state + b"}b")),
        ("node class called with arguments", program(call(node, text("h"), b"K\x01K\x00"))),
        ("a state never built", program(state + b")\x81")),
        ("an empty state", program(state + b")\x81}b")),
        ("datetime with bad bytes", program(call(dt, b"C\x03abc"))),
        ("datetime with a node as tzinfo", program(call(dt, b"C\x0a" + b"\x07\xe8\x01\x01" + bytes(6),
                                                        node + b")\x81"))),
        ("timedelta overflow", program(call(td, b"\x8a\x09" + b"\xff" * 8 + b"\x7f"))),
        ("timezone of 25 hours", program(call(tz, call(td, b"K\x00J" + struct.pack("<i", 90000))))),
        ("BUILD on a datetime", program(call(dt, b"M\xe8\x07K\x01K\x01") + b"}" + text("x") + b"K\x01sb")),
        ("APPEND to a state", program(state + b")\x81K\x01a")),
        ("SETITEMS into a datetime class", program(dt + b"(" + text("a") + b"K\x01u")),
        ("a huge integer round", pickle.dumps(real_state(round=1 << 100_000))),
    ]


def deep_nesting() -> Payloads:
    payloads: Payloads = []
    for depth in (1_000, 100_000, 300_000):
        payloads += [
            (f"tuple {depth} deep as a dict key", program(b"})" + b"\x85" * depth + b"Ns")),
            (f"tuple {depth} deep in a set", program(b"\x8f()" + b"\x85" * depth + b"\x90")),
            (f"tuple {depth} deep in a frozenset", program(b"()" + b"\x85" * depth + b"\x91")),
            (f"list {depth} deep", program(b"]" * depth + b"a" * (depth - 1))),
            (f"dict {depth} deep", program(b"}" + b"K\x01}" * depth + b"s" * depth)),
            (f"frozenset {depth} deep", program(b"(" * depth + b"(\x91" + b"\x91" * depth)),
            (f"{depth} marks", program(b"(" * depth + b"N")),
            (f"tuple {depth} deep as the state", program(b")" + b"\x85" * depth)),
        ]
    deep_key = b")" + b"\x85" * 200_000
    good = pickle.dumps(real_state())
    payloads.append(("a deep tuple key inside a real state", good[:-2] + b"}" + deep_key + b"Ns" + good[-2:]))
    payloads += [
        ("memo index 2**31", program(b"Nr" + struct.pack("<I", 2**31 - 1))),
        ("memo index 2**32 - 1", program(b"Nr\xff\xff\xff\xff")),
        ("memo index skipping one", program(b"Nq\x01")),
        ("memo get out of range", program(b"N\x94j\xff\xff\xff\x7f")),
        ("memo get of nothing", program(b"h\x00")),
    ]
    return payloads


def oversized(rng: random.Random) -> Payloads:
    return [
        ("3 MB of random bytes", HEADER + rng.randbytes(3_000_000) + b"."),
        ("3 MB of MARKs", program(b"(" * 3_000_000)),
        ("more operations than allowed", program(b"N0" * (MAX_OPERATIONS // 2 + 1) + b"N")),
        ("3 MB string that is not UTF-8", program(b"X" + struct.pack("<I", 3_000_000) + b"\xff" * 3_000_000)),
        ("a 3 MB state cut short", pickle.dumps(real_state(30_000))[:-10]),
        ("a 64 MiB length prefix with no data", program(b"\x8e" + struct.pack("<Q", 2**62))),
        ("over 64 MiB", HEADER + b"N" * MAX_STATE_BYTES + b"."),
    ]


def wrong_fields() -> Payloads:
    node = _NodeDesc("h", 1, 0)

    def odd_node(**attributes) -> _NodeDesc:
        desc = _NodeDesc("h", 1, 0)
        for name, value in attributes.items():
            object.__setattr__(desc, name, value)
        return desc

    variants = [
        {"round": "3"}, {"round": 3.0}, {"round": None}, {"round": True}, {"round": -(1 << 64)},
        {"complete": 1}, {"complete": None}, {"closed": "no"}, {"closed": 0},
        {"deadline": "tomorrow"}, {"deadline": 1714560000}, {"deadline": timedelta(seconds=1)},
        {"participants": [node]}, {"participants": None}, {"participants": {node: "0"}}, {"participants": {node: 0.5}},
        {"participants": {"h_1_0": 0}}, {"participants": {(1, 2): 0}}, {"participants": {node: None}},
        {"participants": {odd_node(addr=b"h"): 0}}, {"participants": {odd_node(pid="1"): 0}},
        {"participants": {odd_node(local_id=1.0): 0}}, {"participants": {odd_node(pid=1 << 80): 0}},
        {"wait_list": [node]}, {"wait_list": {1, 2}}, {"wait_list": None}, {"wait_list": {"h"}},
        {"redundancy_list": {node: 1}}, {"redundancy_list": [node]}, {"redundancy_list": {odd_node(addr=None)}},
        {"last_heartbeats": [node]}, {"last_heartbeats": {node: 5}}, {"last_heartbeats": {"h": datetime.now()}},
        {"last_heartbeats": {node: "now"}}, {"last_heartbeats": {node: timedelta(1)}},
    ]
    payloads: Payloads = [(f"state with {fields}", pickle.dumps(real_state(**fields))) for fields in variants]
    for name in ("round", "complete", "closed", "deadline", "participants", "wait_list", "last_heartbeats"):
        state = real_state()
        delattr(state, name)
        payloads.append((f"state without {name}", pickle.dumps(state)))
    good = pickle.dumps(real_state())
    payloads += [
        ("a node without pid", good.replace(b"\x8c\x03pid", b"\x8c\x03pig")),
        ("a node with a list for attributes", program(
            global_(TORCH_MODULE, "_RendezvousState") + b")\x81}" + text("participants") + b"}"
            + global_(TORCH_MODULE, "_NodeDesc") + b")\x81]bK\x00ssb")),
        ("the state is a dict", pickle.dumps(dict(real_state().__dict__))),
        ("the state is a node", pickle.dumps(node)),
        ("the state is None", pickle.dumps(None)),
        ("the state is a datetime", pickle.dumps(datetime.now(timezone.utc))),
        ("a list of states", pickle.dumps([real_state()])),
    ]
    return payloads


# --- the tests -------------------------------------------------------------------------------------


def test_random_bytes_and_opcode_streams(rng, canary):
    assert refused(random_bytes(rng)) + refused(random_programs(rng)) == 600


def test_bad_base64(rng, canary):
    assert refused(bad_base64(rng), decode_state_b64) >= 140


def test_every_truncation_of_a_real_state(rng, canary):
    assert refused(truncations(rng)) > 500


def test_globals_that_would_run_code(canary):
    assert refused(hostile_globals(canary)) > 150


def test_the_allowed_classes_abused(canary):
    refused(abused_allowed_classes())


def test_deep_nesting_and_memo_abuse(canary):
    refused(deep_nesting())


def test_oversized_payloads(rng, canary):
    refused(oversized(rng))


def test_wrong_field_types(canary):
    refused(wrong_fields())


def test_at_least_a_thousand_hostile_payloads(rng, canary):
    count = sum(len(payloads) for payloads in (
        random_bytes(rng), random_programs(rng), bad_base64(rng), truncations(rng), hostile_globals(canary),
        abused_allowed_classes(), deep_nesting(), wrong_fields(),
    ))
    assert count >= 1000


def test_byte_flips_of_a_real_state_decode_or_are_refused(rng, canary):
    """A flipped byte may leave a valid state (a changed letter in an addr): either outcome is
    fine, anything else is not."""
    good = pickle.dumps(real_state(8))
    decoded = 0
    for i in range(400):
        data = bytearray(good)
        for _ in range(rng.choice([1, 1, 2, 5])):
            data[rng.randrange(len(data))] = rng.randrange(256)
        try:
            assert isinstance(decode_state(bytes(data)), RendezvousSnapshot)
            decoded += 1
        except UndecodableStateError:
            pass
    assert 0 < decoded < 400


def test_the_canary_would_catch_a_payload_that_runs(canary, tmp_path):
    """The hostile payloads are live: plain pickle runs them and the canary appears."""
    (_, hostile), = [(name, call) for name, call in hostile_calls(canary) if name == "os.system"]
    pickle.loads(pickle.dumps(hostile))
    assert canary.exists()
    canary.unlink()

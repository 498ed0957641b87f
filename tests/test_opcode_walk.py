"""The opcode check in C (rdzv._opcode_walk) refuses exactly what the Python walk refuses, with the
same reason, and finds the same datetime payloads: over the fuzz suite's hostile corpora, every
truncation and thousands of byte flips of real states, and real states of every size."""

from __future__ import annotations

import pickle
import random

import pytest
import test_state_fuzz as corpora

from rdzv import state

pytestmark = [pytest.mark.reliability, pytest.mark.timeout(300)]


def walked(data: bytes, compiled) -> tuple[str | None, list[int]]:
    """The refusal reason (None if accepted) and the payload offsets, with the C walk or without."""
    saved, state._COMPILED = state._COMPILED, compiled
    payloads: list[int] = []
    try:
        state._check_opcodes(data, payloads)
        return None, payloads
    except state._Refusal as refusal:
        return refusal.reason, payloads
    finally:
        state._COMPILED = saved


def differences(payloads) -> list[str]:
    found = []
    for label, data in payloads:
        if isinstance(data, str):
            continue
        in_c, in_python = walked(data, state._COMPILED), walked(data, None)
        if in_c != in_python:
            found.append(f"{label}: C {in_c[0]!r}, Python {in_python[0]!r}")
    return found


@pytest.fixture(scope="module", autouse=True)
def the_c_walk_is_built():
    assert state._COMPILED is not None, (
        "rdzv._opcode_walk was not built (pip install -e . needs a C compiler and Python's headers)")


def test_the_hostile_corpora_get_the_same_refusals(tmp_path):
    rng = random.Random(corpora.SEED)
    payloads = [item for corpus in (
        corpora.random_bytes(rng), corpora.random_programs(rng), corpora.truncations(rng),
        corpora.hostile_globals(tmp_path / "CANARY"), corpora.abused_allowed_classes(), corpora.deep_nesting(),
        corpora.oversized(rng), corpora.wrong_fields(),
    ) for item in corpus]
    assert len(payloads) > 1000
    assert differences(payloads) == []
    assert not (tmp_path / "CANARY").exists()


def test_every_truncation_and_thousands_of_byte_flips_get_the_same_outcome():
    rng = random.Random(corpora.SEED + 1)
    good = pickle.dumps(corpora.real_state(12))
    payloads = [(f"first {end} bytes", good[:end]) for end in range(len(good))]
    for flip in range(3000):
        data = bytearray(good)
        for _ in range(rng.choice([1, 1, 2, 3, 8])):
            data[rng.randrange(2, len(data))] = rng.randrange(256)
        payloads.append((f"flip {flip}", bytes(data)))
    for insert in range(500):  # an opcode of every kind somewhere it does not belong
        at = rng.randrange(2, len(good))
        payloads.append((f"insert {insert}", good[:at] + bytes([rng.randrange(256)]) + good[at:]))
    assert differences(payloads) == []


@pytest.mark.parametrize("nodes", [1, 3, 100, 2000])
def test_real_states_pass_with_the_same_datetime_payloads(nodes):
    data = pickle.dumps(corpora.real_state(nodes))
    reason, payloads = walked(data, state._COMPILED)
    assert reason is None and (reason, payloads) == walked(data, None)
    assert len(payloads) == nodes + 1  # every heartbeat and the deadline


def test_the_limits_are_rdzv_states(monkeypatch):
    """The C walk takes its limits from rdzv.state (one home): lowering them there lowers them."""
    deep = pickle.dumps([[[[[0]]]]], protocol=4)
    monkeypatch.setattr(state, "MAX_NESTING", 3)
    assert walked(deep, state._COMPILED)[0] == walked(deep, None)[0] == "nested deeper than 3 levels"
    monkeypatch.setattr(state, "MAX_OPERATIONS", 5)
    reason = walked(pickle.dumps(corpora.real_state(2)), state._COMPILED)[0]
    assert reason == "more than 5 pickle operations"


def test_the_kind_numbers_agree():
    from rdzv import _opcode_walk

    assert _opcode_walk.KINDS == state._KIND_NAMES
    assert [getattr(state, name) for name in state._KIND_NAMES] == list(range(len(state._KIND_NAMES)))

"""Turns for retrying a lost compare-and-swap (rdzv.write_turns), alone and inside the
rendezvous backend on a real etcd. Turns that never lapse make the order deterministic."""

from __future__ import annotations

import os
import threading
import time

import pytest

from rdzv.backend import RENDEZVOUS_PREFIX, EtcdRendezvousBackend
from rdzv.kv import KeyValue
from rdzv.write_turns import LONGEST_WAIT_S, TURN_LAPSES_AFTER_S, WRITE_TURNS, WriteTurns

NEVER_S = 600.0


def value(revision: int) -> KeyValue:
    return KeyValue("/k", f"v{revision}", revision)


class InThread:
    """Run ``call`` in its own thread; ``result(timeout)`` waits for what it returned."""

    def __init__(self, call) -> None:
        self._done = threading.Event()
        self._result: list[object] = []
        self._thread = threading.Thread(target=self._run, args=(call,), daemon=True)
        self._thread.start()

    def _run(self, call) -> None:
        self._result.append(call())
        self._done.set()

    def finished_within(self, seconds: float) -> bool:
        return self._done.wait(seconds)

    def result(self, timeout: float = 30.0):
        assert self._done.wait(timeout), "the call did not return"
        return self._result[0]


def test_a_free_turn_is_taken_at_once_and_returns_the_value_lost_to():
    turns = WriteTurns(lapses_after_s=NEVER_S)
    assert turns.take_turn("k", value(3)) == value(3)


def test_a_loser_waits_for_the_holder_and_then_gets_the_newest_value():
    turns = WriteTurns(lapses_after_s=NEVER_S, longest_wait_s=NEVER_S)
    turns.take_turn("k", value(3))  # this thread now holds the turn
    waiter = InThread(lambda: turns.take_turn("k", value(3)))
    assert not waiter.finished_within(0.3)
    turns.seen("k", value(4))  # the holder's retry won
    turns.end_turn("k")
    assert waiter.result() == value(4)


def test_older_values_never_replace_newer_ones():
    turns = WriteTurns()
    turns.seen("k", value(7))
    turns.seen("k", value(5))
    assert turns.take_turn("k", value(6)) == value(7)


def test_a_vanished_key_is_reported_as_none():
    turns = WriteTurns()
    turns.seen("k", value(7))
    assert turns.take_turn("k", None) is None


def test_only_the_holder_can_end_a_turn():
    turns = WriteTurns(lapses_after_s=NEVER_S, longest_wait_s=NEVER_S)
    turns.take_turn("k", value(1))
    InThread(lambda: turns.end_turn("k")).result()
    waiter = InThread(lambda: turns.take_turn("k", value(1)))
    assert not waiter.finished_within(0.3)
    turns.end_turn("k")
    assert waiter.result() == value(1)


def test_a_turn_whose_holder_never_comes_back_lapses():
    turns = WriteTurns(lapses_after_s=0.3, longest_wait_s=NEVER_S)
    turns.take_turn("k", value(1))
    began = time.monotonic()
    assert InThread(lambda: turns.take_turn("k", value(1))).result() == value(1)
    assert time.monotonic() - began >= 0.25


# -- the defaults (README: "a turn lapses after 100 ms ... nobody waits more than 2 s") ---------


def test_the_defaults_are_a_100_ms_lapse_and_a_2_s_cap():
    assert (TURN_LAPSES_AFTER_S, LONGEST_WAIT_S) == (0.1, 2.0)
    assert (WRITE_TURNS._lapses_after_s, WRITE_TURNS._longest_wait_s) == (0.1, 2.0)


def test_by_default_an_abandoned_turn_lapses_and_the_waiter_takes_it():
    turns = WriteTurns(longest_wait_s=NEVER_S)  # the default lapse; nobody gives up
    began = time.monotonic()
    turns.take_turn("k", value(1))  # this thread holds the turn and never comes back
    waiter = InThread(lambda: (turns.take_turn("k", value(1)), threading.get_ident()))
    returned, waiter_id = waiter.result()
    waited = time.monotonic() - began
    assert returned == value(1)
    assert turns._keys["k"].holder == waiter_id, "the waiter returned without the turn"
    assert TURN_LAPSES_AFTER_S <= waited < 30


def test_by_default_a_loser_waits_at_most_2_s_and_returns_without_the_turn():
    turns = WriteTurns(lapses_after_s=NEVER_S)  # the default cap; the turn is never handed on
    turns.take_turn("k", value(1))
    turns.seen("k", value(2))
    holder = threading.get_ident()
    began = time.monotonic()
    assert InThread(lambda: turns.take_turn("k", value(1))).result(timeout=60) == value(2)
    assert LONGEST_WAIT_S <= time.monotonic() - began < 30
    assert turns._keys["k"].holder == holder


def test_a_loser_gives_up_waiting_and_still_gets_the_newest_value():
    turns = WriteTurns(lapses_after_s=NEVER_S, longest_wait_s=0.3)
    turns.take_turn("k", value(1))
    turns.seen("k", value(2))
    assert InThread(lambda: turns.take_turn("k", value(1))).result() == value(2)


def test_keys_are_independent():
    turns = WriteTurns(lapses_after_s=NEVER_S, longest_wait_s=NEVER_S)
    turns.take_turn("a", value(1))
    assert InThread(lambda: turns.take_turn("b", value(1))).result() == value(1)


def test_ending_a_turn_wakes_a_waiter_of_that_key_not_of_another():
    turns = WriteTurns(lapses_after_s=NEVER_S, longest_wait_s=NEVER_S)
    turns.take_turn("a", value(1))
    turns.take_turn("b", value(1))
    waits_for_b = InThread(lambda: turns.take_turn("b", value(1)))  # waiting first
    assert not waits_for_b.finished_within(0.3)
    waits_for_a = InThread(lambda: turns.take_turn("a", value(1)))
    assert not waits_for_a.finished_within(0.3)
    turns.end_turn("a")
    assert waits_for_a.result(timeout=10) == value(1)
    assert not waits_for_b.finished_within(0.3)
    turns.end_turn("b")
    assert waits_for_b.result(timeout=10) == value(1)


def test_many_runs_do_not_grow_the_table_without_bound():
    turns = WriteTurns()
    for index in range(2000):
        turns.seen(f"run-{index}", value(index + 1))
    assert len(turns._keys) <= 256


def test_a_forked_child_starts_with_free_turns_even_if_another_thread_held_the_lock():
    holding, release = threading.Event(), threading.Event()

    def hold_the_lock() -> None:
        with WRITE_TURNS._lock:
            holding.set()
            release.wait(30)

    holder = threading.Thread(target=hold_the_lock, daemon=True)
    holder.start()
    assert holding.wait(30)
    try:
        pid = os.fork()
        if pid == 0:  # the child has no holder thread to ever release the lock
            try:
                WRITE_TURNS.seen("k", value(1))
                os._exit(0 if WRITE_TURNS.take_turn("k", value(1)) == value(1) else 1)
            finally:
                os._exit(2)
    finally:
        release.set()
        holder.join()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            assert os.waitstatus_to_exitcode(status) == 0
            return
        time.sleep(0.05)
    os.kill(pid, 9)
    os.waitpid(pid, 0)
    pytest.fail("the forked child deadlocked on the inherited lock")


# -- inside the backend, on a real etcd ---------------------------------------------------


def backends(kv, run_id: str, turns: WriteTurns | None, count: int) -> list[EtcdRendezvousBackend]:
    return [EtcdRendezvousBackend(kv, run_id, key_prefix=RENDEZVOUS_PREFIX, write_turns=turns) for _ in range(count)]


def test_a_second_loser_retries_after_the_first_with_the_state_the_first_wrote(kv, unique):
    first, second, third = backends(kv, unique, WriteTurns(lapses_after_s=NEVER_S, longest_wait_s=NEVER_S), 3)
    _, token1, _ = first.set_state(b"s1")
    _, token2, _ = first.set_state(b"s2", token1)
    assert second.set_state(b"lost", token1) == (b"s2", token2, False)  # this thread now holds the turn

    third_loses = InThread(lambda: third.set_state(b"lost too", token1))
    assert not third_loses.finished_within(0.3)
    _, token3, written = second.set_state(b"s3", token2)  # the retry wins and ends the turn
    assert written
    assert third_loses.result() == (b"s3", token3, False)
    assert third.get_state() == (b"s3", token3)


def test_reading_the_state_ends_the_turn(kv, unique):
    first, second, third = backends(kv, unique, WriteTurns(lapses_after_s=NEVER_S, longest_wait_s=NEVER_S), 3)
    _, token1, _ = first.set_state(b"s1")
    _, token2, _ = first.set_state(b"s2", token1)
    second.set_state(b"lost", token1)
    third_loses = InThread(lambda: third.set_state(b"lost too", token1))
    assert not third_loses.finished_within(0.3)
    assert second.get_state() == (b"s2", token2)  # decided not to write after all
    assert third_loses.result() == (b"s2", token2, False)


def test_backends_wait_their_turn_by_default_until_it_lapses(kv, unique):
    """No write_turns argument: the process-wide turns, a loser waiting out an abandoned turn."""
    first, second, third = [EtcdRendezvousBackend(kv, unique, key_prefix=RENDEZVOUS_PREFIX) for _ in range(3)]
    assert second._turns is WRITE_TURNS
    _, token1, _ = first.set_state(b"s1")
    _, token2, _ = first.set_state(b"s2", token1)
    began = time.monotonic()
    assert second.set_state(b"lost", token1) == (b"s2", token2, False)  # holds the turn, never retries
    third_loses = InThread(lambda: third.set_state(b"lost too", token1))
    assert third_loses.result() == (b"s2", token2, False)
    assert time.monotonic() - began >= TURN_LAPSES_AFTER_S, "the second loser did not wait for the turn"
    second.get_state()  # ends this thread's turn, if it still had it


def test_without_turns_a_loss_returns_at_once(kv, unique):
    first, second, third = backends(kv, unique, None, 3)
    _, token1, _ = first.set_state(b"s1")
    _, token2, _ = first.set_state(b"s2", token1)
    assert second.set_state(b"lost", token1) == (b"s2", token2, False)
    assert InThread(lambda: third.set_state(b"lost too", token1)).result(timeout=10) == (b"s2", token2, False)


def test_a_write_from_another_process_still_wins_over_what_the_turns_remember(kv, unique):
    """The turns only choose the order of retries; etcd's compare-and-swap still decides."""
    first, second = backends(kv, unique, WriteTurns(), 2)
    _, token1, _ = first.set_state(b"s1")
    foreign = kv.compare_and_swap(first.key, "Zm9yZWlnbg==", token1)[1]  # b"foreign", as another process would
    state, token, written = second.set_state(b"mine", token1)
    assert (state, token, written) == (b"foreign", foreign.revision, False)

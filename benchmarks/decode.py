"""What the monitor pays per revision, against torch's own read of the same bytes (``pickle.loads``).

States are real torch ``_RendezvousState`` pickles of a completed round with 100 / 1,000 /
10,000 participants, heartbeats distinct to the microsecond as real ones are
(:func:`rdzv.demo.load.build_state`). Two paths, each timed per revision and interleaved with
its reference on the very same input:

1. **full path, join revision**: ``rdzv.state.decode_state_b64`` of the stored (base64) value
   plus ``rdzv.diff.diff_states`` against the previous snapshot, for a revision in which one
   node joined the wait list (any revision that is not heartbeat-only takes this path).
   Reference: ``base64.b64decode`` + ``pickle.loads`` of the same text (torch's backend does both).
2. **monitor's heartbeat path**: ``rdzv.state_stream.StateStream.decode`` of consecutive
   values that differ in one node's heartbeat (the bytes, already base64-decoded) plus
   ``rdzv.diff.heartbeat_changes``: what the monitor runs on nearly every revision of a
   running job. Reference: ``pickle.loads`` of the same bytes.

Also timed, for the breakdown: a heartbeat revision through the full path (what every revision
cost before the stream decoder) and ``base64.b64decode`` alone. #16's target is decode + diff
≤ 2× ``pickle.loads`` at 1,000 participants; each path is reported against it.
"""

from __future__ import annotations

import base64
import pickle
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from .common import Bench, interleave, median, paired_ratio, row, section

TITLE = "decode + diff per revision vs pickle.loads"
TARGET_FACTOR = 2.0  # decode + diff at most 2× pickle.loads of the same bytes, at 1,000 participants
TARGET_SIZE = 1000


def revisions(participants: int) -> dict[str, Any]:
    """The values of a few consecutive revisions of one run: ``base`` (the previous state),
    ``join`` (one more node on the wait list), ``beats`` (two values that differ from ``base``
    only in the heartbeat of node 0: a heartbeat, then the next one)."""
    from torch.distributed.elastic.rendezvous.dynamic_rendezvous import _NodeDesc

    from rdzv.demo.load import build_state

    state, nodes = build_state(participants)
    base = pickle.dumps(state)
    first = state.last_heartbeats[nodes[0]]
    beats = []
    for step in (1, 2):
        state.last_heartbeats[nodes[0]] = first + timedelta(seconds=5 * step, microseconds=step)
        beats.append(pickle.dumps(state))
    state.last_heartbeats[nodes[0]] = first
    late = _NodeDesc("late-node.load", 99_999, 0)
    state.wait_list.add(late)
    state.last_heartbeats[late] = first + timedelta(seconds=7)
    return {"base": base, "join": pickle.dumps(state), "beats": beats}


def time_paths(participants: int, repetitions: int) -> dict[str, Any]:
    """Per-revision seconds of each path and reference, measured side by side."""
    from rdzv.diff import diff_states, heartbeat_changes
    from rdzv.state import decode_state_b64
    from rdzv.state_stream import StateStream

    values = revisions(participants)
    base_text = base64.b64encode(values["base"]).decode()
    join_text = base64.b64encode(values["join"]).decode()
    beat_texts = [base64.b64encode(data).decode() for data in values["beats"]]
    old = decode_state_b64(base_text)

    stream = StateStream("bench")
    stream.decode(values["base"])
    beats = [values["beats"][0], values["beats"][1]]
    turn = [0]
    patched_before = stream.patched

    def timed(action: Callable[[], object]) -> Callable[[], float]:
        def measure() -> float:
            began = time.perf_counter()
            action()
            return time.perf_counter() - began
        return measure

    def full_join() -> None:
        if not diff_states(old, decode_state_b64(join_text)):
            raise RuntimeError("diff_states found no change in a join revision")

    def full_heartbeat() -> None:
        if not diff_states(old, decode_state_b64(beat_texts[0])):
            raise RuntimeError("diff_states found no change in a heartbeat revision")

    def stream_heartbeat() -> None:
        data = beats[turn[0] % 2]
        turn[0] += 1
        snapshot, moved = stream.decode(data)
        if moved is None or len(heartbeat_changes(snapshot, moved)) != 1:
            raise RuntimeError("StateStream did not recognise a heartbeat-only revision")

    contenders = {
        "full_join": timed(full_join),
        "torch_b64_pickle_loads_join": timed(lambda: pickle.loads(base64.b64decode(join_text))),
        "stream_heartbeat": timed(stream_heartbeat),
        "pickle_loads_heartbeat": timed(lambda: pickle.loads(beats[turn[0] % 2])),
        "full_heartbeat": timed(full_heartbeat),
        "b64decode": timed(lambda: base64.b64decode(join_text)),
    }
    samples = interleave(contenders, repetitions)
    if stream.patched - patched_before != repetitions:
        raise RuntimeError("some heartbeat revisions took StateStream's full path")
    return {"samples": samples, "state_bytes": len(values["join"]), "stored_bytes": len(join_text)}


def run(bench: Bench) -> dict:
    counts = {100: 30, 1000: 15, 10000: 3} if bench.quick else {100: 200, 1000: 60, 10000: 10}
    rows: list[dict[str, Any]] = []
    breakdown: list[dict[str, Any]] = []
    data: dict[str, Any] = {"target": f"decode + diff ≤ {TARGET_FACTOR:g}× pickle.loads at {TARGET_SIZE:,}",
                            "ms": {}, "ratio_to_pickle_loads": {}}
    for participants, repetitions in counts.items():
        timing = time_paths(participants, repetitions)
        samples = timing["samples"]
        ms = {name: median(values) * 1000 for name, values in samples.items()}
        paths = {
            "full_join": ("full path (decode_state_b64 + diff_states), join revision",
                          "torch_b64_pickle_loads_join", "b64decode + pickle.loads"),
            "stream_heartbeat": ("monitor heartbeat path (StateStream + heartbeat_changes)",
                                 "pickle_loads_heartbeat", "pickle.loads"),
        }
        factors = {}
        for path, (label, reference, reference_name) in paths.items():
            factor = paired_ratio(samples[path], samples[reference])  # ours ÷ pickle.loads, pair by pair
            factors[path] = factor
            target = f"≤ {TARGET_FACTOR:g}× {reference_name}" if participants == TARGET_SIZE else None
            rows.append(row(f"{label}, {participants:,} participants", "ms", ms[path], ms[reference],
                            ratio=paired_ratio(samples[reference], samples[path]), target=target,
                            met=factor <= TARGET_FACTOR if target and factor is not None else None,
                            note=f"{factor:.2f}× {reference_name} of the same bytes (torch column); "
                                 f"state {timing['state_bytes'] / 1000:,.0f} KB pickled"))
        bench.log(f"  {participants:>6} participants: join {ms['full_join']:.2f} ms "
                  f"({factors['full_join']:.2f}× b64+pickle.loads), heartbeat {ms['stream_heartbeat']:.3f} ms "
                  f"({factors['stream_heartbeat']:.2f}× pickle.loads)")
        breakdown.append({"participants": participants, "pickle_kb": timing["state_bytes"] / 1000,
                          "full_join_ms": ms["full_join"], "full_heartbeat_ms": ms["full_heartbeat"],
                          "stream_heartbeat_ms": ms["stream_heartbeat"],
                          "pickle_loads_ms": ms["pickle_loads_heartbeat"], "b64decode_ms": ms["b64decode"],
                          "full_join_x_loads": factors["full_join"],
                          "stream_x_loads": factors["stream_heartbeat"]})
        data["ms"][str(participants)] = ms
        data["ratio_to_pickle_loads"][str(participants)] = factors
        data["state_bytes"] = {**data.get("state_bytes", {}), str(participants): timing["state_bytes"]}
    data["breakdown"] = breakdown
    return section(TITLE, rows, data)


if __name__ == "__main__":
    import sys

    from . import report

    quick = "--quick" in sys.argv
    result = run(Bench(quick=quick, server=None, server_error="not needed",
                       log=lambda message: print(message, file=sys.stderr, flush=True)))
    print(report.format_table({"sections": {"decode": result}}))

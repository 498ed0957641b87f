"""What explaining a run costs: ``rdzv.diagnosis.diagnose`` per revision, 1,000 and 10,000 participants.

The states are real torch ``_RendezvousState`` pickles decoded by ``rdzv.state``, so the
snapshot is exactly what the monitor hands a view. Two states per size:

- *complete*: a completed round, every heartbeat fresh (what most revisions of a running job are);
- *last call, 1% dead*: an open round in its last call in which one participant in a hundred
  has been silent past the dead-node age, so the stale-heartbeat path runs (who is dead, who
  removes them) and the live participants are counted and sorted.

Timed: ``diagnose(snapshot, settings, now)`` alone (decoding is the monitor's, timed in its own
section). torch has no diagnosis; as a reference, torch's own way of reading the same state
(base64 + ``pickle.loads``) is timed too.
"""

from __future__ import annotations

import base64
import pickle
import time
from dataclasses import replace
from datetime import timedelta
from typing import Any

from .common import Bench, median, row, section, torch_state_b64

TITLE = "diagnose: findings per revision"
TARGET_MS_AT_1000 = 2.0
DEAD_EVERY = 100  # one participant in a hundred is dead in the "last call" state
SETTINGS = "join_timeout=600,last_call_timeout=30,keep_alive_interval=5,keep_alive_max_attempt=3"


def states(participants: int) -> tuple[str, dict[str, Any], Any, Any]:
    """The base64 state, the two snapshots to diagnose, the settings and the moment to diagnose at."""
    from rdzv.rendezvous_settings import RendezvousSettings
    from rdzv.state import decode_state_b64

    text = torch_state_b64([f"node-{index:05d}.cluster.local" for index in range(participants)])
    complete = decode_state_b64(text)
    # torch_state_b64's heartbeats are 0-4 s apart from its base moment: 5 s later all are fresh.
    now = max(complete.last_heartbeats.values()) + timedelta(seconds=1)
    ordered = sorted(complete.participants, key=complete.participants.__getitem__)
    dead = {node: now - timedelta(seconds=40) for node in ordered[::DEAD_EVERY]}
    last_call = replace(complete, complete=False, deadline=now + timedelta(seconds=10),
                        participants=dict.fromkeys(ordered, 0),
                        last_heartbeats={**complete.last_heartbeats, **dead})
    settings = RendezvousSettings.from_torchrun(f"1:{participants}", SETTINGS)
    return text, {"complete": complete, "last call, 1% dead": last_call}, settings, now


def time_diagnosis(participants: int, repetitions: int) -> dict[str, Any]:
    """Median ms per diagnosis of each state, and of pickle.loads of the same state."""
    from rdzv.diagnosis import diagnose

    text, snapshots, settings, now = states(participants)
    data = base64.b64decode(text)
    timings: dict[str, list[float]] = {name: [] for name in [*snapshots, "pickle_loads"]}
    found: dict[str, list[str]] = {}
    for _ in range(repetitions):
        for name, snapshot in snapshots.items():
            began = time.perf_counter()
            findings = diagnose(snapshot, settings, now)
            timings[name].append(time.perf_counter() - began)
            found[name] = [finding.code for finding in findings]
        began = time.perf_counter()
        pickle.loads(data)
        timings["pickle_loads"].append(time.perf_counter() - began)
    if found["complete"] != ["complete"] or found["last call, 1% dead"][:1] != ["stale-heartbeat"]:
        raise RuntimeError(f"unexpected findings for {participants} participants: {found}")
    return {name: median(values) * 1000 for name, values in timings.items()} | {"codes": found}


def run(bench: Bench) -> dict:
    counts = {1000: 100, 10000: 10} if bench.quick else {1000: 1000, 10000: 100}
    rows: list[dict[str, Any]] = []
    per_size: dict[int, dict[str, Any]] = {}
    for participants, repetitions in counts.items():
        timing = per_size[participants] = time_diagnosis(participants, repetitions)
        bench.log(f"  {participants:>6} participants: {timing['complete']:.3f} ms complete, "
                  f"{timing['last call, 1% dead']:.3f} ms last call with dead nodes "
                  f"({timing['complete'] / TARGET_MS_AT_1000:.2f}× and "
                  f"{timing['last call, 1% dead'] / TARGET_MS_AT_1000:.2f}× the {TARGET_MS_AT_1000:g} ms target)")
    for participants, timing in per_size.items():
        for state in ("complete", "last call, 1% dead"):
            target = f"≤ {TARGET_MS_AT_1000:g} ms" if participants == 1000 else None
            rows.append(row(f"diagnose, {participants:,} participants, {state}", "ms", timing[state],
                            target=target, met=timing[state] <= TARGET_MS_AT_1000 if target else None,
                            note=f"{timing[state] / TARGET_MS_AT_1000:.2f}× the {TARGET_MS_AT_1000:g} ms target; "
                                 f"findings {', '.join(timing['codes'][state])}; torch has no diagnosis "
                                 f"(pickle.loads of the state alone: {timing['pickle_loads']:.2f} ms)"))
    data = {
        "diagnose_ms": {state: {str(n): t[state] for n, t in per_size.items()}
                        for state in ("complete", "last call, 1% dead")},
        "pickle_loads_ms": {str(n): t["pickle_loads"] for n, t in per_size.items()},
        "target_ms_at_1000": TARGET_MS_AT_1000,
    }
    return section(TITLE, rows, data)


if __name__ == "__main__":
    import sys

    from . import report

    bench = Bench(quick="--quick" in sys.argv, server=None, server_error="not needed",
                  log=lambda message: print(message, file=sys.stderr, flush=True))
    print(report.format_table({"sections": {"diagnose": run(bench)}}))

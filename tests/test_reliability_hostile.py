"""Hostile input through etcd into the monitor: over a thousand fuzzed state payloads (random
bytes, bad base64, truncated pickles, pickles calling os.system/eval/exec, deep nesting, a
half a megabyte of noise) written as runs. The monitor reports each as undecodable, runs nothing (a
canary file proves it), and keeps following. (The decoder alone gets the same payloads and
multi-MB ones in test_state_fuzz.py; the browser side is in test_dashboard.py.)"""

from __future__ import annotations

import base64
import random
import time

import pytest
from rendezvous_helpers import torch_state_b64
from test_state_fuzz import (
    SEED,
    abused_allowed_classes,
    bad_base64,
    deep_nesting,
    hostile_globals,
    random_bytes,
    random_programs,
    truncations,
    wrong_fields,
)

from rdzv.monitor import Monitor

pytestmark = [pytest.mark.reliability, pytest.mark.timeout(240)]

ETCD_VALUE_LIMIT = 1_000_000


def as_stored(payload: bytes | str) -> str:
    """What etcd holds: bytes are base64-encoded as torch does; text (bad base64) goes as is."""
    return payload if isinstance(payload, str) else base64.b64encode(payload).decode()


def test_a_thousand_hostile_states_reach_the_monitor_as_errors_and_run_nothing(etcd_server, unique, api, tmp_path):
    canary = tmp_path / "CANARY"
    rng = random.Random(SEED)
    payloads = [
        *random_bytes(rng), *random_programs(rng), *bad_base64(rng), *truncations(rng), *hostile_globals(canary),
        *abused_allowed_classes(), *deep_nesting(), *wrong_fields(),
        ("half a megabyte of noise", rng.randbytes(500_000)),
    ]
    # etcd refuses requests over about 1.5 MiB; the decoder alone gets the bigger ones.
    payloads = [(label, payload) for label, payload in payloads if len(as_stored(payload)) <= ETCD_VALUE_LIMIT]
    assert len(payloads) >= 1000
    prefix = f"/{unique}"
    monitor = Monitor(etcd_server.get_endpoint(), prefix, api=api, history_limit=5).start()
    try:
        with etcd_server.kv(api) as kv:
            for index, (_, payload) in enumerate(payloads):
                kv.put(f"{prefix}/rendezvous/hostile-{index:04d}", as_stored(payload))
            deadline = time.monotonic() + 120
            while len(monitor.runs()) < len(payloads):
                assert time.monotonic() < deadline, f"the monitor saw {len(monitor.runs())} of {len(payloads)} runs"
                assert all(thread.is_alive() for thread in monitor.threads), "a watcher thread died"
                time.sleep(0.2)
            print(f"{api}: {len(payloads)} hostile states written and reported as undecodable")
            runs = monitor.runs()
            decoded = [run_id for run_id, run in runs.items() if run.snapshot is not None]
            assert decoded == [], f"decoded hostile states: {decoded[:5]}"
            for index, (label, _) in enumerate(payloads):
                error = runs[f"hostile-{index:04d}"].error
                assert error and f"hostile-{index:04d}" in error and "undecodable" in error.lower(), (label, error)
            assert not canary.exists(), "a payload ran code"

            # Still following: a genuine state written now is decoded.
            kv.put(f"{prefix}/rendezvous/genuine", torch_state_b64({("host-a", 1, 0): 0}))
            deadline = time.monotonic() + 30
            while (run := monitor.run("genuine")) is None or run.snapshot is None:
                assert time.monotonic() < deadline, "the monitor stopped following after the hostile states"
                time.sleep(0.1)
            assert run.snapshot.world_size == 1
            assert monitor.connection.state == "connected"
    finally:
        monitor.stop()
    assert not canary.exists(), "a payload ran code"

"""Waiting on a condition, never on a sleep: the tests' one way to let something happen."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_for(condition: Callable[[], T], what: str = "the condition", timeout: float = 60,
             interval: float = 0.05) -> T:
    """Poll ``condition()`` until it returns something true, and return that; fail the test
    saying ``what`` did not happen when ``timeout`` seconds (a safety net) pass first."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        assert time.monotonic() < deadline, f"{what} did not happen within {timeout:g} s"
        time.sleep(interval)

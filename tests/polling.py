"""Waiting for a state that no event announces (a process table, a stats() field)."""

from __future__ import annotations

from collections.abc import Callable
from time import monotonic, sleep

import pytest


def wait_until(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    """Poll ``predicate`` (a cheap read) until true; fail after ``timeout`` seconds."""
    deadline = monotonic() + timeout
    while not predicate():
        if monotonic() > deadline:
            pytest.fail(f"condition not met within {timeout} s")
        sleep(0.01)

"""Shared fixtures: every test runs under a leak check and a timeout."""

from __future__ import annotations

from collections.abc import Iterator

import psutil
import pytest

#: multiprocessing's own shared helpers (one per interpreter, shared with any
#: other user of the forkserver start method): not procpool's processes.
_MP_HELPERS = ("multiprocessing.forkserver", "multiprocessing.resource_tracker")


def _children() -> dict[int, psutil.Process]:
    found = {}
    for child in psutil.Process().children(recursive=True):
        try:
            cmdline = " ".join(child.cmdline())
        except (psutil.NoSuchProcess, psutil.ZombieProcess):
            continue
        if not any(helper in cmdline for helper in _MP_HELPERS):
            found[child.pid] = child
    return found


@pytest.fixture(autouse=True)
def no_leaked_children() -> Iterator[None]:
    """Fail a test that leaves a child process behind (and clean it up)."""
    before = set(_children())
    yield
    leftovers = [p for pid, p in _children().items() if pid not in before]
    if not leftovers:
        return
    _, alive = psutil.wait_procs(leftovers, timeout=2.0)
    if alive:
        described = []
        for proc in alive:
            try:
                described.append(f"{proc.pid} {proc.name()} {proc.status()}")
                proc.kill()
            except psutil.NoSuchProcess:
                pass
        if described:
            pytest.fail(f"child processes outlived the test: {described}")

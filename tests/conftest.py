"""Shared fixtures: every test runs under a leak check and a timeout."""

from __future__ import annotations

from collections.abc import Iterator

import psutil
import pytest

#: multiprocessing's own shared helpers (one per interpreter, shared with any
#: other user of the forkserver start method): not procpool's processes.
_MP_HELPERS = ("multiprocessing.forkserver", "multiprocessing.resource_tracker")


def _children() -> dict[int, psutil.Process]:
    """Every descendant of this process but multiprocessing's own helpers.

    Only the helpers themselves are left out: workers forked *by* the
    forkserver share its command line, and they are ours to account for.
    """
    me = psutil.Process()
    helpers = set()
    for child in me.children():
        try:
            if any(helper in " ".join(child.cmdline()) for helper in _MP_HELPERS):
                helpers.add(child.pid)
        except (psutil.NoSuchProcess, psutil.ZombieProcess):
            continue
    return {p.pid: p for p in me.children(recursive=True) if p.pid not in helpers}


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

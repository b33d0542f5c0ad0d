"""Shared fixtures: every test runs under a leak check and a timeout."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import psutil
import pytest

from tests.processes import descendants


@pytest.fixture(autouse=True)
def no_leaked_children() -> Iterator[None]:
    """Fail a test that leaves a child process behind (and clean it up)."""
    before = set(descendants())
    yield
    leftovers = [p for pid, p in descendants().items() if pid not in before]
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


@pytest.fixture(params=["fork", "forkserver"])
def start_method(request: pytest.FixtureRequest) -> str:
    """The start methods the pool's behaviour is tested under (spawn: tests/backends)."""
    method: str = request.param
    return method


@pytest.fixture
def pipe() -> Iterator[tuple[int, int]]:
    """A raw pipe ``(read fd, write fd)``, both ends closed after the test."""
    r, w = os.pipe()
    yield r, w
    for fd in (r, w):
        with contextlib.suppress(OSError):
            os.close(fd)

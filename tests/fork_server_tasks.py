"""Resource and tasks for tests/test_fork_server.py (importable by name in workers).

``IMPORTED_IN`` records which process ran this module's top level: a worker
forked by procpool's fork server finds the module already imported by the
server, so it reports the server's pid, not its own.
"""

from __future__ import annotations

import os
import time
from typing import Any

IMPORTED_IN = os.getpid()


def make_resource() -> dict[str, int]:
    return {"created_in": os.getpid()}


def origin(resource: Any) -> tuple[int, int, int]:
    """``(pid that imported this module, worker pid, worker's parent pid)``."""
    return IMPORTED_IN, os.getpid(), os.getppid()


def started_at(resource: Any, label: str) -> tuple[str, float]:
    """``(label, when it started)`` on the clock every process shares (CLOCK_MONOTONIC)."""
    return label, time.monotonic()

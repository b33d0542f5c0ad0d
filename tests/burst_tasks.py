"""Task and resource functions of the burst and metrics tests (workers import them by name)."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from tests.tasks import Marker


def slow_marker(folder: str, seconds: float) -> Marker:
    """on_create that takes ``seconds`` before it leaves its ``create-<pid>`` file."""
    time.sleep(seconds)
    return Marker(folder)


def nap(resource: Any, seconds: float, tag: int) -> int:
    """Sleep, then return ``tag``: bursting is about concurrency, not CPU."""
    time.sleep(seconds)
    return tag


def nap_and_note(resource: Any, folder: str, seconds: float, tag: int) -> int:
    """Like :func:`nap`, and leave a file per run: a task run twice leaves two."""
    time.sleep(seconds)
    Path(folder, f"ran-{tag}-{os.getpid()}-{time.monotonic_ns()}").touch()
    return tag


def fail_after(resource: Any, seconds: float) -> None:
    time.sleep(seconds)
    raise ValueError(f"failed after {seconds} s")


def never_healthy(error: BaseException) -> bool:
    """check_health that calls every failure a broken resource (so it is retried)."""
    return False


def spin(resource: Any, seconds: float) -> int:
    """Busy on the CPU for ``seconds``: a CPU-bound task."""
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass
    return os.getpid()

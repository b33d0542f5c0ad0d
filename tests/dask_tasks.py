"""Task and resource functions of the Dask backend's tests (Dask workers import them by name)."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any


def die_first_time(resource: Any, folder: str, name: str) -> int:
    """Kill the worker process on the first attempt (a file remembers it), then return the pid."""
    marker = Path(folder, f"died-{name}")
    if not marker.exists():
        marker.touch()
        os.kill(os.getpid(), signal.SIGKILL)
        time.sleep(60)
    return os.getpid()


def resource_pid(resource: dict[str, int], x: int) -> tuple[int, int, int]:
    """(pid its resource was made in, pid it runs in, x): the two are one worker's."""
    return resource["pid"], os.getpid(), x


def note(resource: list[str], name: str) -> str:
    resource.append(name)
    return f"{len(resource)}. {name}"


def make_log() -> list[str]:
    return []


def wait_gate_noting_pid(resource: Any, path: str) -> int:
    """Leave this worker's pid beside the gate, then block on it (tests/gate.py)."""
    Path(path + ".pid").write_text(str(os.getpid()))
    with open(path + ".in", "w"):
        pass
    with open(path) as gate:
        gate.read()
    return os.getpid()

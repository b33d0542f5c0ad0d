"""Task and resource functions the tests send to workers (importable by name)."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any


class Marker:
    """A resource that leaves a file per worker on create and on destroy."""

    def __init__(self, folder: str) -> None:
        self.folder = folder
        self.pid = os.getpid()
        self.order: list[Any] = []
        Path(folder, f"create-{self.pid}").touch()

    def destroy(self) -> None:
        Path(self.folder, f"destroy-{self.pid}").touch()


def make_marker(folder: str) -> Any:
    return lambda: Marker(folder)


def destroy_marker(resource: Marker) -> None:
    resource.destroy()


def make_plain() -> dict[str, int]:
    return {"pid": os.getpid()}


def pid_of(resource: Any) -> int:
    return os.getpid()


def double(resource: Any, x: int) -> int:
    return x * 2


def add(resource: Any, a: int, b: int = 0) -> int:
    return a + b


def record(resource: Marker, tag: Any) -> int:
    """Note the order in which one worker ran its tasks."""
    resource.order.append(tag)
    return len(resource.order)


def wait_gate(resource: Any, path: str) -> int:
    """Say we are on the gate, then block until the test opens it (see tests/gate.py)."""
    with open(path + ".in", "w"):
        pass
    with open(path) as gate:
        gate.read()
    return os.getpid()


def sleep_for(resource: Any, seconds: float) -> float:
    time.sleep(seconds)
    return seconds


class BoomError(ValueError):
    pass


def boom(resource: Any, text: str = "boom") -> None:
    raise BoomError(text)


def failing_create() -> None:
    raise RuntimeError("licence server unreachable")


def put_pid(queue: Any) -> int:
    """on_create that announces its worker on a multiprocessing queue."""
    queue.put(os.getpid())
    return os.getpid()


class Token:
    """A result that can be weakly referenced: is it freed once the caller drops it?"""

    def __init__(self, value: int) -> None:
        self.value = value


def token(resource: Any, value: int) -> Token:
    return Token(value)

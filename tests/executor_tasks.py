"""Plain functions (no resource argument) for the Executor tests."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

STATUS = "uninitialized"


def init(folder: str, status: str) -> None:
    global STATUS
    STATUS = status
    Path(folder, f"init-{os.getpid()}").touch()


def init_fail() -> None:
    raise ValueError("error in initializer")


def status() -> str:
    return STATUS


def capture(*args: Any, **kwargs: Any) -> tuple[tuple[Any, ...], dict[str, Any]]:
    return args, kwargs


def pid() -> int:
    return os.getpid()


def die() -> None:
    os._exit(3)


def slow(seconds: float) -> float:
    time.sleep(seconds)
    return seconds

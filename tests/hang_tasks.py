"""Hooks, tasks and arguments of the no-hang tests (importable by name in workers)."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Any


class ReduceRaises:
    """An argument whose pickling raises ``error`` (a BaseException, even)."""

    def __init__(self, error: type[BaseException]) -> None:
        self.error = error

    def __reduce__(self) -> Any:
        raise self.error()


def closure_over_lock() -> Any:
    """A task function that closes over a lock: it cannot be pickled."""
    lock = threading.Lock()

    def task(resource: Any, x: int) -> int:
        with lock:
            return x

    return task


def hang() -> None:
    """``on_create``/``on_destroy`` that never returns (within any test's life)."""
    time.sleep(3600)


class HangAfter:
    """``on_create`` that works for its first ``good`` calls in any worker, then hangs.

    Calls are counted as files in ``folder``, shared by every worker process;
    each call leaves ``create-<n>-<pid>`` first, so a test sees who is stuck.
    """

    def __init__(self, folder: str, good: int) -> None:
        self.folder = folder
        self.good = good

    def __call__(self) -> dict[str, int]:
        calls = len(os.listdir(self.folder))
        Path(self.folder, f"create-{calls}-{os.getpid()}").touch()
        if calls >= self.good:
            hang()
        return {"pid": os.getpid()}


def note_pid_then_hang(folder: str) -> Any:
    """``on_create`` that leaves ``pid-<pid>`` in ``folder``, then hangs."""

    def create() -> None:
        Path(folder, f"pid-{os.getpid()}").touch()
        hang()

    return create


def sleep_and_note(resource: Any, folder: str, seconds: float, tag: int) -> int:
    """Leave ``start-<tag>``, sleep, leave ``done-<tag>``: a test sees what ran and finished."""
    Path(folder, f"start-{tag}-{os.getpid()}").touch()
    time.sleep(seconds)
    Path(folder, f"done-{tag}").touch()
    return tag

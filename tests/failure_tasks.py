"""Resources and tasks that break on purpose (importable by name in workers)."""

from __future__ import annotations

import ctypes
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

# -- dying -------------------------------------------------------------------


def die(resource: Any, how: str) -> None:
    """End the worker process the hard way, as a bug in C code or the kernel would."""
    if how == "SIGKILL":
        os.kill(os.getpid(), signal.SIGKILL)
    elif how == "exit":
        os._exit(3)
    elif how == "segfault":
        ctypes.string_at(0)  # reads address 0: SIGSEGV
    time.sleep(60)  # a signal may take a moment to land


def chaos(resource: Any, i: int) -> int:
    """Deterministic by index: every 20th dies (SIGKILL or _exit), every 20th + 10 raises."""
    if i % 20 == 0:
        die(resource, "SIGKILL" if i % 40 == 0 else "exit")
    if i % 20 == 10:
        raise ValueError(f"bad item {i}")
    return i * 3


def wait_gate_then_die(resource: Any, path: str, how: str) -> None:
    """Block on a gate (tests/gate.py), then die: lets a test kill a busy worker on cue."""
    with open(path + ".in", "w"):
        pass
    with open(path) as gate:
        gate.read()
    die(resource, how)


# -- unhealthy resources -----------------------------------------------------


class ProcessorCrash(RuntimeError):
    """The resource is broken: its worker must be replaced."""


def crash_processor(resource: Any) -> None:
    raise ProcessorCrash("processor crash")


def crash_first_attempt(resource: Any, folder: str, name: str) -> int:
    """Unhealthy on the first attempt only (a file remembers it), then returns the pid."""
    marker = Path(folder, f"attempt-{name}")
    if not marker.exists():
        marker.touch()
        raise ProcessorCrash(f"processor crash on {name}")
    return os.getpid()


def healthy_unless_processor_crash(exc: BaseException) -> bool:
    return not isinstance(exc, ProcessorCrash)


def health_check_that_raises(exc: BaseException) -> bool:
    raise RuntimeError("health probe unavailable")


# -- on_create that fails after a while --------------------------------------


class CreateAfterCount:
    """``on_create`` that succeeds for its first ``good`` calls, then fails.

    Calls are counted as files in ``folder``, so the count is shared by every
    worker process. Once the ``heal`` file exists it succeeds again.
    """

    def __init__(self, folder: str, good: int, heal: str | None = None) -> None:
        self.folder = folder
        self.good = good
        self.heal = heal  # once this file exists, on_create works again

    def __call__(self) -> dict[str, int]:
        calls = len(os.listdir(self.folder))
        Path(self.folder, f"create-{calls}-{os.getpid()}").touch()
        healed = self.heal is not None and os.path.exists(self.heal)
        if calls >= self.good and not healed:
            raise OSError(f"licence server refused seat {calls + 1}")
        return {"pid": os.getpid()}


# -- bad input and output ----------------------------------------------------


def identity(resource: Any, value: Any) -> Any:
    return value


def return_lock(resource: Any, value: int) -> Any:
    """A lock cannot be pickled: this result cannot travel back."""
    return threading.Lock() if value < 0 else value


class UnpicklableError(Exception):
    """Holds a lock, so pickling it fails."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.lock = threading.Lock()


class NeedsTwoArgsError(Exception):
    """Pickles fine, but unpickling calls ``__init__`` with one argument and fails."""

    def __init__(self, text: str, code: int) -> None:
        super().__init__(f"{text} (code {code})")
        self.code = code


def raise_unpicklable(resource: Any, value: int) -> int:
    if value < 0:
        raise UnpicklableError(f"cannot send {value}")
    return value


def raise_needs_two_args(resource: Any, value: int) -> int:
    if value < 0:
        raise NeedsTwoArgsError("rejected", value)
    return value


def call_sys_exit(resource: Any, value: int) -> int:
    if value < 0:
        sys.exit(f"exit on {value}")
    return os.getpid()


def raise_keyboard_interrupt(resource: Any, value: int) -> int:
    if value < 0:
        raise KeyboardInterrupt
    return os.getpid()


class LoadBomb:
    """Pickles in the caller, but unpickling it in the worker raises."""

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return (_refuse_to_load, ("this argument cannot be loaded",))


def _refuse_to_load(text: str) -> None:
    raise ValueError(text)


class KillOnLoad:
    """Pickles in the caller; unpickling it ends the process (as a huge argument's OOM would)."""

    def __reduce__(self) -> tuple[Any, tuple[int]]:
        return (os._exit, (9,))


def destroy_raises(resource: Any) -> None:
    raise RuntimeError("socket already closed")


# -- time and memory ---------------------------------------------------------


def ignore_sigterm_and_sleep(resource: Any, seconds: float) -> float:
    """A task that shrugs off SIGTERM: stopping it needs SIGKILL."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    time.sleep(seconds)
    return seconds


def hold_memory(resource: dict[str, Any], megabytes: int) -> int:
    """Keep ``megabytes`` alive in the resource, so the worker's RSS grows."""
    resource.setdefault("ballast", []).append(b"x" * (megabytes * 1024 * 1024))  # touched pages
    return os.getpid()


def make_dict() -> dict[str, Any]:
    return {}


class KillOnPickle:
    """A result whose pickling ends the worker: it dies outside any task."""

    def __reduce__(self) -> tuple[Any, tuple[int]]:
        os._exit(7)


def return_kill_on_pickle(resource: Any, value: int) -> Any:
    return KillOnPickle() if value < 0 else value


def crash_at(resource: Any, x: int, bad: int) -> int:
    """A map item that breaks the worker's resource at ``bad``."""
    if x == bad:
        raise ProcessorCrash(f"processor crash on item {x}")
    return x

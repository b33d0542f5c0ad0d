"""Tasks of the exactness tests (importable by name in workers)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any


def spin(resource: Any, seconds: float) -> tuple[int, float]:
    """Busy for ``seconds`` of wall time; returns ``(pid, start)`` (monotonic, shared clock)."""
    start = time.monotonic()
    while time.monotonic() - start < seconds:
        pass
    return os.getpid(), start


def noted(resource: Any, folder: str, tag: int, value: Any = None) -> Any:
    """Leave a file per run (``ran-<tag>-<n>``), then return ``value`` (or ``tag``)."""
    Path(folder, f"ran-{tag}-{time.monotonic_ns()}").touch()
    return tag if value is None else value


class UnreadableResult:
    """Pickles in the worker; unpickling it in the caller raises."""

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return (_refuse, ("this result cannot be read here",))


def _refuse(text: str) -> None:
    raise ValueError(text)


def unreadable_if(resource: Any, folder: str, tag: int, bad: bool) -> Any:
    return noted(resource, folder, tag, UnreadableResult() if bad else tag)


def close_my_fds(resource: Any, folder: str) -> int:
    """Close every fd of the worker (its pipe too), as a careless daemonising task would."""
    Path(folder, f"ran-close-{time.monotonic_ns()}").touch()
    os.closerange(3, 65536)
    time.sleep(0.2)  # still running after the pipe closed
    return os.getpid()


class Weighty:
    """A weak-referenceable payload, so a test can see that nothing keeps it alive."""

    __slots__ = ("__weakref__", "data")

    def __init__(self, size: int) -> None:
        self.data = b"x" * size


def make_weighty(resource: Any, size: int) -> Weighty:
    return Weighty(size)


def size_of(resource: Any, payload: Weighty) -> int:
    return len(payload.data)


def big_bytes(resource: Any, megabytes: int) -> bytes:
    return b"x" * (megabytes * 1024 * 1024)


def start_child(resource: Any, how: str) -> int:
    """Start a process that outlives this task; return its pid."""
    if how == "fork":
        pid = os.fork()
        if pid == 0:
            time.sleep(60)
            os._exit(0)
        return pid
    child = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(60)"],
        start_new_session=(how == "session"),
    )
    return child.pid


def start_child_then_sleep(resource: Any, how: str, folder: str) -> None:
    """Start a child, note its pid, then run long (to be timed out or killed)."""
    Path(folder, f"child-{start_child(resource, how)}").touch()
    time.sleep(60)


def spin_then_tell(resource: Any, seconds: float) -> tuple[int, float]:
    """Busy for ``seconds``, then say which item this was."""
    return spin(resource, seconds)[0], seconds

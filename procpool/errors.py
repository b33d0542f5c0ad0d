"""Every exception procpool raises, in one hierarchy.

Two families matter to a caller:

* "you closed it": :class:`ShutdownError` -- the manager was stopped or killed.
* "it broke": :class:`WorkerCrashedError`, :class:`TaskTimeoutError`,
  :class:`MaxRetriesExceededError`, :class:`ResourceCreationError`,
  :class:`RemoteError`, :class:`TaskPicklingError`.

A task's *own* exception is never wrapped: it reaches the caller with its own
type, and the worker's traceback text rides along as ``__cause__`` (a
:class:`RemoteTraceback`), the way :mod:`concurrent.futures` does it.
"""

from __future__ import annotations

import signal
from concurrent.futures.process import BrokenProcessPool


class ProcPoolError(Exception):
    """Base class of every procpool error."""


class RemoteTraceback(Exception):
    """The traceback text of an exception raised in a worker process.

    Attached as ``__cause__`` so that a printed traceback shows where the
    error really happened. It is *not* raised on its own.
    """

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text

    def __str__(self) -> str:
        return f'\n"""\n{self.text}"""'


class ShutdownError(ProcPoolError, RuntimeError):
    """You closed it: the manager is stopping or was killed.

    Raised by submissions after ``stop()``/``kill()``, and set on tasks that
    were running when ``kill()`` terminated their worker.
    """


class ResourceCreationError(ProcPoolError):
    """``on_create`` failed in a worker, so no resource could be built.

    ``remote_traceback`` holds the worker's traceback text.
    """

    def __init__(self, message: str, remote_traceback: str = "") -> None:
        super().__init__(message)
        self.remote_traceback = remote_traceback

    def __str__(self) -> str:
        base = super().__str__()
        if self.remote_traceback:
            return f"{base}\n--- worker traceback ---\n{self.remote_traceback}"
        return base


def describe_exit(exitcode: int | None) -> str:
    """Name an exit status: ``'signal SIGKILL'`` rather than ``-9``."""
    if exitcode is None:
        return "unknown exit status"
    if exitcode < 0:
        try:
            return f"signal {signal.Signals(-exitcode).name}"
        except ValueError:
            return f"signal {-exitcode}"
    return f"exit code {exitcode}"


class WorkerCrashedError(ProcPoolError, BrokenProcessPool):
    """It broke: the worker process running this task died.

    Only the task that was running fails; the pool replaces the worker and
    goes on. Subclasses :class:`concurrent.futures.process.BrokenProcessPool`
    so that existing ``except`` clauses keep working.
    """

    def __init__(self, pid: int, exitcode: int | None, task: str) -> None:
        self.pid = pid
        self.exitcode = exitcode
        self.task = task
        super().__init__(
            f"worker pid {pid} died ({describe_exit(exitcode)}) while running {task}"
        )

    @property
    def signal_name(self) -> str | None:
        """``'SIGKILL'``, ``'SIGSEGV'``, ... or None for a plain exit."""
        if self.exitcode is None or self.exitcode >= 0:
            return None
        try:
            return signal.Signals(-self.exitcode).name
        except ValueError:
            return None

    def __reduce__(self) -> tuple[type[WorkerCrashedError], tuple[int, int | None, str]]:
        return (type(self), (self.pid, self.exitcode, self.task))


class BrokenPoolError(ProcPoolError, BrokenProcessPool):
    """It broke: the pool cannot run tasks at all (``procpool.Executor``'s initializer
    failed as its workers started). A ``concurrent.futures.BrokenExecutor``, as the
    standard says; unlike a worker crash, which breaks nothing but its own task."""


class TaskTimeoutError(ProcPoolError, TimeoutError):
    """It broke: the task ran past its timeout and its worker was terminated."""


class MaxRetriesExceededError(ProcPoolError):
    """It broke: the task failed on an unhealthy worker more times than allowed.

    ``__cause__`` is the last error.
    """


class RemoteError(ProcPoolError):
    """A task raised an exception that could not be sent back as itself.

    Carries the exception's type name, text and the worker's traceback.
    """

    def __init__(self, type_name: str, text: str, traceback_text: str) -> None:
        super().__init__(f"{type_name}: {text}")
        self.type_name = type_name
        self.text = text
        self.traceback_text = traceback_text

    def __reduce__(self) -> tuple[type[RemoteError], tuple[str, str, str]]:
        return (type(self), (self.type_name, self.text, self.traceback_text))


class TaskPicklingError(ProcPoolError, TypeError):
    """A task, one of its arguments, or its result could not be pickled.

    The message names the object that failed.
    """


__all__ = [
    "MaxRetriesExceededError",
    "ProcPoolError",
    "RemoteError",
    "RemoteTraceback",
    "ResourceCreationError",
    "ShutdownError",
    "TaskPicklingError",
    "TaskTimeoutError",
    "WorkerCrashedError",
    "describe_exit",
]

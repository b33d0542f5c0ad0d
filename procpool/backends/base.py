"""The narrow mechanism the supervisor drives: start, send, hear, retire.

A backend knows how to run worker processes somewhere (local processes, a
Dask cluster) and nothing about policy. The supervisor thread is its only
caller, except :meth:`Backend.wake`, which any thread may call.

Events flow back through :meth:`Backend.wait`, which blocks until something
happens or the timeout passes.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any, NamedTuple


class TaskSpec(NamedTuple):
    """What a backend needs of one task to run it."""

    task_id: int
    fn: Any
    args: tuple[Any, ...]
    kwargs: dict[str, Any]


class WorkerStarted(NamedTuple):
    """The worker's process exists and is inside ``on_create``.

    ``create_timeout`` counts from here: a start that waits its turn in the
    backend (a busy fork server) does not count against it.
    """

    worker_id: int
    pid: int


class WorkerReady(NamedTuple):
    worker_id: int
    pid: int
    create_seconds: float


class WorkerCreateFailed(NamedTuple):
    worker_id: int
    message: str
    traceback_text: str


class TaskOutcome(NamedTuple):
    """One finished task. ``outcome`` is a :mod:`procpool.backends.wire` code."""

    task_id: int
    outcome: int
    value: Any
    started: float
    finished: float


class WorkerResults(NamedTuple):
    worker_id: int
    outcomes: list[TaskOutcome]


class WorkerLeaving(NamedTuple):
    """The worker takes no more tasks; what it was sent and did not report is free."""

    worker_id: int
    reason: str


class WorkerGone(NamedTuple):
    """The worker process ended (gracefully or not)."""

    worker_id: int
    exitcode: int | None
    #: id of the task it was running when it died, if any; negative: the first id
    #: of a batch it was still loading
    running_task: int | None
    destroy_error: str | None


Event = (
    WorkerStarted | WorkerReady | WorkerCreateFailed | WorkerResults | WorkerLeaving | WorkerGone
)


class Backend(ABC):
    """Runs workers. Supervisor thread only, except :meth:`wake`."""

    @abstractmethod
    def start_worker(self, worker_id: int) -> None:
        """Begin starting a worker; never blocks on the worker.

        :class:`WorkerStarted`, then :class:`WorkerReady` or
        :class:`WorkerCreateFailed` follow; a process that could not even be
        started is reported as :class:`WorkerCreateFailed` (and
        :class:`WorkerGone`), never raised."""

    @abstractmethod
    def send(self, worker_id: int, tasks: Sequence[TaskSpec]) -> list[tuple[int, BaseException]]:
        """Send tasks to run in order. Returns ``(task_id, error)`` for tasks
        that could not be serialized (whatever the serializer raised, even a
        ``BaseException``); the others were sent."""

    @abstractmethod
    def retire(self, worker_id: int) -> None:
        """Send the graceful-exit sentinel: finish what you have, then leave."""

    @abstractmethod
    def terminate(self, worker_id: int, grace: float = ...) -> None:
        """Stop the worker now: terminate, then kill after ``grace`` seconds (0: kill now)."""

    @abstractmethod
    def running_task(self, worker_id: int) -> tuple[int, float] | None:
        """``(task_id, started)`` of the task the worker runs now, if known."""

    @abstractmethod
    def pid(self, worker_id: int) -> int | None:
        """The worker's process id, once known."""

    @abstractmethod
    def wait(self, timeout: float | None) -> list[Event]:
        """Block until events arrive, :meth:`wake` is called, or ``timeout`` passes."""

    @abstractmethod
    def wake(self) -> None:
        """Make a blocked :meth:`wait` return. Any thread may call it."""

    def helper_processes(self) -> dict[str, int]:
        """``role -> pid`` of processes the backend runs besides workers (a fork server).

        Any thread may call it: for monitoring only.
        """
        return {}

    @abstractmethod
    def close(self) -> None:
        """Release what the backend holds. Workers must already be gone or killed."""

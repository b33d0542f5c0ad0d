"""The narrow mechanism the supervisor drives: start, send, hear, retire.

A backend knows how to run worker processes somewhere (local processes, a
Dask cluster) and nothing about policy. Pass one to
``TaskManager(config, backend=...)``; :class:`Backend` says what every
backend must guarantee, and ``tests/backends/`` checks it.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

if TYPE_CHECKING:
    from procpool.config import Config


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
    #: CPU seconds the task used in its worker (0.0 when the backend cannot tell): with the
    #: wall time it says whether tasks are CPU-bound, which bursting needs
    cpu_seconds: float = 0.0
    #: of its wall time, how long the worker waited for a core (other processes had
    #: them): a CPU-bound task on a crowded machine uses a core whenever it has one
    wait_seconds: float = 0.0


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
    """Where workers run: the narrow mechanism the supervisor drives.

    A backend starts workers, sends them tasks, reports what they say and
    when they end, and asks them to leave; it decides nothing (no queues, no
    retries, no burst policy). One instance serves one pool.

    **Threads.** Every method is called from the pool's supervisor thread
    only, except :meth:`open` (the thread building the manager, before the
    supervisor thread starts), :meth:`wake` (any thread),
    :meth:`helper_processes` (any thread, for monitoring) and, where
    :attr:`send_while_waiting` and :attr:`collect_while_waiting` say so,
    :meth:`send` and :meth:`collect`. So a backend needs no locks beyond what
    those touch.

    **Events.** What happens reaches the supervisor as events returned by
    :meth:`wait`: for each ``start_worker(worker_id)``, in this order,
    :class:`WorkerStarted` (optional but recommended: ``create_timeout``
    counts from it), then :class:`WorkerReady` or :class:`WorkerCreateFailed`,
    any number of :class:`WorkerResults` and at most one
    :class:`WorkerLeaving`, and finally exactly one :class:`WorkerGone`, after
    which the id is never mentioned again. Every worker started ends in
    :class:`WorkerGone`, whatever happens (a failed start, a crash, a kill).

    **Workers.** A worker calls ``config.on_create()`` once, runs the tasks
    it is sent in order as ``fn(resource, *args, **kwargs)``, reports each
    outcome (see :class:`TaskOutcome`), and on :meth:`retire` finishes what
    it holds, calls ``on_destroy`` and exits.
    """

    #: True when :meth:`send` may run on another thread while :meth:`wait` blocks on
    #: the supervisor's (never beside any other method, nor another ``send``). Then a
    #: submission that finds a worker idle sends its task from the caller's thread,
    #: sparing the round trip a hand-off to the supervisor thread and back. A
    #: backend that says so must also tolerate a ``send`` to a worker that ``wait``
    #: just found gone (ignore it: the worker's :class:`WorkerGone` frees its tasks).
    send_while_waiting: bool = False

    #: True when :meth:`collect` works (under the same rule as a ``send`` beside
    #: :meth:`wait`): a caller waiting for one tiny task's result then reads it
    #: from its worker itself, sparing the hand-off from the supervisor thread.
    collect_while_waiting: bool = False

    def collect(self, worker_id: int, timeout: float) -> list[Event] | None:
        """Wait up to ``timeout`` s for the next message of ``worker_id`` and return
        what it says, as :meth:`wait` would have (only where
        :attr:`collect_while_waiting`). None when this may not be done now
        (:meth:`wait` may already have read what the worker sent since the
        latest :meth:`send` to it); an empty list when nothing came in time.
        While it runs, :meth:`wait` leaves that worker's messages for it (best
        without waking for them: one thread woken per message, not two).
        """
        raise NotImplementedError

    def open(self, config: Config[Any]) -> None:  # noqa: B027 -- optional hook
        """Take the pool's config (hooks, start method, sizes) before the first start.

        Called once, from the thread that builds the manager, before the
        supervisor thread starts. An exception here (a hook that cannot be
        pickled, a cluster that cannot be reached) propagates from the
        manager's constructor as it is. It may start workers ahead of their
        :meth:`start_worker` (the local backend forks the first ones here while
        the process has one thread); :meth:`close` ends those too, asked for or not.
        """

    @abstractmethod
    def start_worker(self, worker_id: int) -> None:
        """Begin starting a worker; must not block on the worker itself.

        A process that could not even be started is reported as
        :class:`WorkerCreateFailed` then :class:`WorkerGone`, never raised.
        """

    @abstractmethod
    def send(self, worker_id: int, tasks: Sequence[TaskSpec]) -> list[tuple[int, BaseException]]:
        """Send tasks to run in order, behind what the worker already holds.

        Returns ``(task_id, error)`` for each task that could not be
        serialized (whatever the serializer raised, even a ``BaseException``):
        those were not sent and will never be reported; all others were, and
        each gets exactly one outcome in a :class:`WorkerResults`, unless the
        worker leaves or dies first.
        """

    @abstractmethod
    def retire(self, worker_id: int) -> None:
        """The graceful-exit sentinel: finish what you hold, run ``on_destroy``, leave."""

    @abstractmethod
    def terminate(self, worker_id: int, grace: float = ...) -> None:
        """Stop the worker now: terminate, then kill after ``grace`` seconds (0: kill now).

        Also for a worker still starting. Its end is reported as :class:`WorkerGone`.
        """

    @abstractmethod
    def running_task(self, worker_id: int) -> tuple[int, float] | None:
        """``(task_id, started)`` of the task the worker runs now, if known.

        ``started`` is ``time.monotonic()`` seconds, comparable with the
        caller's clock (task timeouts count from it).
        """

    @abstractmethod
    def pid(self, worker_id: int) -> int | None:
        """The worker's process id, once known (None for a remote worker)."""

    @abstractmethod
    def wait(self, timeout: float | None) -> list[Event]:
        """Block until events arrive, :meth:`wake` is called, or ``timeout`` passes.

        ``None`` waits without limit; it must still return on :meth:`wake`.
        Returns the events in the order they happened for each worker.
        """

    @abstractmethod
    def wake(self) -> None:
        """Make a blocked (or the next) :meth:`wait` return soon. Any thread; never blocks."""

    def helper_processes(self) -> dict[str, int]:
        """``role -> pid`` of processes the backend runs besides workers (a fork server).

        Any thread may call it: for monitoring only.
        """
        return {}

    def worker_figures(self) -> dict[int, dict[str, Any]]:
        """``worker_id -> figures`` of workers on other machines, whose pid means nothing
        here: ``host``, ``cpu_percent``, ``rss_bytes`` as the backend knows them.

        ``dump_stats`` reads every other worker with psutil. Any thread may call it.
        """
        return {}

    @abstractmethod
    def close(self) -> None:
        """Release everything: kill what still runs, leave no process behind.

        Called once, last, on the supervisor thread.
        """

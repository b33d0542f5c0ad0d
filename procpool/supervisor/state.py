"""The supervisor's shared state: queues, the worker table, the lifecycle, the records.

Every room of the supervisor (:mod:`.dispatch`, :mod:`.recovery`,
:mod:`.fleet`, and the loop in :mod:`.loop`) works on one :class:`PoolState`.
Caller threads touch it only through the loop's public methods, under
``lock``; only the thread holding the loop (the supervisor's, or a caller's
sending to an idle worker while the supervisor waits: see
``Supervisor.submit_many``) changes a worker's record or resolves a future.

``lock`` guards the queues, the ``run_task`` line, the lifecycle and the
membership of the worker table. It is never held while a future is resolved
or while the backend is called.
"""

from __future__ import annotations

import threading
from collections import deque
from contextlib import AbstractContextManager
from dataclasses import dataclass
from time import monotonic
from typing import Any

from procpool.backends.base import TaskOutcome
from procpool.config import Config
from procpool.errors import ResourceCreationError, ShutdownError
from procpool.metrics import DefaultCollector, TaskStamps
from procpool.policy.prefetch import TaskDurations
from procpool.policy.queues import TaskQueues
from procpool.policy.rates import RecentShare
from procpool.tasks import Task, TaskState
from procpool.workers import WorkerHandle, WorkerRole, WorkerState

#: Roles of the workers that take queued tasks (reserved and temporary ones serve run_task).
POOL_ROLES = (WorkerRole.BASE, WorkerRole.BURST)


class Lifecycle:
    RUNNING = "running"
    STOPPING = "stopping"
    KILLED = "killed"


@dataclass(frozen=True)
class Stats:
    """A snapshot of the pool's workers and queues."""

    base_workers: int  #: live base workers (starting, idle or busy)
    burst_workers: int  #: live burst workers (starting, idle or busy)
    active_workers: int  #: base and burst workers that are ready (idle or busy)
    busy_workers: int  #: base and burst workers running tasks
    queued_tasks: int  #: normal tasks waiting
    priority_tasks: int  #: priority tasks waiting
    available_resources: int  #: idle reserved workers ready for run_task
    starting_workers: int = 0  #: workers of any role still inside on_create


#: A task that ran, as :meth:`Records.end_all` takes it: when it was queued, its
#: worker's report, and whether it raised.
Ran = tuple[float, TaskOutcome, bool]


class Records:
    """Where the pool's figures go: the built-in collector and the user's, if any.

    Arrivals are counted under the queue lock by caller threads and handed
    over in one step by the supervisor thread, so that submitting stays cheap.
    """

    def __init__(self, config: Config[Any]) -> None:
        self.metrics = DefaultCollector(config.metrics_window)
        self.user = config.collector
        self.pending_arrivals = 0  # under PoolState.lock
        # Totals that never fall, and the recent CPU share: what the burst controller sizes
        # from (its own short-window rates come from the totals' differences).
        self.arrived_total = 0
        self.ended_total = 0
        self.executed_total = 0.0
        self.cpu = RecentShare()

    def flush_arrivals(self, lock: AbstractContextManager[object]) -> None:
        """Hand the arrivals counted under ``lock`` (the queues') to the collector, in
        one step. None counted: no lock taken (a count made meanwhile waits a pass)."""
        if not self.pending_arrivals:
            return
        with lock:
            count, self.pending_arrivals = self.pending_arrivals, 0
        if count:  # (else another thread's metrics() took them meanwhile)
            self.arrived_total += count
            self.metrics.record_arrivals(count)

    def end(self, stamps: TaskStamps, failed: bool) -> None:
        """A task ended with no report of its run from a worker (a timeout, a crash,
        a result that could not travel): no CPU figures."""
        self.ended_total += 1
        self.executed_total += stamps.execution_time
        self.metrics.record_ends(((stamps, failed),))
        if self.user is not None:
            (self.user.record_failure if failed else self.user.record_completion)(stamps)

    def end_all(self, ran: list[Ran]) -> None:
        """Tasks that ran, as their worker reported them: a batch in one step, and
        no :class:`TaskStamps` made unless a user collector takes them. A task's CPU
        share is of the time it could run (its wall time less its wait for a core)."""
        runs: list[tuple[float, float, bool]] = []
        shares: list[tuple[float, float]] = []
        executed = self.executed_total
        for queued, (_, _, _, started, finished, cpu, waited), failed in ran:  # TaskOutcome
            # (comparisons, not max(): this runs for every task)
            execution = finished - started if finished > started else 0.0
            executed += execution
            used = cpu if cpu > 0.0 else 0.0
            could_run = execution - waited if waited > 0.0 else execution
            shares.append((used, could_run if could_run > used else used))
            runs.append((execution, started - queued if started > queued else 0.0, failed))
        self.executed_total = executed
        self.ended_total += len(ran)
        self.cpu.record_all(shares)
        self.metrics.record_runs(runs)
        if self.user is not None:
            for queued, outcome, failed in ran:
                stamps = TaskStamps(queued, outcome.started, outcome.finished)
                (self.user.record_failure if failed else self.user.record_completion)(stamps)

    def end_now(self, task: Task) -> None:
        """A failure of a task that never ran (or whose run is unknown)."""
        now = monotonic()
        self.end(TaskStamps(task.queued_at, now, now), failed=True)

    def retry(self) -> None:
        self.metrics.record_retry()
        if self.user is not None:
            self.user.record_retry()


class PoolState:
    """What the rooms share. Supervisor thread, except where a method says ``lock``."""

    def __init__(self, config: Config[Any]) -> None:
        self.config = config
        self.lock = threading.Lock()
        self.queues: TaskQueues[Task] = TaskQueues()
        self.immediate: deque[Task] = deque()  # run_task calls, oldest first
        self.cancelled = {False: 0, True: 0}  # queued-but-cancelled tasks, by priority
        self.lifecycle = Lifecycle.RUNNING
        self.workers: dict[int, WorkerHandle] = {}  # changed by add_worker, remove_worker
        self._pool_workers: list[WorkerHandle] = []
        self.next_task_id = 1
        # True when the last dispatch emptied the queue and left a worker hungry:
        # only then does a submission need to wake the supervisor. Otherwise
        # returning results wake it anyway, and tasks pile up into larger batches
        # instead of one wake-up (and one GIL hand-off) per task. Under ``lock``.
        self.wants_work = True
        self.durations = TaskDurations()  # per kind of task: how many a worker may hold
        self.records = Records(config)
        self.started = threading.Event()  # set once the first workers are ready
        self.startup_error: ResourceCreationError | None = None

    # -- queues (callers hold ``lock`` where said) -------------------------------

    def queued_count(self) -> int:
        """Live queued tasks (``lock``)."""
        return len(self.queues) - self.cancelled[True] - self.cancelled[False]

    def has_work(self) -> bool:
        return bool(self.queues) or bool(self.immediate)

    def pop_immediate(self) -> Task | None:
        """The oldest ``run_task`` call not cancelled, marked running (``lock``)."""
        while self.immediate:
            task = self.immediate.popleft()
            if task.future._start():
                return task
            task.state = TaskState.DONE
        return None

    def requeue(self, tasks: list[Task], retry: bool = False) -> None:
        """Tasks that never ran (or whose result was lost) go back to the front of
        their line; a retry goes ahead of every queued task. Takes ``lock``."""
        if not tasks:
            return
        with self.lock:
            if self.lifecycle is Lifecycle.KILLED:
                dropped = tasks
            else:
                dropped = []
                for task in tasks:
                    task.state = TaskState.QUEUED
                self.immediate.extendleft(reversed([t for t in tasks if t.immediate]))
                queued = [t for t in tasks if not t.immediate]
                if retry:
                    self.queues.push_front(queued, priority=True)
                else:
                    self.queues.push_front([t for t in queued if t.priority], priority=True)
                    self.queues.push_front([t for t in queued if not t.priority], priority=False)
        for task in dropped:
            task.fail(ShutdownError(f"{task.describe()} was dropped: the manager was killed"))

    def drop_queued(self, lifecycle: str) -> list[Task]:
        """Empty the queues and the run_task line, entering ``lifecycle`` (never
        leaving KILLED); returns the tasks, for their futures to be cancelled. Takes ``lock``."""
        with self.lock:
            if self.lifecycle is not Lifecycle.KILLED:
                self.lifecycle = lifecycle
            dropped = self.queues.clear() + list(self.immediate)
            self.immediate.clear()
            self.cancelled = {False: 0, True: 0}
            for task in dropped:
                task.state = TaskState.DONE
        return dropped

    def fail_queued(self, error: ResourceCreationError) -> None:
        """on_create keeps failing and nobody can run the queue: fail it. Takes ``lock``."""
        with self.lock:
            tasks = self.queues.clear()
            self.cancelled = {False: 0, True: 0}
        for task in tasks:
            task.fail(copy_creation_error(error))

    # -- workers ------------------------------------------------------------------

    def add_worker(self, worker: WorkerHandle) -> None:
        """Under ``lock``."""
        self.workers[worker.id] = worker
        self._table_changed()

    def remove_worker(self, worker_id: int) -> None:
        """Under ``lock``."""
        self.workers.pop(worker_id, None)
        self._table_changed()

    def _table_changed(self) -> None:
        self._pool_workers = [w for w in self.workers.values() if w.role in POOL_ROLES]

    def pool_workers(self) -> list[WorkerHandle]:
        """The base and burst workers, oldest first: a list made when the table
        changes, not on each of the several reads per dispatch. Never changed in place."""
        return self._pool_workers

    def stats(self) -> Stats:
        """Any thread: a snapshot taken under ``lock``."""
        with self.lock:
            workers = list(self.workers.values())
            priority = len(self.queues.priority) - self.cancelled[True]
            normal = len(self.queues.normal) - self.cancelled[False]
        pool = [w for w in workers if w.role in POOL_ROLES]
        return Stats(
            base_workers=sum(1 for w in pool if w.role is WorkerRole.BASE and w.live),
            burst_workers=sum(1 for w in pool if w.role is WorkerRole.BURST and w.live),
            active_workers=sum(1 for w in pool if w.ready),
            busy_workers=sum(1 for w in pool if w.state is WorkerState.BUSY),
            queued_tasks=normal,
            priority_tasks=priority,
            available_resources=sum(
                1 for w in workers if w.role is WorkerRole.RESERVED and w.state is WorkerState.IDLE
            ),
            starting_workers=sum(1 for w in workers if w.state is WorkerState.STARTING),
        )


def cancel_all(tasks: list[Task], how: str) -> None:
    """Cancel dropped tasks' futures; a re-queued retry, already running, fails instead."""
    for task in tasks:
        if not task.future.cancel():
            task.fail(ShutdownError(f"{task.describe()} was dropped: the manager was {how}"))


def copy_creation_error(error: ResourceCreationError) -> ResourceCreationError:
    """A fresh exception per future: one shared instance would chain their tracebacks."""
    return ResourceCreationError(str(error.args[0]), error.remote_traceback)

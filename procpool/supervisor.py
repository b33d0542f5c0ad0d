"""The supervisor: all policy of one TaskManager, on one thread.

Data flow (local backend)::

    caller threads                      supervisor thread                worker processes
    --------------                      -----------------                ----------------
    submit() ──▶ [queue lock]           loop:                            on_create()
      TaskQueues (priority, normal) ──▶   wait(pipes, sentinels,  ◀──── Results / Ready /
      immediate (run_task)                     wake-up pipe)               Leaving / Goodbye
      wake() ─────── wake-up pipe ──▶     handle events: resolve futures,
                                            retry, replace, requeue
    stats(), metrics() read a             check timeouts, burst tick
      snapshot under the lock             dispatch: pop by strict   ──▶ RunBatch / Leave
                                            priority, batch per worker    (one pipe each)

Who owns what:

* **Caller threads** create a :class:`~procpool.tasks.Task`, push it under
  ``_lock`` and wake the supervisor through the backend's wake-up pipe (a
  write only when no wake-up is pending, so a busy loop costs no syscall).
* **The supervisor thread** (``procpool-supervisor``) is the only writer of
  the worker table's records and of every future's result. It sleeps in one
  blocking ``backend.wait`` on all pipes, sentinels and the wake-up pipe; its
  timeout is the nearest deadline (task timeout, burst tick, restart backoff,
  stats dump), never a polling interval.
* **Workers** own the resources. What they were sent stays in
  ``WorkerHandle.in_flight`` until reported, so a crash, an unhealthy exit or
  a recycle knows exactly which tasks to re-queue.

``_lock`` guards the queues, the lifecycle state and membership of the worker
table; futures are resolved outside it. Their done-callbacks do not run here:
:class:`~procpool.tasks.TaskFuture` hands them to the pool's
:class:`~procpool.callbacks.CallbackRunner` thread, so a callback that blocks
cannot stop this loop.

Every wait of this thread is bounded by an event or a deadline: a worker
stuck in ``on_create`` or ``on_destroy`` is killed at ``create_timeout`` /
``destroy_timeout``, fork-server start requests in flight are bounded (see
the local backend), and at most ``max_worker_count`` temporary workers serve
``run_task`` at once.
"""

from __future__ import annotations

import math
import threading
import weakref
from collections import deque
from collections.abc import Iterable
from concurrent.futures import CancelledError
from dataclasses import dataclass
from time import monotonic
from typing import Any

from procpool._log import logger
from procpool.backends import wire
from procpool.backends.base import (
    Backend,
    Event,
    TaskOutcome,
    TaskSpec,
    WorkerCreateFailed,
    WorkerGone,
    WorkerLeaving,
    WorkerReady,
    WorkerResults,
    WorkerStarted,
)
from procpool.callbacks import CallbackRunner
from procpool.config import Config
from procpool.errors import (
    MaxRetriesExceededError,
    ProcPoolError,
    ResourceCreationError,
    ShutdownError,
    TaskPicklingError,
    TaskTimeoutError,
    WorkerCrashedError,
    describe_exit,
)
from procpool.metrics import DefaultCollector, Metrics, TaskStamps
from procpool.policy.burst import BurstController, BurstSnapshot
from procpool.policy.prefetch import PREFETCH_LIMIT, TaskDurations
from procpool.policy.queues import TaskQueues
from procpool.policy.restarts import RestartBreaker
from procpool.policy.retry import may_retry
from procpool.tasks import Task, TaskState
from procpool.workers import WorkerHandle, WorkerRole, WorkerState

#: How many workers may die holding a task, outside any task, before that task
#: fails. More forgives bad luck (a worker OOM-killed between tasks); fewer ends
#: a crash loop caused by the task's own result sooner.
MAX_UNEXPLAINED_DEATHS = 3

#: How soon to look again at a timed task that was sent but has not started.
TIMEOUT_RECHECK_SECONDS = 0.005


class _Lifecycle:
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


class Supervisor:
    """Owns queues, workers and futures of one manager. See the module docstring."""

    def __init__(
        self, config: Config[Any], backend: Backend, breaker: RestartBreaker | None = None
    ) -> None:
        self.config = config
        self._backend = backend
        self._lock = threading.Lock()
        self._queues: TaskQueues[Task] = TaskQueues()
        self._immediate: deque[Task] = deque()
        self._cancelled = {False: 0, True: 0}  # queued-but-cancelled tasks, by priority
        self._state = _Lifecycle.RUNNING
        self._workers: dict[int, WorkerHandle] = {}
        self._terminate_requests: deque[Task] = deque()
        self._next_worker_id = 1
        self._next_task_id = 1
        # Arrivals are counted under the queue lock and handed to the collector
        # by the supervisor thread: submitting stays cheap.
        self._pending_arrivals = 0
        # True when the last dispatch emptied the queue and left a worker hungry
        # (below half its depth): only then does a submission need to wake the
        # supervisor. Otherwise returning results wake it anyway, and tasks pile
        # up into larger batches instead of one wake-up (and one GIL hand-off)
        # per task. Read and written under ``_lock``.
        self._wants_work = True
        self._metrics = DefaultCollector(config.metrics_window)
        self._durations = TaskDurations()  # per kind of task: how many a worker may hold
        self._user_collector = config.collector
        self._breaker = breaker if breaker is not None else RestartBreaker()
        interval = config.burst_interval or 0.0
        self._burst = BurstController(
            worker_count=config.worker_count,
            max_worker_count=config.effective_max_workers,
            interval=interval,
            cooldown_ticks=_cooldown_ticks(config.burst_cooldown, interval, None),
        )
        self._next_burst_tick = monotonic() + (config.burst_interval or 0.0)
        self._start_seconds: float | None = None  # EWMA of spawn + on_create
        self._started = threading.Event()
        self._startup_error: ResourceCreationError | None = None
        self._last_create_error: ResourceCreationError | None = None
        self._thread = threading.Thread(target=self._run, name="procpool-supervisor", daemon=True)
        self._dump_hook: Any = None
        self._next_dump = 0.0
        #: where the futures' done-callbacks run (see procpool.callbacks)
        self.callbacks = CallbackRunner()

    # == called from any thread ==============================================

    def start(self) -> None:
        """Start the thread and wait until every initial worker is ready.

        Ctrl-C (any exception) while waiting kills what was started before it
        propagates: no process outlives a constructor that did not return.
        """
        self._thread.start()
        try:
            self._started.wait()
        except BaseException:
            self.begin_kill()
            self._thread.join()
            raise
        if self._startup_error is not None:
            self._thread.join()
            raise self._startup_error

    def submit(self, task: Task) -> None:
        with self._lock:
            if self._state is not _Lifecycle.RUNNING:
                raise ShutdownError(
                    f"cannot accept {task.describe()}: the manager is {self._state}"
                )
            task.id = self._next_task_id
            self._next_task_id += 1
            if task.immediate:
                self._immediate.append(task)
            else:
                self._queues.push(task, task.priority)
            self._pending_arrivals += 1
            wake = task.immediate or self._wants_work
            self._wants_work = False
        if self._user_collector is not None:
            self._user_collector.record_arrival()
        if wake:
            self._backend.wake()

    def submit_many(self, tasks: Iterable[Task]) -> None:
        """Queue several tasks under one lock acquisition (``map``)."""
        count = 0
        with self._lock:
            if self._state is not _Lifecycle.RUNNING:
                raise ShutdownError(f"cannot accept tasks: the manager is {self._state}")
            for task in tasks:
                task.id = self._next_task_id
                self._next_task_id += 1
                self._queues.push(task, task.priority)
                count += 1
            self._pending_arrivals += count
            self._wants_work = False
        if self._user_collector is not None:
            for _ in range(count):
                self._user_collector.record_arrival()
        self._backend.wake()

    def _flush_arrivals(self) -> None:
        """Hand arrivals counted under the queue lock to the collector, in one step."""
        with self._lock:
            count, self._pending_arrivals = self._pending_arrivals, 0
        if count:
            self._metrics.record_arrivals(count)

    def on_cancelled(self, task: Task) -> None:
        """A queued task's future was cancelled: stop counting it as queued."""
        with self._lock:
            if task.state is TaskState.QUEUED and not task.cancel_counted:
                task.cancel_counted = True
                if not task.immediate:  # run_task's line is not counted in stats()
                    self._cancelled[task.priority] += 1
                task.release()

    def request_terminate(self, task: Task) -> None:
        """Terminate the worker running ``task`` (``cancel(fut, terminate=True)``)."""
        self._terminate_requests.append(task)
        self._backend.wake()

    def begin_stop(self) -> None:
        with self._lock:
            if self._state is _Lifecycle.RUNNING:
                self._state = _Lifecycle.STOPPING
        self._backend.wake()

    def begin_kill(self) -> None:
        """Refuse new work, cancel what is queued, terminate every worker now."""
        self._drop_queued(_Lifecycle.KILLED)

    def cancel_queued(self) -> None:
        """Refuse new work and cancel what is queued; running tasks finish (Ctrl-C)."""
        self._drop_queued(_Lifecycle.STOPPING)

    def _drop_queued(self, state: str) -> None:
        with self._lock:
            if self._state is not _Lifecycle.KILLED:
                self._state = state
            dropped = self._queues.clear() + list(self._immediate)
            self._immediate.clear()
            self._cancelled = {False: 0, True: 0}
            for task in dropped:
                task.state = TaskState.DONE
        how = "killed" if state is _Lifecycle.KILLED else "stopped"
        for task in dropped:
            if not task.future.cancel():  # a re-queued retry is already running
                task.fail(ShutdownError(f"{task.describe()} was dropped: the manager was {how}"))
        self._backend.wake()

    def join(self, timeout: float | None = None) -> bool:
        """Wait for the supervisor thread; True when it has finished."""
        if self.on_own_thread:
            return False  # called from a future's callback: cannot wait for ourselves
        if self._thread.ident is None:
            return True
        self._thread.join(timeout)
        return not self._thread.is_alive()

    @property
    def on_own_thread(self) -> bool:
        """True when called from the supervisor thread (a future's done-callback)."""
        return threading.current_thread() is self._thread

    @property
    def finished(self) -> bool:
        return self._thread.ident is not None and not self._thread.is_alive()

    @property
    def state(self) -> str:
        return self._state

    def stats(self) -> Stats:
        with self._lock:
            workers = list(self._workers.values())
            priority = len(self._queues.priority) - self._cancelled[True]
            normal = len(self._queues.normal) - self._cancelled[False]
        pool = [w for w in workers if w.role in (WorkerRole.BASE, WorkerRole.BURST)]
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

    def metrics(self) -> Metrics:
        self._flush_arrivals()
        if self._user_collector is not None:
            result: Metrics = self._user_collector.metrics()
            return result
        return self._metrics.metrics()

    def worker_handles(self) -> list[WorkerHandle]:
        with self._lock:
            return list(self._workers.values())

    def helper_processes(self) -> dict[str, int]:
        """``role -> pid`` of the backend's own processes (a fork server); any thread."""
        return self._backend.helper_processes()

    def set_dump_hook(self, hook: Any) -> None:
        """``hook()`` runs on the supervisor thread every ``stats_dump_interval``."""
        self._dump_hook = hook

    # == supervisor thread ===================================================

    def _run(self) -> None:
        try:
            self._start_initial_workers()
            while not self._finished():
                self._handle_all(self._backend.wait(self._next_timeout()))
                now = monotonic()
                self._flush_arrivals()
                if self._state is _Lifecycle.KILLED:
                    self._kill_workers()
                    continue
                self._enforce_hook_timeouts(now)
                if not self._started.is_set():
                    continue  # the constructor still waits for the first workers
                self._serve_terminate_requests()
                self._check_timeouts(now)
                self._burst_tick(now)
                self._replace_missing(now)
                self._dispatch()
                self._leave_when_drained()
                self._dump(now)
        except BaseException as exc:  # a bug here must not leave callers waiting forever
            logger.opt(exception=exc).error("procpool supervisor failed; killing the pool")
            self._crash_cleanup(exc)
        finally:
            self._backend.close()
            if self._dump_hook is not None:
                self._dump(None)
            self._started.set()
            self.callbacks.close()
            _live_supervisors.discard(self)

    def _start_initial_workers(self) -> None:
        """Start the first workers; the loop sets ``_started`` once all are ready."""
        for _ in range(self.config.worker_count):
            self._start_worker(WorkerRole.BASE)
        for _ in range(self.config.resource_pool_size):
            self._start_worker(WorkerRole.RESERVED)
        self._check_started()

    def _check_started(self) -> None:
        if self._started.is_set() or self._state is not _Lifecycle.RUNNING:
            return
        if any(w.state is WorkerState.STARTING for w in self._workers.values()):
            return
        logger.info(
            "procpool started {} base and {} reserved workers ({})",
            self.config.worker_count,
            self.config.resource_pool_size,
            self.config.effective_start_method,
        )
        self._started.set()

    def _finished(self) -> bool:
        if self._state is _Lifecycle.RUNNING:
            return False
        if self._workers:
            return False
        if self._state is _Lifecycle.KILLED:
            return True
        return not self._queues and not self._immediate

    def _next_timeout(self) -> float | None:
        now = monotonic()
        deadlines: list[float] = []
        if self._terminate_requests:
            return 0.0
        if self._burst.enabled and self._state is _Lifecycle.RUNNING:
            deadlines.append(self._next_burst_tick)
        if self._dump_hook is not None:
            deadlines.append(self._next_dump)
        for worker in self._workers.values():
            if worker.in_flight and worker.in_flight[0].timeout is not None:
                deadlines.append(self._timeout_deadline(worker, now))
            hook_deadline = self._hook_deadline(worker)
            if hook_deadline is not None:
                deadlines.append(hook_deadline)
        if self._missing_workers():
            deadlines.append(self._breaker.next_attempt(now))
        if not deadlines:
            return None
        return max(0.0, min(deadlines) - now)

    # -- events --------------------------------------------------------------

    def _handle_all(self, events: list[Event]) -> None:
        """Handle what the backend reported. A function of its own, so that no event
        (a result, a big one maybe) stays referenced by the loop's frame after it."""
        for event in events:
            self._handle(event)

    def _handle(self, event: Event) -> None:
        worker = self._workers.get(event.worker_id)
        if worker is None:
            return
        if isinstance(event, WorkerResults):
            self._on_results(worker, event.outcomes)
        elif isinstance(event, WorkerStarted):
            worker.pid = event.pid
            worker.started_at = monotonic()
        elif isinstance(event, WorkerReady):
            self._on_ready(worker, event)
        elif isinstance(event, WorkerLeaving):
            self._on_leaving(worker, event.reason)
        elif isinstance(event, WorkerCreateFailed):
            self._on_create_failed(worker, event.message, event.traceback_text)
        elif isinstance(event, WorkerGone):
            self._on_gone(worker, event)

    def _on_ready(self, worker: WorkerHandle, event: WorkerReady) -> None:
        worker.pid = event.pid
        worker.ready_at = monotonic()
        elapsed = worker.ready_at - worker.created_at
        self._start_seconds = (
            elapsed if self._start_seconds is None else 0.7 * self._start_seconds + 0.3 * elapsed
        )
        self._breaker.success()
        if worker.state is WorkerState.STARTING:
            worker.move(WorkerState.IDLE)
        logger.debug("worker {} ({}) pid {} ready in {:.3f} s", worker.id, worker.role.value,
                     event.pid, elapsed)
        if worker.role is WorkerRole.TEMPORARY and not self._serve_immediate(worker):
            self._retire(worker)  # a reserved worker took its run_task first
        self._check_started()

    def _on_results(self, worker: WorkerHandle, outcomes: list[TaskOutcome]) -> None:
        for outcome in outcomes:
            task = _take_in_flight(worker, outcome.task_id)
            if task is None:
                continue
            worker.tasks_done += 1
            self._finish(task, outcome)
        if worker.state is WorkerState.BUSY and not worker.in_flight:
            worker.move(WorkerState.IDLE)
        if worker.state is WorkerState.LEAVING and not worker.in_flight:
            worker.drained_at = monotonic()
        if (worker.role is WorkerRole.TEMPORARY and worker.state is WorkerState.IDLE
                and not self._serve_immediate(worker)):
            self._retire(worker)

    def _finish(self, task: Task, outcome: TaskOutcome) -> None:
        stamps = TaskStamps(task.queued_at, outcome.started, outcome.finished)
        code = outcome.outcome
        if code != wire.UNREADABLE_TASK:  # it ran: its time says how to batch its kind
            self._durations.record(task.kind, stamps.execution_time)
        if code == wire.OK:
            self._record_end(stamps, failed=False)
            task.resolve(outcome.value)
        elif code == wire.RAISED:
            self._record_end(stamps, failed=True)
            task.fail(outcome.value)
        elif code == wire.RAISED_UNHEALTHY:
            logger.warning("{} failed on an unhealthy worker: {!r}", task.describe(), outcome.value)
            self._retry_or_fail(task, outcome.value, stamps)
        elif code == wire.UNPICKLABLE_RESULT:
            self._record_end(stamps, failed=True)
            task.fail(TaskPicklingError(
                f"the result of {task.describe()} cannot be pickled: {outcome.value}"))
        elif code == wire.UNREADABLE_RESULT:  # it ran: fail it once, run nothing again
            self._record_end(stamps, failed=True)
            task.fail(TaskPicklingError(
                f"the result of {task.describe()} could not be unpickled here: {outcome.value}"))
        elif code == wire.UNREADABLE_TASK:
            self._isolate_or_fail(task, str(outcome.value), stamps)

    def _isolate_or_fail(self, task: Task, text: str, stamps: TaskStamps) -> None:
        """A batch could not be unpickled in the worker (nothing of it ran): re-send its
        tasks one by one to find the bad one."""
        if not task.alone:
            task.alone = True
            self._requeue([task])
            return
        self._record_end(stamps, failed=True)
        task.fail(TaskPicklingError(
            f"{task.describe()} could not be unpickled in the worker: {text}"))

    def _retry_or_fail(self, task: Task, error: BaseException, stamps: TaskStamps | None) -> None:
        """The task's worker broke under it (unhealthy or died): run it again if allowed.

        What the future gets:

        * retries left (``may_retry``): nothing yet; the task goes back ahead
          of every queued task (front of the priority line);
        * no retry was ever possible (a ``*_once`` task, or ``max_retries=0``):
          ``error`` itself, i.e. the task's own exception or the
          :class:`WorkerCrashedError`, as a plain failure would;
        * retries used up: :class:`MaxRetriesExceededError` whose ``__cause__``
          is the last ``error``.
        """
        max_retries = self.config.max_retries
        if may_retry(once=task.once, retries_done=task.retries, max_retries=max_retries):
            task.retries += 1
            logger.info("retrying {} ahead of the queue (retry {} of {})", task.describe(),
                        task.retries, max_retries)
            self._metrics.record_retry()
            if self._user_collector is not None:
                self._user_collector.record_retry()
            task.state = TaskState.QUEUED
            with self._lock:
                self._requeue_locked([task], retry=True)
            return
        if stamps is None:
            now = monotonic()
            stamps = TaskStamps(task.queued_at, now, now)
        self._record_end(stamps, failed=True)
        if task.once or max_retries == 0:
            task.fail(error)
            return
        final = MaxRetriesExceededError(
            f"{task.describe()} failed {task.retries + 1} times (max_retries={max_retries})"
        )
        final.__cause__ = error
        task.fail(final)

    def _record_end(self, stamps: TaskStamps, failed: bool) -> None:
        if failed:
            self._metrics.record_failure(stamps)
        else:
            self._metrics.record_completion(stamps)
        collector = self._user_collector
        if collector is not None:
            (collector.record_failure if failed else collector.record_completion)(stamps)

    def _on_leaving(self, worker: WorkerHandle, reason: str) -> None:
        level = "WARNING" if reason.startswith("unhealthy") else "INFO"  # not a recycle
        logger.log(level, "worker {} ({}) pid {} leaves: {}", worker.id, worker.role.value,
                   worker.pid, reason)
        if worker.state is not WorkerState.LEAVING:
            worker.move(WorkerState.LEAVING)
        self._requeue(list(worker.in_flight))
        worker.in_flight.clear()
        worker.drained_at = monotonic()  # on_destroy runs now

    def _on_create_failed(self, worker: WorkerHandle, message: str, traceback_text: str) -> None:
        error = ResourceCreationError(
            f"worker {worker.id} ({worker.role.value}) could not create its resource: {message}",
            traceback_text,
        )
        self._last_create_error = error
        if worker.state is not WorkerState.LEAVING:
            worker.move(WorkerState.LEAVING)
        if not self._started.is_set():
            self._startup_error = error
            self.begin_kill()
            return
        now = monotonic()
        self._breaker.failure(now)
        logger.warning("{}", message)
        if worker.role is WorkerRole.TEMPORARY:
            with self._lock:
                task = self._pop_immediate()
            if task is not None:  # the run_task it was started for
                task.fail(_copy_creation_error(error))
        if self._breaker.tripped(now) and not self._has_ready_pool_worker():
            logger.error("on_create keeps failing; failing the queued tasks")
            self._fail_queued(error)

    def _on_gone(self, worker: WorkerHandle, event: WorkerGone) -> None:
        if event.destroy_error:
            logger.warning("worker {} pid {}: {}", worker.id, worker.pid, event.destroy_error)
        was = worker.state
        if was is WorkerState.STARTING:
            self._on_create_failed(
                worker, f"the process exited during on_create ({describe_exit(event.exitcode)})",
                "",
            )
        crashed = was is not WorkerState.LEAVING
        leftovers = list(worker.in_flight)
        worker.in_flight.clear()
        if crashed:
            logger.warning("worker {} ({}) pid {} died: {}", worker.id, worker.role.value,
                           worker.pid, describe_exit(event.exitcode))
            culprit, what = _find_culprit(leftovers, event.running_task)
            if culprit is not None:
                leftovers.remove(culprit)
                error = WorkerCrashedError(worker.pid or 0, event.exitcode, what)
                self._retry_or_fail(culprit, error, None)
            else:
                leftovers = self._drop_unlucky(worker, leftovers, event.exitcode)
        self._requeue(leftovers)
        worker.move(WorkerState.GONE)
        with self._lock:
            self._workers.pop(worker.id, None)

    def _drop_unlucky(
        self, worker: WorkerHandle, tasks: list[Task], exitcode: int | None
    ) -> list[Task]:
        """A worker died outside any task (e.g. while sending results): nobody to blame.

        Its tasks go back to the queue, but a task that keeps being aboard when
        that happens fails after :data:`MAX_UNEXPLAINED_DEATHS`, so no loop is endless.
        """
        kept = []
        for task in tasks:
            task.unexplained_deaths += 1
            if task.unexplained_deaths < MAX_UNEXPLAINED_DEATHS:
                kept.append(task)
                continue
            what = f"{task.describe()} (held by {task.unexplained_deaths} workers that died)"
            now = monotonic()
            self._record_end(TaskStamps(task.queued_at, now, now), failed=True)
            task.fail(WorkerCrashedError(worker.pid or 0, exitcode, what))
        return kept

    # -- actions -------------------------------------------------------------

    def _start_worker(self, role: WorkerRole) -> WorkerHandle:
        worker = WorkerHandle(self._next_worker_id, role)
        self._next_worker_id += 1
        with self._lock:
            self._workers[worker.id] = worker
        self._backend.start_worker(worker.id)
        return worker

    def _retire(self, worker: WorkerHandle) -> None:
        """Send the graceful-exit sentinel; the worker finishes what it has first."""
        if worker.state is WorkerState.LEAVING:
            return
        worker.move(WorkerState.LEAVING)
        if not worker.in_flight:
            worker.drained_at = monotonic()
        self._backend.retire(worker.id)

    def _requeue(self, tasks: list[Task]) -> None:
        """Tasks that never ran (or whose result was lost) go back to the front of their line."""
        if tasks:
            with self._lock:
                self._requeue_locked(tasks, retry=False)

    def _requeue_locked(self, tasks: list[Task], retry: bool) -> None:
        if self._state is _Lifecycle.KILLED:
            for task in tasks:
                task.fail(ShutdownError(f"{task.describe()} was dropped: the manager was killed"))
            return
        for task in tasks:
            task.state = TaskState.QUEUED
        immediate = [t for t in tasks if t.immediate]
        self._immediate.extendleft(reversed(immediate))
        queued = [t for t in tasks if not t.immediate]
        if retry:
            self._queues.push_front(queued, priority=True)
        else:
            self._queues.push_front([t for t in queued if t.priority], priority=True)
            self._queues.push_front([t for t in queued if not t.priority], priority=False)

    def _fail_queued(self, error: ResourceCreationError) -> None:
        with self._lock:
            tasks = self._queues.clear()
            self._cancelled = {False: 0, True: 0}
        for task in tasks:
            task.fail(_copy_creation_error(error))

    def _has_ready_pool_worker(self) -> bool:
        return any(
            w.ready and w.role in (WorkerRole.BASE, WorkerRole.BURST)
            for w in self._workers.values()
        )

    def _missing_workers(self) -> list[WorkerRole]:
        if self._state is _Lifecycle.KILLED or not self._started.is_set():
            return []
        if self._state is _Lifecycle.STOPPING and not self._queues and not self._immediate:
            return []
        missing = []
        for role, want in (
            (WorkerRole.BASE, self.config.worker_count),
            (WorkerRole.RESERVED, self.config.resource_pool_size),
        ):
            have = sum(1 for w in self._workers.values() if w.role is role and w.live)
            missing += [role] * (want - have)
        return missing

    def _backing_off(self, now: float) -> bool:
        """True while on_create keeps failing and no new start may be tried yet.

        After a failure, starts wait out the breaker's backoff and go one at a
        time; replacements and burst starts alike, so neither can spin.
        """
        if now < self._breaker.next_attempt(now):
            return True
        return self._breaker.failing and any(
            w.state is WorkerState.STARTING for w in self._workers.values()
        )

    def _replace_missing(self, now: float) -> None:
        """Keep base and reserved counts whole; back off while on_create keeps failing."""
        missing = self._missing_workers()
        if not missing or self._backing_off(now):
            return
        if self._breaker.failing:
            missing = missing[:1]  # after failures, try one at a time
        for role in missing:
            logger.info("starting a replacement {} worker", role.value)
            self._start_worker(role)

    def _check_timeouts(self, now: float) -> None:
        for worker in list(self._workers.values()):
            if not worker.in_flight or worker.state is WorkerState.LEAVING:
                continue
            task = worker.in_flight[0]
            if task.timeout is None or now < self._timeout_deadline(worker, now):
                continue
            worker.in_flight.popleft()
            self._requeue(list(worker.in_flight))
            worker.in_flight.clear()
            worker.move(WorkerState.LEAVING)
            self._backend.terminate(worker.id)
            logger.warning("{} timed out after {} s; terminating worker {} pid {}",
                           task.describe(), task.timeout, worker.id, worker.pid)
            self._record_end(TaskStamps(task.queued_at, now - task.timeout, now), failed=True)
            task.fail(TaskTimeoutError(
                f"{task.describe()} ran longer than its timeout of {task.timeout} s;"
                f" its worker (pid {worker.pid}) was terminated"))

    def _timeout_deadline(self, worker: WorkerHandle, now: float) -> float:
        task = worker.in_flight[0]
        assert task.timeout is not None
        running = self._backend.running_task(worker.id)
        if running is not None and running[0] == task.id:
            return running[1] + task.timeout
        return now + min(task.timeout, TIMEOUT_RECHECK_SECONDS)  # not started yet

    def _serve_terminate_requests(self) -> None:
        while self._terminate_requests:
            task = self._terminate_requests.popleft()
            for worker in list(self._workers.values()):
                if task in worker.in_flight and worker.state is not WorkerState.LEAVING:
                    worker.in_flight.remove(task)
                    self._requeue(list(worker.in_flight))
                    worker.in_flight.clear()
                    worker.move(WorkerState.LEAVING)
                    self._backend.terminate(worker.id)
                    task.fail(CancelledError(f"{task.describe()} was cancelled; its worker"
                                             f" (pid {worker.pid}) was terminated"))

    def _hook_deadline(self, worker: WorkerHandle) -> float | None:
        """When ``worker`` overruns ``on_create`` or ``on_destroy``; None: no limit applies."""
        if worker.killed:
            return None
        if worker.state is WorkerState.STARTING and worker.started_at is not None:
            limit = self.config.create_timeout
            return None if limit is None else worker.started_at + limit
        if worker.state is WorkerState.LEAVING and worker.drained_at is not None:
            limit = self.config.destroy_timeout
            return None if limit is None else worker.drained_at + limit
        return None

    def _enforce_hook_timeouts(self, now: float) -> None:
        """Kill workers stuck in ``on_create`` or ``on_destroy`` past their timeout."""
        for worker in list(self._workers.values()):
            deadline = self._hook_deadline(worker)
            if deadline is None or now < deadline:
                continue
            worker.killed = True
            if worker.state is WorkerState.STARTING:
                self._on_create_failed(
                    worker,
                    f"on_create timed out: it did not return within create_timeout="
                    f"{self.config.create_timeout} s, so its worker (pid {worker.pid}) was killed",
                    "",
                )
            else:
                logger.warning("worker {} pid {}: on_destroy did not return within"
                               " destroy_timeout={} s; killing it", worker.id, worker.pid,
                               self.config.destroy_timeout)
            self._backend.terminate(worker.id, grace=0)

    def _burst_tick(self, now: float) -> None:
        if not self._burst.enabled or now < self._next_burst_tick:
            return
        interval = self.config.burst_interval or 0.0
        # After a late tick (start-up, a long event burst) the next one is a whole interval
        # away, never at once: the controller's per-tick limits assume ticks that far apart.
        self._next_burst_tick += interval
        if self._next_burst_tick <= now:
            self._next_burst_tick = now + interval
        if self._state is not _Lifecycle.RUNNING and not self._queues:
            return
        pool = [w for w in self._workers.values() if w.role in (WorkerRole.BASE, WorkerRole.BURST)]
        idle_burst = sorted(
            (w for w in pool if w.role is WorkerRole.BURST and w.state is WorkerState.IDLE),
            key=lambda w: w.idle_since,
        )
        metrics = self._metrics.metrics()
        with self._lock:
            queued = len(self._queues) - self._cancelled[True] - self._cancelled[False]
        snapshot = BurstSnapshot(
            now=now,
            arrival_rate=metrics.task_arrival_rate,
            completion_rate=metrics.task_completion_rate,
            queued_tasks=queued,
            base_workers=self.config.worker_count,
            burst_workers=sum(1 for w in pool if w.role is WorkerRole.BURST and w.live),
            starting_workers=sum(1 for w in pool if w.state is WorkerState.STARTING),
            busy_workers=sum(1 for w in pool if w.state is WorkerState.BUSY),
            idle_burst_workers=tuple(w.id for w in idle_burst),
            mean_task_seconds=self._metrics.recent_mean_execution(),
            worker_start_seconds=self._start_seconds,
        )
        self._burst.cooldown_ticks = _cooldown_ticks(
            self.config.burst_cooldown, interval, self._start_seconds
        )
        decision = self._burst.decide(snapshot)
        # Workers still leaving (inside on_destroy) hold a process and a resource too:
        # the total of processes never passes max_worker_count.
        room = self.config.effective_max_workers - sum(
            1 for w in pool if w.state is not WorkerState.GONE
        )
        starts = min(decision.start, max(0, room))
        if starts and not self._backing_off(now):
            logger.info("burst: starting {} workers ({})", starts, decision.reason)
            for _ in range(1 if self._breaker.failing else starts):
                self._start_worker(WorkerRole.BURST)
        if decision.retire:
            logger.info("burst: retiring {} idle workers ({})", len(decision.retire),
                        decision.reason)
            for worker_id in decision.retire:
                worker = self._workers.get(worker_id)
                if worker is not None and worker.state is WorkerState.IDLE:
                    self._retire(worker)

    def _dispatch(self) -> None:
        """Send queued tasks to hungry workers by strict priority, one batch each.

        How many tasks a worker may hold follows the kind of task at hand
        (:mod:`procpool.policy.prefetch`): tiny ones travel in batches that
        cover about a millisecond of work; a task that takes a millisecond or
        more, or whose kind was never seen, goes alone to a worker holding
        nothing, so such tasks spread over every idle worker and a priority
        task never waits behind more than one running task per worker.

        A worker holding tiny tasks is hungry below half its depth: topping it
        up only then turns a stream of single submissions into batches, while
        the half it still holds keeps it busy during the round trip.

        Hunger is judged on what a worker really holds *after* sending: a task
        that cannot be pickled fails its future and is not held, so the worker
        it was meant for is still hungry and gets the next tasks in the same
        pass. Passes repeat while they place tasks and the queue is not empty.
        """
        self._dispatch_immediate()
        while True:
            placed = False
            for worker in self._hungry_workers():
                with self._lock:
                    batch = self._take(worker)
                if batch:
                    placed = True
                    self._send(worker, batch)
            with self._lock:
                if self._queues and placed:
                    continue
                # Read with the queue under the same lock: a submission either
                # sees this flag set, or it is in the queue this check looked at.
                self._wants_work = not self._queues and bool(self._hungry_workers())
                return

    def _hungry_workers(self) -> list[WorkerHandle]:
        """Ready pool workers that may take more now, emptiest first."""
        hungry = []
        for worker in self._workers.values():
            if worker.role not in (WorkerRole.BASE, WorkerRole.BURST) or not worker.ready:
                continue
            held = worker.in_flight
            if held:
                last = held[-1]
                if last.alone or not self._durations.is_tiny(last.kind):
                    continue
                if len(held) >= max(1, self._durations.depth(last.kind) // 2):
                    continue
            hungry.append(worker)
        hungry.sort(key=lambda w: len(w.in_flight))
        return hungry

    def _take(self, worker: WorkerHandle) -> list[Task]:
        """Pop the tasks ``worker`` may take now, by strict priority (caller holds ``_lock``).

        Tiny tasks up to the depth of their kind; a task that is not tiny (slow,
        unknown, or sent alone) only as the whole batch of an empty worker.
        """
        batch: list[Task] = []
        queues = self._queues
        durations = self._durations
        held = len(worker.in_flight)
        room = self._tasks_left(worker)
        while room > 0 and queues:
            task = queues.peek()
            tiny = not task.alone and durations.is_tiny(task.kind)
            if not tiny and (batch or held):
                break  # it goes alone, to a worker with nothing else in flight
            if tiny and held + len(batch) >= durations.depth(task.kind):
                break
            queues.pop()
            if not _mark_running(task):
                if task.cancel_counted:
                    self._cancelled[task.priority] -= 1
                task.state = TaskState.DONE
                continue
            batch.append(task)
            room -= 1
            if not tiny:
                break
        return batch

    def _tasks_left(self, worker: WorkerHandle) -> int:
        """Tasks ``worker`` may still be sent before ``max_tasks_per_worker`` recycles it."""
        max_tasks = self.config.max_tasks_per_worker
        if max_tasks is None:
            return PREFETCH_LIMIT
        return min(PREFETCH_LIMIT, max_tasks - worker.tasks_done - len(worker.in_flight))

    def _dispatch_immediate(self) -> None:
        """``run_task`` calls go to idle reserved workers, else to temporary ones.

        At most ``max_worker_count`` temporary workers live at once; further
        calls wait in their own line, ahead of every queued task, for the first
        reserved or temporary worker that frees up (a temporary worker that
        finishes takes the next call instead of leaving).
        """
        if not self._immediate:
            return
        for worker in list(self._workers.values()):
            idle_reserved = worker.role is WorkerRole.RESERVED and worker.state is WorkerState.IDLE
            if idle_reserved and not self._serve_immediate(worker):
                return  # the line is empty
        # Leaving ones count too: their processes (inside on_destroy) still run.
        temporaries = [w for w in self._workers.values() if w.role is WorkerRole.TEMPORARY]
        starting = sum(1 for w in temporaries if w.state is WorkerState.STARTING)
        with self._lock:
            waiting = len(self._immediate)
        room = self.config.effective_max_workers - len(temporaries)
        for _ in range(min(waiting - starting, room)):
            self._start_worker(WorkerRole.TEMPORARY)

    def _serve_immediate(self, worker: WorkerHandle) -> bool:
        """Send the oldest live ``run_task`` call to ``worker``; False if none is waiting."""
        while True:
            with self._lock:
                task = self._pop_immediate()
            if task is None:
                return False
            self._send(worker, [task])
            if worker.in_flight:
                return True  # else it could not be pickled (its future failed): next one

    def _pop_immediate(self) -> Task | None:
        """The oldest ``run_task`` call not cancelled, marked running (caller holds ``_lock``)."""
        while self._immediate:
            task = self._immediate.popleft()
            if _mark_running(task):
                return task
            task.state = TaskState.DONE
        return None

    def _send(self, worker: WorkerHandle, batch: list[Task]) -> None:
        for task in batch:
            task.state = TaskState.SENT
        worker.in_flight.extend(batch)
        if worker.state is WorkerState.IDLE:
            worker.move(WorkerState.BUSY)
        specs = [TaskSpec(t.id, t.fn, t.args, t.kwargs) for t in batch]
        for task_id, error in self._backend.send(worker.id, specs):
            rejected = _take_in_flight(worker, task_id)
            if rejected is not None:
                now = monotonic()
                self._record_end(TaskStamps(rejected.queued_at, now, now), failed=True)
                rejected.fail(error)
        if worker.state is WorkerState.BUSY and not worker.in_flight:
            worker.move(WorkerState.IDLE)

    def _leave_when_drained(self) -> None:
        """Once stopping and nothing is left to run, every worker leaves.

        Ready ones gracefully (``on_destroy``); one still inside ``on_create``
        has built nothing that a task needs, so it is terminated, not waited for.
        """
        if self._state is not _Lifecycle.STOPPING or self._queues or self._immediate:
            return
        if any(w.in_flight for w in self._workers.values()):
            return
        for worker in list(self._workers.values()):
            if worker.state is WorkerState.STARTING:
                worker.move(WorkerState.LEAVING)
                self._backend.terminate(worker.id)
            elif worker.state is not WorkerState.LEAVING:
                self._retire(worker)

    def _kill_workers(self) -> None:
        for worker in list(self._workers.values()):
            for task in worker.in_flight:
                task.fail(ShutdownError(f"{task.describe()} was running when the manager was"
                                        f" killed; its worker (pid {worker.pid}) was terminated"))
            worker.in_flight.clear()
            if worker.state is not WorkerState.LEAVING:
                worker.move(WorkerState.LEAVING)
            if not worker.killed:
                worker.killed = True
                self._backend.terminate(worker.id, grace=0)

    def _crash_cleanup(self, exc: BaseException) -> None:
        with self._lock:
            self._state = _Lifecycle.KILLED
            tasks = self._queues.clear() + list(self._immediate)
            self._immediate.clear()
        tasks += [t for w in self._workers.values() for t in w.in_flight]
        for task in tasks:
            error = ProcPoolError(f"the procpool supervisor failed: {exc!r}")
            error.__cause__ = exc
            task.fail(error)
        if self._startup_error is None and not self._started.is_set():
            self._startup_error = ResourceCreationError(f"the procpool supervisor failed: {exc!r}")

    def _dump(self, now: float | None) -> None:
        hook = self._dump_hook
        if hook is None or (now is not None and now < self._next_dump):
            return
        self._next_dump = (now or monotonic()) + self.config.stats_dump_interval
        try:
            hook()
        except Exception as exc:
            logger.warning("stats dump failed: {!r}", exc)


def _find_culprit(leftovers: list[Task], running: int | None) -> tuple[Task | None, str]:
    """Which task killed its worker, from the progress slot: ``(task, description)``.

    A positive id was running (or is the one task whose result could not be
    sent). A negative one is the first task of a batch the worker was still
    loading, or of several whose results could not be sent: a task sent alone
    is then the culprit; otherwise every leftover is marked to be sent alone,
    so the next crash names it.
    """
    if running is None:
        return None, ""
    if running > 0:
        task = next((t for t in leftovers if t.id == running), None)
        return task, task.describe() if task is not None else ""
    first = next((t for t in leftovers if t.id == -running), None)
    if first is not None and first.alone:
        return first, f"{first.describe()}, while loading its arguments or sending its result"
    for task in leftovers:
        task.alone = True
    return None, ""


def _cooldown_ticks(cooldown: float, interval: float, start_seconds: float | None) -> int:
    """``Config.burst_cooldown`` in burst ticks, never shorter than one worker start-up.

    Ski rental: an idle worker kept as long as it took to start one never costs more
    than twice the best choice made in hindsight, whatever the next wave does. At least
    one tick, however short the cooldown; 1 when bursting is off (the controller holds).
    """
    if not interval:
        return 1
    seconds = max(cooldown, start_seconds or 0.0)
    return max(1, math.ceil(seconds / interval - 1e-9))


def _take_in_flight(worker: WorkerHandle, task_id: int) -> Task | None:
    in_flight = worker.in_flight
    if in_flight and in_flight[0].id == task_id:
        return in_flight.popleft()
    for task in in_flight:
        if task.id == task_id:
            in_flight.remove(task)
            return task
    return None


def _mark_running(task: Task) -> bool:
    """Move the future to RUNNING; False if it was cancelled while queued.

    A re-queued task (retry, lost worker) is already RUNNING: it stays so.
    """
    future = task.future
    return future.running() or future.set_running_or_notify_cancel()


def _copy_creation_error(error: ResourceCreationError) -> ResourceCreationError:
    """A fresh exception per future: one shared instance would chain their tracebacks."""
    return ResourceCreationError(str(error.args[0]), error.remote_traceback)


#: Supervisors not yet finished; stopped at interpreter exit.
_live_supervisors: weakref.WeakSet[Supervisor] = weakref.WeakSet()

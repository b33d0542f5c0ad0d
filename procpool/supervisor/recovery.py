"""Recovery: what each reported outcome means for its future, and what a broken worker
costs. Supervisor thread only.

Results resolve futures; a worker that died, left as unhealthy or overran a
task's timeout has its tasks attributed: the one that was running is blamed
(retried if it may be, else failed), the ones it held but had not run go
back to the front of their line. A worker's death with nobody to blame
counts against every task aboard, so that no crash loop is endless.
"""

from __future__ import annotations

from collections import deque
from concurrent.futures import CancelledError

from procpool._log import logger
from procpool.backends import wire
from procpool.backends.base import Backend, TaskOutcome, WorkerGone
from procpool.errors import (
    MaxRetriesExceededError,
    TaskPicklingError,
    TaskTimeoutError,
    WorkerCrashedError,
    describe_exit,
)
from procpool.metrics import TaskStamps
from procpool.policy.retry import may_retry
from procpool.supervisor.dispatch import take_in_flight
from procpool.supervisor.state import PoolState, Ran
from procpool.tasks import Task, TaskState
from procpool.workers import WorkerHandle, WorkerState

#: How many workers may die holding a task, outside any task, before that task
#: fails. More forgives bad luck (a worker OOM-killed between tasks); fewer ends
#: a crash loop caused by the task's own result sooner.
MAX_UNEXPLAINED_DEATHS = 3

#: How soon to look again at a timed task that was sent but has not started.
TIMEOUT_RECHECK_SECONDS = 0.005


class Recovery:
    """Outcomes to futures; broken workers to retries, re-queues and failures."""

    def __init__(self, state: PoolState, backend: Backend) -> None:
        self._state = state
        self._backend = backend
        #: tasks whose worker ``cancel(terminate=True)`` asked to stop (any thread appends)
        self.terminate_requests: deque[Task] = deque()
        #: ``(task, value, failed)`` of tasks that ran, for :meth:`resolve_settled`
        self._settled: list[tuple[Task, object, bool]] = []

    # -- results --------------------------------------------------------------------

    def on_results(self, worker: WorkerHandle, outcomes: list[TaskOutcome]) -> None:
        """Each outcome to its task: what returned or raised (nearly every task) is
        settled here, the batch's figures in one step; the rest by :meth:`_finish_abnormal`."""
        ran: list[Ran] = []
        settled = self._settled
        durations = self._state.durations
        for outcome in outcomes:
            task = take_in_flight(worker, outcome.task_id)
            if task is None:
                continue
            worker.tasks_done += 1
            code = outcome.outcome
            if code != wire.UNREADABLE_TASK:  # it ran: its time says how to batch its kind
                durations.record(task.kind, max(0.0, outcome.finished - outcome.started))
            if code in (wire.OK, wire.RAISED):
                failed = code == wire.RAISED
                ran.append((task.queued_at, outcome, failed))
                settled.append((task, outcome.value, failed))
            else:
                self._finish_abnormal(task, outcome)
        if ran:
            self._state.records.end_all(ran)

    def _finish_abnormal(self, task: Task, outcome: TaskOutcome) -> None:
        """An outcome other than a return or a raise: a retry, a pickling error, a re-send."""
        code = outcome.outcome
        records = self._state.records
        stamps = TaskStamps(task.queued_at, outcome.started, outcome.finished)
        if code == wire.RAISED_UNHEALTHY:
            logger.warning("{} failed on an unhealthy worker: {!r}", task.describe(), outcome.value)
            self.retry_or_fail(task, outcome.value, stamps)
        elif code == wire.UNPICKLABLE_RESULT:
            records.end(stamps, failed=True)
            task.fail(TaskPicklingError(
                f"the result of {task.describe()} cannot be pickled: {outcome.value}"))
        elif code == wire.UNREADABLE_RESULT:  # it ran: fail it once, run nothing again
            records.end(stamps, failed=True)
            task.fail(TaskPicklingError(
                f"the result of {task.describe()} could not be unpickled here: {outcome.value}"))
        elif code == wire.UNREADABLE_TASK:
            self._isolate_or_fail(task, str(outcome.value), stamps)

    def resolve_settled(self) -> None:
        """Resolve the futures of the tasks that ran, the last thing before the loop
        sleeps: a caller woken by its result then finds the GIL free at once,
        instead of waiting for the rest of the loop's pass."""
        settled, self._settled = self._settled, []
        for task, value, failed in settled:
            if failed:
                assert isinstance(value, BaseException)
                task.fail(value)
            else:
                task.resolve(value)

    def _isolate_or_fail(self, task: Task, text: str, stamps: TaskStamps) -> None:
        """A batch could not be unpickled in the worker (nothing of it ran): re-send its
        tasks one by one to find the bad one."""
        if not task.alone:
            task.alone = True
            self._state.requeue([task])
            return
        self._state.records.end(stamps, failed=True)
        task.fail(TaskPicklingError(
            f"{task.describe()} could not be unpickled in the worker: {text}"))

    def retry_or_fail(self, task: Task, error: BaseException, stamps: TaskStamps | None) -> None:
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
        records = self._state.records
        max_retries = self._state.config.max_retries
        if may_retry(once=task.once, retries_done=task.retries, max_retries=max_retries):
            task.retries += 1
            logger.info("retrying {} ahead of the queue (retry {} of {})", task.describe(),
                        task.retries, max_retries)
            records.retry()
            task.state = TaskState.QUEUED
            self._state.requeue([task], retry=True)
            return
        if stamps is None:
            records.end_now(task)
        else:
            records.end(stamps, failed=True)
        if task.once or max_retries == 0:
            task.fail(error)
            return
        final = MaxRetriesExceededError(
            f"{task.describe()} failed {task.retries + 1} times (max_retries={max_retries})"
        )
        final.__cause__ = error
        task.fail(final)

    # -- broken workers -------------------------------------------------------------

    def on_leaving(self, worker: WorkerHandle, reason: str) -> None:
        """The worker leaves on its own (unhealthy, recycled): what it held goes back."""
        level = "WARNING" if reason.startswith("unhealthy") else "INFO"  # not a recycle
        logger.log(level, "worker {} ({}) pid {} leaves: {}", worker.id, worker.role.value,
                   worker.pid, reason)
        worker.move(WorkerState.LEAVING)
        self._state.requeue(list(worker.in_flight))
        worker.in_flight.clear()

    def on_gone(self, worker: WorkerHandle, event: WorkerGone) -> None:
        """The process ended. Unless it was leaving, it crashed: blame and re-queue."""
        if event.destroy_error:
            logger.warning("worker {} pid {}: {}", worker.id, worker.pid, event.destroy_error)
        leftovers = list(worker.in_flight)
        worker.in_flight.clear()
        if worker.state is not WorkerState.LEAVING:
            logger.warning("worker {} ({}) pid {} died: {}", worker.id, worker.role.value,
                           worker.pid, describe_exit(event.exitcode))
            culprit, what = find_culprit(leftovers, event.running_task)
            if culprit is not None:
                leftovers.remove(culprit)
                error = WorkerCrashedError(worker.pid or 0, event.exitcode, what)
                self.retry_or_fail(culprit, error, None)
            else:
                leftovers = self._drop_unlucky(worker, leftovers, event.exitcode)
        self._state.requeue(leftovers)

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
            self._state.records.end_now(task)
            task.fail(WorkerCrashedError(worker.pid or 0, exitcode, what))
        return kept

    # -- timeouts and terminations ------------------------------------------------------

    def check_timeouts(self, now: float) -> None:
        """Terminate the workers whose running task overran its timeout."""
        for worker in list(self._state.workers.values()):
            if not worker.in_flight or worker.state is WorkerState.LEAVING:
                continue
            task = worker.in_flight[0]
            if task.timeout is None or now < self.timeout_deadline(worker, now):
                continue
            worker.in_flight.popleft()
            self._stop_worker_of(worker)
            logger.warning("{} timed out after {} s; terminating worker {} pid {}",
                           task.describe(), task.timeout, worker.id, worker.pid)
            self._state.records.end(
                TaskStamps(task.queued_at, now - task.timeout, now), failed=True)
            task.fail(TaskTimeoutError(
                f"{task.describe()} ran longer than its timeout of {task.timeout} s;"
                f" its worker (pid {worker.pid}) was terminated"))

    def timeout_deadline(self, worker: WorkerHandle, now: float) -> float:
        """When the first task ``worker`` holds times out (it has a timeout)."""
        task = worker.in_flight[0]
        assert task.timeout is not None
        running = self._backend.running_task(worker.id)
        if running is not None and running[0] == task.id:
            return running[1] + task.timeout
        return now + min(task.timeout, TIMEOUT_RECHECK_SECONDS)  # not started yet

    def serve_terminate_requests(self) -> None:
        while self.terminate_requests:
            task = self.terminate_requests.popleft()
            for worker in list(self._state.workers.values()):
                if task in worker.in_flight and worker.state is not WorkerState.LEAVING:
                    worker.in_flight.remove(task)
                    self._stop_worker_of(worker)
                    task.fail(CancelledError(f"{task.describe()} was cancelled; its worker"
                                             f" (pid {worker.pid}) was terminated"))

    def _stop_worker_of(self, worker: WorkerHandle) -> None:
        """Terminate ``worker`` (SIGTERM, then SIGKILL); what else it held goes back."""
        self._state.requeue(list(worker.in_flight))
        worker.in_flight.clear()
        worker.move(WorkerState.LEAVING)
        self._backend.terminate(worker.id)


def find_culprit(leftovers: list[Task], running: int | None) -> tuple[Task | None, str]:
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

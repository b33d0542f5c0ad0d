"""Dispatch: queued tasks to hungry workers by strict priority, ``run_task`` calls to
reserved and temporary workers. Supervisor thread only.

How many tasks a worker may hold follows the kind of task at hand
(:mod:`procpool.policy.prefetch`): tiny ones travel in batches that cover
about a millisecond of work; a task that takes a millisecond or more, or
whose kind was never seen, goes alone to a worker holding nothing, so such
tasks spread over every idle worker. A kind shorter than 0.1 s may have its
next task held behind the running one, so its worker never idles between two;
a priority task so waits behind at most one running and one held task per
worker.
"""

from __future__ import annotations

from collections.abc import Callable
from time import monotonic

from procpool.backends.base import Backend, TaskSpec
from procpool.policy.prefetch import PREFETCH_LIMIT, PREFETCH_SECONDS
from procpool.supervisor.state import PoolState
from procpool.tasks import Task, TaskState
from procpool.workers import WorkerHandle, WorkerRole, WorkerState

#: No kind of task: what :meth:`Dispatcher._take` has looked up before its first task.
_NO_KIND = object()

_new_tuple = tuple.__new__


class Dispatcher:
    """Owns the decision of what each worker is sent, and the sending itself."""

    def __init__(
        self,
        state: PoolState,
        backend: Backend,
        start_worker: Callable[[WorkerRole], WorkerHandle],
    ) -> None:
        self._state = state
        self._backend = backend
        self._start_worker = start_worker

    def dispatch(self) -> None:
        """Send what the queues hold to the workers that may take it.

        A worker holding tiny tasks is hungry below half its depth: topping it
        up only then turns a stream of single submissions into batches, while
        the half it still holds keeps it busy during the round trip.

        Hunger is judged on what a worker really holds *after* sending: a task
        that cannot be pickled fails its future and is not held, so the worker
        it was meant for is still hungry and gets the next tasks in the same
        pass. Passes repeat while they place tasks and the queue is not empty.
        In one pass no worker takes more than its share of the queue (split
        over every ready worker), so the last tasks of a run spread over the
        workers instead of filling the depth of the first one that asks.
        """
        self._dispatch_immediate()
        self.dispatch_queued()

    def dispatch_queued(self) -> bool:
        """The queues' part of :meth:`dispatch`. It starts no worker, so a caller's
        thread holding the loop may run it (see ``Supervisor.submit_many``).

        True when it sent a task with a timeout: a deadline for the supervisor to watch.
        """
        state = self._state
        timed, placed = False, True  # (the first pass always looks)
        while True:
            hungry, ready = self._hungry_workers()
            with state.lock:
                if not (state.queues and hungry and placed):
                    # Read with the queue under the same lock: a submission either
                    # sees this flag set, or it is in the queue this check looked at.
                    state.wants_work = not state.queues and bool(hungry)
                    return timed
                share = -(-len(state.queues) // max(1, ready))
            placed = False
            for worker in hungry:
                with state.lock:
                    if not state.queues:  # it ran dry before this worker, still hungry:
                        state.wants_work = True  # no second look at every worker needed
                        return timed
                    batch = self._take(worker, share)
                if batch:
                    placed = True
                    timed = timed or batch[0].timeout is not None  # timed tasks go alone
                    self.send(worker, batch)

    def serve_immediate(self, worker: WorkerHandle) -> bool:
        """Send the oldest live ``run_task`` call to ``worker``; False if none is waiting."""
        while True:
            with self._state.lock:
                task = self._state.pop_immediate()
            if task is None:
                return False
            self.send(worker, [task])
            if worker.in_flight:
                return True  # else it could not be pickled (its future failed): next one

    def send(self, worker: WorkerHandle, batch: list[Task]) -> None:
        """Hand ``batch`` to ``worker``; a task that cannot be pickled fails here alone."""
        for task in batch:
            task.state = TaskState.SENT
        worker.in_flight.extend(batch)
        if worker.state is WorkerState.IDLE:
            worker.move(WorkerState.BUSY)
        # (tuple.__new__: the NamedTuple without its Python __new__, once per task)
        specs = [_new_tuple(TaskSpec, (t.id, t.fn, t.args, t.kwargs)) for t in batch]
        for task_id, error in self._backend.send(worker.id, specs):
            rejected = take_in_flight(worker, task_id)
            if rejected is not None:
                self._state.records.end_now(rejected)
                rejected.fail(error)
        if worker.state is WorkerState.BUSY and not worker.in_flight:
            worker.move(WorkerState.IDLE)

    # -- queued tasks ---------------------------------------------------------------

    def _hungry_workers(self) -> tuple[list[WorkerHandle], int]:
        """Ready pool workers that may take more now, emptiest first; and how many
        pool workers are ready.

        A worker whose running task has run well past its kind's estimate
        (twice it, and at least PREFETCH_SECONDS) is not topped up: the
        estimate is out of date, and what it would be sent would wait behind
        that task while another worker is free.
        """
        durations = self._state.durations
        now = monotonic()
        hungry = []
        ready = 0
        for worker in self._state.pool_workers():
            if not worker.ready:
                continue
            ready += 1
            held = worker.in_flight
            if held:
                if held[-1].alone or len(held) >= durations.refill_below(held[-1].kind):
                    continue
                running = self._backend.running_task(worker.id)
                if running is not None:
                    expected = durations.estimate(held[0].kind) or 0.0
                    if now - running[1] > max(PREFETCH_SECONDS, 2 * expected):
                        continue
            hungry.append(worker)
        if len(hungry) > 1:
            hungry.sort(key=lambda w: len(w.in_flight))
        return hungry, ready

    def _take(self, worker: WorkerHandle, share: int) -> list[Task]:
        """Pop at most ``share`` tasks ``worker`` may take now, by strict priority
        (caller holds ``lock``).

        Tiny tasks up to the depth of their kind, in one batch; any other task
        alone in its batch, and only while the worker holds fewer than its
        kind's depth (a task sent alone: only to an empty worker).
        """
        state = self._state
        batch: list[Task] = []
        queues = state.queues
        durations = state.durations
        held = len(worker.in_flight)
        room = min(share, self._tasks_left(worker))
        kind: object = _NO_KIND  # the kind last looked up, and what it allows:
        tiny, limit = False, 1  # (a run of one function's tasks asks once)
        line = queues.line()  # (nothing is queued while the caller holds the lock)
        while room > 0:
            if not line:
                line = queues.line()
                if not line:
                    break
            task = line[0]
            if task.alone:
                tiny, limit, kind = False, 1, _NO_KIND
            elif task.kind is not kind:
                kind = task.kind
                tiny, limit = durations.is_tiny(kind), durations.depth(kind)
            if not tiny and batch:
                break  # it travels in a batch of its own (the next pass may send it)
            if held + len(batch) >= limit:
                break
            line.popleft()
            if not task.future._start():  # cancelled while queued
                if task.cancel_counted:
                    state.cancelled[task.priority] -= 1
                task.state = TaskState.DONE
                continue
            batch.append(task)
            room -= 1
            if not tiny:
                break
        return batch

    def _tasks_left(self, worker: WorkerHandle) -> int:
        """Tasks ``worker`` may still be sent before ``max_tasks_per_worker`` recycles it."""
        max_tasks = self._state.config.max_tasks_per_worker
        if max_tasks is None:
            return PREFETCH_LIMIT
        return min(PREFETCH_LIMIT, max_tasks - worker.tasks_done - len(worker.in_flight))

    # -- run_task -----------------------------------------------------------------------

    def _dispatch_immediate(self) -> None:
        """``run_task`` calls go to idle reserved workers, else to temporary ones.

        At most ``max_worker_count`` temporary workers live at once; further
        calls wait in their own line, ahead of every queued task, for the first
        reserved or temporary worker that frees up (a temporary worker that
        finishes takes the next call instead of leaving).
        """
        state = self._state
        if not state.immediate:
            return
        for worker in list(state.workers.values()):
            idle_reserved = worker.role is WorkerRole.RESERVED and worker.state is WorkerState.IDLE
            if idle_reserved and not self.serve_immediate(worker):
                return  # the line is empty
        # Leaving ones count too: their processes (inside on_destroy) still run.
        temporaries = [w for w in state.workers.values() if w.role is WorkerRole.TEMPORARY]
        starting = sum(1 for w in temporaries if w.state is WorkerState.STARTING)
        with state.lock:
            waiting = len(state.immediate)
        room = state.config.effective_max_workers - len(temporaries)
        for _ in range(min(waiting - starting, room)):
            self._start_worker(WorkerRole.TEMPORARY)


def take_in_flight(worker: WorkerHandle, task_id: int) -> Task | None:
    """Remove and return the task ``task_id`` that ``worker`` holds, if it does."""
    in_flight = worker.in_flight
    if in_flight and in_flight[0].id == task_id:
        return in_flight.popleft()
    for task in in_flight:
        if task.id == task_id:
            in_flight.remove(task)
            return task
    return None

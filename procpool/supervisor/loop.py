"""The supervisor's loop: the thread, the lifecycle, and the public face the manager uses.

Data flow (local backend)::

    caller threads                 supervisor thread                    worker processes
    --------------                 -----------------                    ----------------
    submit() ─▶ [PoolState.lock]   loop: backend.wait(pipes, exits,     on_create()
      queues (priority, normal) ─▶       wake-up pipe)       ◀───────── Started / Ready /
      run_task line                handle events:                       Results / Leaving
      wake() ── wake-up pipe ──▶     recovery: results → futures,         / Gone
                                       crashes → retries, re-queues
    stats(), metrics(): a            fleet: ready, failed creates,
      snapshot under the lock          replacements, hook timeouts
                                     bursting: burst tick
    future callbacks ◀── callback    dispatch: strict priority,  ──────▶ RunBatch / Leave
      thread (procpool.callbacks)      batches by kind of task            (one pipe each)

Who owns what:

* **Caller threads** create a :class:`~procpool.tasks.Task` and push it under
  ``PoolState.lock``. Only when a worker waits for work do they do more: send
  it the task themselves if the supervisor is asleep in ``backend.wait`` (the
  loop lock is free then; one thread hand-off less per round trip), else wake
  the supervisor. A busy pool so costs a submission no syscall.
* **The supervisor thread** (``procpool-supervisor``) runs :meth:`Supervisor._run`
  and, with that exception, is the only writer of the worker records and of
  every future's result; it resolves futures last, just before it sleeps.
  It sleeps in one blocking ``backend.wait``; its timeout is the nearest
  deadline (task timeout, hook timeout, burst tick, restart backoff, stats
  dump), never a polling interval. Its rooms: :mod:`.dispatch` (queues →
  workers), :mod:`.recovery` (outcomes → futures, broken workers → retries),
  :mod:`.fleet` (the worker table's life), :mod:`.bursting` (burst decisions),
  all on one :class:`~.state.PoolState`.
* **The callback thread** runs the futures' done-callbacks, so that one that
  blocks cannot stop this loop.
* **Workers** own the resources. What they were sent stays in
  ``WorkerHandle.in_flight`` until reported, so a crash, an unhealthy exit or
  a recycle knows exactly which tasks to re-queue.
"""

from __future__ import annotations

import dataclasses
import threading
import weakref
from collections.abc import Callable, Hashable, Iterable
from concurrent.futures import Future
from time import monotonic
from typing import Any

from procpool._log import logger
from procpool.backends.base import (
    Backend,
    Event,
    WorkerCreateFailed,
    WorkerGone,
    WorkerLeaving,
    WorkerReady,
    WorkerResults,
    WorkerStarted,
)
from procpool.callbacks import CallbackRunner
from procpool.config import Config
from procpool.errors import ProcPoolError, ResourceCreationError, ShutdownError, describe_exit
from procpool.metrics import Metrics
from procpool.policy.restarts import RestartBreaker
from procpool.supervisor.bursting import BurstLoop
from procpool.supervisor.dispatch import Dispatcher
from procpool.supervisor.fleet import Fleet
from procpool.supervisor.recovery import Recovery
from procpool.supervisor.state import Lifecycle, PoolState, Stats, cancel_all
from procpool.tasks import Task, TaskState
from procpool.workers import WorkerHandle, WorkerRole, WorkerState


class Supervisor:
    """Owns queues, workers and futures of one manager. See the module docstring."""

    def __init__(
        self, config: Config[Any], backend: Backend, breaker: RestartBreaker | None = None
    ) -> None:
        self.config = config
        self._backend = backend
        self._state = PoolState(config)
        self._fleet = Fleet(self._state, backend, breaker or RestartBreaker())
        self._dispatcher = Dispatcher(self._state, backend, self._fleet.start_worker)
        self._recovery = Recovery(self._state, backend)
        self._bursting = BurstLoop(self._state, self._fleet)
        self._thread = threading.Thread(target=self._run, name="procpool-supervisor", daemon=True)
        self._dump_hook: Callable[[], object] | None = None
        self._cancel_requested = False  # cancel_queued() asked; under the state's lock
        self._next_dump = 0.0
        #: where the futures' done-callbacks run (see procpool.callbacks)
        self.callbacks = CallbackRunner()
        # "The loop": held by the supervisor thread except while it waits on the
        # backend, and by a caller's thread that sends its task to an idle worker
        # itself (see submit_many). Whoever holds it owns the worker records and
        # resolves futures; it is never waited for, only tried.
        self._loop = threading.Lock()
        self._loop_owner: int | None = None  # thread ident of the holder
        #: taken, never released, by the one that closes the backend (see start())
        self._backend_claim = threading.Lock()

    # == any thread ================================================================

    def start(self) -> None:
        """Start the thread and wait until every initial worker is ready.

        Ctrl-C (any exception) at any point kills what was started before it
        propagates (``open`` may fork workers): no process outlives a constructor
        that did not return. An interrupted ``Thread.start`` may or may not have run
        the thread: the first to claim the backend, it or this, closes it.
        """
        try:
            self._backend.open(self.config)
            self._thread.start()
            self._state.started.wait()
        except BaseException:
            if self._backend_claim.acquire(blocking=False):  # the thread never ran
                self._backend.close()
            else:
                self.begin_kill()
                self._thread.join()
            raise
        if self._state.startup_error is not None:
            self._thread.join()
            raise self._state.startup_error

    def submit(self, task: Task) -> None:
        self.submit_many((task,))

    def submit_many(self, tasks: Iterable[Task]) -> None:
        """Queue tasks under one lock acquisition. When a worker waits for work, send
        it some at once; a ``run_task`` call always wakes the supervisor (it may
        have to start a worker)."""
        state = self._state
        count = 0
        wake = False
        with state.lock:
            if state.lifecycle is not Lifecycle.RUNNING:
                raise ShutdownError(f"cannot accept tasks: the manager is {state.lifecycle}")
            for task in tasks:
                task.id = state.next_task_id
                state.next_task_id += 1
                if task.immediate:
                    state.immediate.append(task)
                    wake = True
                else:
                    state.queues.push(task, task.priority)
                count += 1
            state.records.pending_arrivals += count
            hungry, state.wants_work = state.wants_work, False
        user = state.records.user
        if user is not None:
            for _ in range(count):
                user.record_arrival()
        if hungry and not wake and self._send_directly():
            return
        if wake or hungry:
            self._backend.wake()

    def _send_directly(self) -> bool:
        """A worker waits for work: send it from this thread, saving the round trip
        two thread hand-offs (here → supervisor → here) would cost. Only while the
        supervisor thread waits on the backend (the loop is free) and the backend
        allows it. False: the supervisor must be woken instead.
        """
        if not self._backend.send_while_waiting or not self._try_loop():
            return False
        try:
            if not any(w.ready and not w.in_flight for w in self._state.pool_workers()):
                return False  # workers still hold tasks: the supervisor batches what follows
            timed = self._dispatcher.dispatch_queued()
        finally:
            self._free_loop()
        return not timed  # a task's deadline: the supervisor must start watching it

    def _try_loop(self) -> bool:
        """Hold the loop here if nobody does: a caller's thread only ever tries it."""
        if not self._loop.acquire(blocking=False):
            return False
        self._loop_owner = threading.get_ident()
        return True

    def _free_loop(self) -> None:
        self._loop_owner = None
        self._loop.release()

    def collect(self, task: Task, timeout: float) -> None:
        """Before a caller's thread sleeps on ``task``'s future: when the loop is free
        and the task is a tiny one its worker holds alone, read the result from
        the worker here, sparing the hand-off from the supervisor thread (~1/3 of
        a round trip). The loop is held for at most :data:`COLLECT_SECONDS`;
        what cannot be collected so is left to the supervisor.
        """
        state = self._state
        if not self._backend.collect_while_waiting or task.timeout is not None \
                or state.lifecycle is not Lifecycle.RUNNING \
                or not state.durations.is_tiny(task.kind) or not self._try_loop():
            return
        try:
            worker = next((w for w in state.pool_workers()
                           if len(w.in_flight) == 1 and w.in_flight[0] is task), None)
            if worker is None:
                return
            events = self._backend.collect(worker.id, min(timeout, COLLECT_SECONDS))
            if not events:
                return
            self._handle_all(events)
            wake = self._dispatcher.dispatch_queued()  # a timed task: a deadline to watch
            # Anything but results (a worker leaving, gone): the loop's pass follows up.
            wake = wake or any(type(event) is not WorkerResults for event in events)
            self._recovery.resolve_settled()
        finally:
            self._free_loop()
        if wake:
            self._backend.wake()

    def on_cancelled(self, task: Task) -> None:
        """A queued task's future was cancelled: stop counting it as queued."""
        with self._state.lock:
            if task.state is TaskState.QUEUED and not task.cancel_counted:
                task.cancel_counted = True
                if not task.immediate:  # run_task's line is not counted in stats()
                    self._state.cancelled[task.priority] += 1
                task.release()

    def run_callback(self, fn: Callable[[Future[Any]], object], future: Future[Any]) -> None:
        """Run a done-callback: handed to the callback thread when this loop resolved
        the future, at once anywhere else (see procpool.callbacks)."""
        if self._loop_owner == threading.get_ident():
            self.callbacks.defer(fn, future)
        else:
            fn(future)

    def request_terminate(self, task: Task) -> None:
        """Terminate the worker running ``task`` (``cancel(fut, terminate=True)``)."""
        self._recovery.terminate_requests.append(task)
        self._backend.wake()

    def begin_stop(self) -> None:
        with self._state.lock:
            if self._state.lifecycle is Lifecycle.RUNNING:
                self._state.lifecycle = Lifecycle.STOPPING
        self._backend.wake()

    def begin_kill(self) -> None:
        """Refuse new work, cancel what is queued, terminate every worker now."""
        cancel_all(self._state.drop_queued(Lifecycle.KILLED), "killed")
        self._backend.wake()

    def cancel_queued(self) -> None:
        """Refuse new work and cancel what is queued; running tasks finish (Ctrl-C).

        The supervisor cancels them after its next dispatch: a task that a free
        worker can take at once is about to run, and runs (as the calls that
        ProcessPoolExecutor has already queued to its workers do).
        """
        with self._state.lock:
            if self._state.lifecycle is Lifecycle.RUNNING:
                self._state.lifecycle = Lifecycle.STOPPING
            self._cancel_requested = True
        self._backend.wake()

    def join(self, timeout: float | None = None) -> bool:
        """Wait for the supervisor thread; True when it has finished."""
        if threading.current_thread() is self._thread:
            return False  # cannot wait for ourselves
        if self._thread.ident is None:
            return True
        self._thread.join(timeout)
        return not self._thread.is_alive()

    @property
    def finished(self) -> bool:
        return self._thread.ident is not None and not self._thread.is_alive()

    @property
    def state(self) -> str:
        return self._state.lifecycle

    def stats(self) -> Stats:
        return self._state.stats()

    def metrics(self) -> Metrics:
        self._state.records.flush_arrivals(self._state.lock)
        records = self._state.records
        if records.user is not None:
            result: Metrics = records.user.metrics()
        else:
            result = records.metrics.metrics()
        return dataclasses.replace(result, cpu_share=records.cpu.value)

    def task_seconds(self, kind: Hashable) -> float | None:
        """Any thread (one dict read): what tasks of ``kind`` take, if any ran."""
        return self._state.durations.estimate(kind)

    def worker_handles(self) -> list[WorkerHandle]:
        with self._state.lock:
            return list(self._state.workers.values())

    def helper_processes(self) -> dict[str, int]:
        """``role -> pid`` of the backend's own processes (a fork server)."""
        return self._backend.helper_processes()

    def worker_figures(self) -> dict[int, dict[str, Any]]:
        """Figures of the workers on other machines, from the backend (see Backend)."""
        return self._backend.worker_figures()

    def set_dump_hook(self, hook: Callable[[], object]) -> None:
        """``hook()`` runs on the supervisor thread every ``stats_dump_interval``."""
        self._dump_hook = hook

    # == supervisor thread ===========================================================

    def _run(self) -> None:
        if not self._backend_claim.acquire(blocking=False):
            return  # the constructor was interrupted before this ran, and closed the backend
        state, fleet, recovery = self._state, self._fleet, self._recovery
        self._hold_loop()
        try:
            fleet.start_initial()
            while not self._finished():
                self._handle_all(self._wait())
                now = monotonic()
                state.records.flush_arrivals(state.lock)
                fleet.enforce_hook_timeouts(now)
                if state.lifecycle is Lifecycle.KILLED:
                    fleet.kill_all()
                    continue
                if not state.started.is_set():
                    continue  # the constructor still waits for the first workers
                recovery.serve_terminate_requests()
                recovery.check_timeouts(now)
                self._bursting.tick(now)
                fleet.replace_missing(now)
                self._dispatcher.dispatch()
                if self._cancel_requested:
                    self._cancel_requested = False
                    cancel_all(state.drop_queued(Lifecycle.STOPPING), "stopped")
                fleet.leave_when_drained()
                self._dump(now)
        except BaseException as exc:  # a bug here must not leave callers waiting forever
            logger.opt(exception=exc).error("procpool supervisor failed; killing the pool")
            self._crash_cleanup(exc)
        finally:
            self._recovery.resolve_settled()
            self._backend.close()
            if self._dump_hook is not None:
                self._dump(None)
            state.started.set()
            self.callbacks.close()
            _live_supervisors.discard(self)
            # The loop stays held for good: no caller sends to the closed backend.

    def _hold_loop(self) -> None:
        self._loop.acquire()  # a caller holds it only for one dispatch pass
        self._loop_owner = threading.get_ident()

    def _wait(self) -> list[Event]:
        """Wait for the backend with the loop free, so that callers may send meanwhile."""
        timeout = self._next_timeout()
        self._recovery.resolve_settled()
        self._free_loop()
        try:
            return self._backend.wait(timeout)
        finally:
            self._hold_loop()

    def _finished(self) -> bool:
        state = self._state
        if state.lifecycle is Lifecycle.RUNNING or state.workers:
            return False
        return state.lifecycle is Lifecycle.KILLED or not state.has_work()

    def _next_timeout(self) -> float | None:
        if self._recovery.terminate_requests:
            return 0.0
        now = monotonic()
        deadlines = [self._bursting.deadline, self._fleet.replacement_deadline(now)]
        if self._dump_hook is not None:
            deadlines.append(self._next_dump)
        for worker in self._state.workers.values():
            if worker.in_flight and worker.in_flight[0].timeout is not None:
                deadlines.append(self._recovery.timeout_deadline(worker, now))
            deadlines.append(self._fleet.hook_deadline(worker))
        due = [d for d in deadlines if d is not None]
        return max(0.0, min(due) - now) if due else None

    def _handle_all(self, events: list[Event]) -> None:
        """Handle what the backend reported. A function of its own, so that no event
        (a result, a big one maybe) stays referenced by the loop's frame after it."""
        for event in events:
            self._handle(event)

    def _handle(self, event: Event) -> None:
        worker = self._state.workers.get(event.worker_id)
        if worker is None:
            return
        fleet = self._fleet
        if isinstance(event, WorkerResults):
            self._recovery.on_results(worker, event.outcomes)
            fleet.settle(worker)
            self._serve_or_retire(worker)
        elif isinstance(event, WorkerStarted):
            fleet.on_started(worker, event.pid)
        elif isinstance(event, WorkerReady):
            fleet.on_ready(worker, event.pid)
            self._serve_or_retire(worker)
        elif isinstance(event, WorkerLeaving):
            self._recovery.on_leaving(worker, event.reason)
            fleet.settle(worker)
        elif isinstance(event, WorkerCreateFailed):
            fleet.on_create_failed(worker, event.message, event.traceback_text)
        elif isinstance(event, WorkerGone):
            if worker.state is WorkerState.STARTING:
                fleet.on_create_failed(worker, "the process exited during on_create"
                                       f" ({describe_exit(event.exitcode)})", "")
            self._recovery.on_gone(worker, event)
            fleet.on_gone(worker)

    def _serve_or_retire(self, worker: WorkerHandle) -> None:
        """An idle temporary worker takes the next run_task call, or leaves."""
        idle_temporary = worker.role is WorkerRole.TEMPORARY and worker.state is WorkerState.IDLE
        if idle_temporary and not self._dispatcher.serve_immediate(worker):
            self._fleet.retire(worker)

    def _crash_cleanup(self, exc: BaseException) -> None:
        state = self._state
        tasks = state.drop_queued(Lifecycle.KILLED)
        tasks += [t for w in state.workers.values() for t in w.in_flight]
        for task in tasks:
            error = ProcPoolError(f"the procpool supervisor failed: {exc!r}")
            error.__cause__ = exc
            task.fail(error)
        if state.startup_error is None and not state.started.is_set():
            state.startup_error = ResourceCreationError(
                f"the procpool supervisor failed: {exc!r}")

    def _dump(self, now: float | None) -> None:
        hook = self._dump_hook
        if hook is None or (now is not None and now < self._next_dump):
            return
        self._next_dump = (now or monotonic()) + self.config.stats_dump_interval
        try:
            hook()
        except Exception as exc:
            logger.warning("stats dump failed: {!r}", exc)


#: Longest a caller's thread holds the loop reading its own result (Supervisor.collect):
#: a tiny task's round trip, with room; the supervisor waits for it meanwhile.
COLLECT_SECONDS = 0.002

#: Supervisors not yet finished; stopped at interpreter exit.
_live_supervisors: weakref.WeakSet[Supervisor] = weakref.WeakSet()

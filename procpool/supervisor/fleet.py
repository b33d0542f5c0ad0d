"""The fleet: the worker table's life. Starts, readiness, failed creates with backoff,
replacement, hook timeouts, retirement and the final leave. Supervisor thread only.

A worker's record moves STARTING → IDLE ⇄ BUSY → LEAVING → GONE
(:class:`~procpool.workers.WorkerHandle` checks each move). The fleet keeps
``worker_count`` base and ``resource_pool_size`` reserved workers alive,
backs off while ``on_create`` keeps failing (:mod:`procpool.policy.restarts`),
and kills a worker stuck in ``on_create`` or ``on_destroy`` past
``create_timeout`` / ``destroy_timeout``.
"""

from __future__ import annotations

from time import monotonic

from procpool._log import logger
from procpool.backends.base import Backend
from procpool.errors import ResourceCreationError, ShutdownError
from procpool.policy.restarts import RestartBreaker
from procpool.supervisor.state import (
    Lifecycle,
    PoolState,
    cancel_all,
    copy_creation_error,
)
from procpool.workers import WorkerHandle, WorkerRole, WorkerState

#: When a stop finds a worker still starting, how long it may still report
#: ready (and so run on_destroy for what on_create built) before it is
#: terminated. Covers a ready message already on its way; longer waits for
#: slow hooks that were about to finish, shorter stops sooner.
ABANDON_GRACE_SECONDS = 0.05

#: How long a worker whose on_create failed may take to exit by itself (flushing what
#: it wrote, such as a log record on a multiprocessing queue) before it is killed.
#: Longer tolerates a slow flush; shorter fails the constructor sooner.
FAILED_EXIT_SECONDS = 2.0

#: When a first worker's on_create fails (the constructor raises), how long the other
#: workers still starting may take to fail or finish by themselves before they are
#: killed: one killed while writing to a multiprocessing queue would leave the queue's
#: lock held, and the failing worker's last records would never be flushed. Longer is
#: safer for slow hooks; shorter raises sooner.
FAILED_START_GRACE_SECONDS = 0.5

#: Worker states with no hook running, so no hook deadline.
_WORKING = (WorkerState.IDLE, WorkerState.BUSY)


class Fleet:
    """Owns every change of a worker's state but those a result or a death makes."""

    def __init__(self, state: PoolState, backend: Backend, breaker: RestartBreaker) -> None:
        self._state = state
        self._backend = backend
        self.breaker = breaker
        self.start_seconds: float | None = None  # EWMA of process start + on_create
        self._next_worker_id = 1

    # -- starting -----------------------------------------------------------------

    def start_initial(self) -> None:
        """Start the first workers; :meth:`check_started` sets ``started`` once all are ready."""
        config = self._state.config
        for _ in range(config.worker_count):
            self.start_worker(WorkerRole.BASE)
        for _ in range(config.resource_pool_size):
            self.start_worker(WorkerRole.RESERVED)
        self.check_started()

    def start_worker(self, role: WorkerRole) -> WorkerHandle:
        worker = WorkerHandle(self._next_worker_id, role)
        self._next_worker_id += 1
        with self._state.lock:
            self._state.add_worker(worker)
        self._backend.start_worker(worker.id)
        return worker

    def on_started(self, worker: WorkerHandle, pid: int) -> None:
        """Its process exists and runs on_create: ``create_timeout`` counts from now."""
        worker.pid = pid
        worker.started_at = monotonic()

    def on_ready(self, worker: WorkerHandle, pid: int) -> None:
        worker.pid = pid
        worker.ready_at = monotonic()
        elapsed = worker.ready_at - worker.created_at
        self.start_seconds = (
            elapsed if self.start_seconds is None else 0.7 * self.start_seconds + 0.3 * elapsed
        )
        self.breaker.success()
        if worker.state is WorkerState.STARTING:
            worker.move(WorkerState.IDLE)
        elif worker.state is WorkerState.LEAVING:  # a stop asked it to leave while starting:
            worker.drained_at = worker.ready_at  # it reads that now and runs on_destroy
        logger.debug("worker {} ({}) pid {} ready in {:.3f} s", worker.id, worker.role.value,
                     pid, elapsed)
        self.check_started()

    def check_started(self) -> None:
        """Set ``started`` (the constructor returns) once no first worker is starting."""
        state = self._state
        if state.started.is_set() or state.lifecycle is not Lifecycle.RUNNING:
            return
        if any(w.state is WorkerState.STARTING for w in state.workers.values()):
            return
        config = state.config
        logger.info("procpool started {} base and {} reserved workers ({})",
                    config.worker_count, config.resource_pool_size,
                    config.effective_start_method)
        state.started.set()

    def on_create_failed(self, worker: WorkerHandle, message: str, traceback_text: str) -> None:
        state = self._state
        error = ResourceCreationError(
            f"worker {worker.id} ({worker.role.value}) could not create its resource: {message}",
            traceback_text,
        )
        worker.move(WorkerState.LEAVING)
        if not worker.killed:  # it exits by itself; killed only if it does not
            worker.abandon_at = monotonic() + FAILED_EXIT_SECONDS
        if not state.started.is_set():  # the constructor raises it, leaving no process
            state.startup_error = state.startup_error or error  # the first one says why
            grace = monotonic() + FAILED_START_GRACE_SECONDS
            for other in state.workers.values():
                if other.state is WorkerState.STARTING and other.abandon_at is None:
                    other.abandon_at = grace
            cancel_all(state.drop_queued(Lifecycle.KILLED), "killed")
            return
        now = monotonic()
        self.breaker.failure(now)
        logger.warning("{}", message)
        if worker.role is WorkerRole.TEMPORARY:
            with state.lock:
                task = state.pop_immediate()
            if task is not None:  # the run_task it was started for
                task.fail(copy_creation_error(error))
        if self.breaker.tripped(now) and not any(w.ready for w in state.pool_workers()):
            logger.error("on_create keeps failing; failing the queued tasks")
            state.fail_queued(error)

    # -- keeping the counts whole ----------------------------------------------------

    def missing_workers(self) -> list[WorkerRole]:
        state = self._state
        if state.lifecycle is Lifecycle.KILLED or not state.started.is_set():
            return []
        if state.lifecycle is Lifecycle.STOPPING and not state.has_work():
            return []
        base = reserved = 0  # one pass: this runs twice per loop pass
        for worker in state.workers.values():
            if worker.live:
                role = worker.role
                if role is WorkerRole.BASE:
                    base += 1
                elif role is WorkerRole.RESERVED:
                    reserved += 1
        config = state.config
        base, reserved = config.worker_count - base, config.resource_pool_size - reserved
        if base <= 0 and reserved <= 0:
            return []  # (nearly every pass)
        return [WorkerRole.BASE] * base + [WorkerRole.RESERVED] * reserved

    def backing_off(self, now: float) -> bool:
        """True while on_create keeps failing and no new start may be tried yet.

        After a failure, starts wait out the breaker's backoff and go one at a
        time; replacements and burst starts alike, so neither can spin.
        """
        if now < self.breaker.next_attempt(now):
            return True
        return self.breaker.failing and any(
            w.state is WorkerState.STARTING for w in self._state.workers.values()
        )

    def replace_missing(self, now: float) -> None:
        """Keep base and reserved counts whole; back off while on_create keeps failing."""
        missing = self.missing_workers()
        if not missing or self.backing_off(now):
            return
        if self.breaker.failing:
            missing = missing[:1]  # after failures, try one at a time
        for role in missing:
            logger.info("starting a replacement {} worker", role.value)
            self.start_worker(role)

    def replacement_deadline(self, now: float) -> float | None:
        return self.breaker.next_attempt(now) if self.missing_workers() else None

    # -- hooks that hang ------------------------------------------------------------

    def hook_deadline(self, worker: WorkerHandle) -> float | None:
        """When ``worker`` overruns ``on_create`` or ``on_destroy``; None: no limit applies."""
        if worker.killed or (worker.state in _WORKING and worker.abandon_at is None):
            return None  # (nearly every worker, nearly every pass)
        config = self._state.config
        deadlines = []
        started, create = worker.started_at, config.create_timeout
        if worker.state is WorkerState.STARTING and started is not None and create is not None:
            deadlines.append(started + create)
        drained, destroy = worker.drained_at, config.destroy_timeout
        if worker.state is WorkerState.LEAVING and drained is not None and destroy is not None:
            deadlines.append(drained + destroy)
        if worker.ready_at is None and worker.abandon_at is not None:
            deadlines.append(worker.abandon_at)  # see leave_when_drained, kill_all
        return min(deadlines) if deadlines else None

    def enforce_hook_timeouts(self, now: float) -> None:
        """Kill workers stuck in ``on_create`` or ``on_destroy`` past their timeout."""
        config = self._state.config
        for worker in list(self._state.workers.values()):
            deadline = self.hook_deadline(worker)
            if deadline is None or now < deadline:
                continue
            worker.killed = True
            if worker.ready_at is None and worker.abandon_at is not None \
                    and now >= worker.abandon_at:
                logger.debug("worker {} did not leave while starting; terminating it",
                             worker.id)
                worker.move(WorkerState.LEAVING)  # not a failed create: nobody waits for it
            elif worker.state is WorkerState.STARTING:
                self.on_create_failed(
                    worker,
                    f"on_create timed out: it did not return within create_timeout="
                    f"{config.create_timeout} s, so its worker (pid {worker.pid}) was killed",
                    "",
                )
            else:
                logger.warning("worker {} pid {}: on_destroy did not return within"
                               " destroy_timeout={} s; killing it", worker.id, worker.pid,
                               config.destroy_timeout)
            self._backend.terminate(worker.id, grace=0)

    # -- leaving ----------------------------------------------------------------------

    def settle(self, worker: WorkerHandle) -> None:
        """After results or a leave: a busy worker with nothing left is idle; a leaving one
        with nothing left is in on_destroy now (``destroy_timeout`` counts from here)."""
        if worker.in_flight:
            return
        if worker.state is WorkerState.BUSY:
            worker.move(WorkerState.IDLE)
        elif (worker.state is WorkerState.LEAVING and worker.drained_at is None
              and worker.ready_at is not None):  # one still starting has no on_destroy yet
            worker.drained_at = monotonic()

    def retire(self, worker: WorkerHandle) -> None:
        """Send the graceful-exit sentinel; the worker finishes what it has first."""
        if worker.state is WorkerState.LEAVING:
            return
        worker.move(WorkerState.LEAVING)
        self.settle(worker)
        self._backend.retire(worker.id)

    def on_gone(self, worker: WorkerHandle) -> None:
        worker.move(WorkerState.GONE)
        with self._state.lock:
            self._state.remove_worker(worker.id)

    def leave_when_drained(self) -> None:
        """Once stopping and nothing is left to run, every worker leaves.

        Ready ones gracefully (``on_destroy``). One still inside ``on_create``
        builds nothing a task needs: it is told to leave too, and terminated
        unless it reports ready within :data:`ABANDON_GRACE_SECONDS` (then it
        runs ``on_destroy`` for what it built); ``stop()`` never waits for a
        hook that hangs.
        """
        state = self._state
        if state.lifecycle is not Lifecycle.STOPPING or state.has_work():
            return
        if any(w.in_flight for w in state.workers.values()):
            return
        for worker in list(state.workers.values()):
            if worker.state is WorkerState.STARTING:
                worker.abandon_at = monotonic() + ABANDON_GRACE_SECONDS
            if worker.state is not WorkerState.LEAVING:
                self.retire(worker)

    def kill_all(self) -> None:
        """kill(): fail what runs, terminate every worker at once (SIGKILL), but one
        still starting that was given a deadline (its on_create failed: it is exiting;
        another's failed: see FAILED_START_GRACE_SECONDS). The deadline kills it."""
        for worker in list(self._state.workers.values()):
            if worker.ready_at is None and worker.abandon_at is not None:
                continue
            for task in worker.in_flight:
                task.fail(ShutdownError(f"{task.describe()} was running when the manager was"
                                   f" killed; its worker (pid {worker.pid}) was terminated"))
            worker.in_flight.clear()
            worker.move(WorkerState.LEAVING)
            if not worker.killed:
                worker.killed = True
                self._backend.terminate(worker.id, grace=0)

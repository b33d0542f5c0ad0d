"""The burst loop: feed the burst controller a snapshot every ``burst_interval`` and
carry out its decision through the fleet. Supervisor thread only.

The decision itself is pure policy (:mod:`procpool.policy.burst`); this room
only measures what the controller needs and applies the start and retire
counts within ``max_worker_count``.
"""

from __future__ import annotations

import math
import os

from procpool._log import logger
from procpool.policy.burst import BurstController, BurstSnapshot
from procpool.supervisor.fleet import Fleet
from procpool.supervisor.state import Lifecycle, PoolState
from procpool.workers import WorkerRole, WorkerState


class BurstLoop:
    """Owns the controller and the time of the next tick."""

    def __init__(self, state: PoolState, fleet: Fleet) -> None:
        self._state = state
        self._fleet = fleet
        config = state.config
        self._interval = config.burst_interval or 0.0
        self.controller = BurstController(
            worker_count=config.worker_count,
            max_worker_count=config.effective_max_workers,
            interval=self._interval,
            cooldown_ticks=cooldown_ticks(config.burst_cooldown, self._interval, None),
        )
        #: None until the pool is up: the first decision comes a whole interval after
        #: that, not after the constructor began (a slow start, forks and on_create,
        #: would leave it no time to see a task finish, and it would size blind)
        self.next_tick: float | None = None
        self._cores = usable_cores()
        self._held = ""  # why the last decision refused a start ("cpu", "no-gain")

    @property
    def deadline(self) -> float | None:
        """When the next tick is due, while the loop can still act."""
        running = self._state.lifecycle is Lifecycle.RUNNING
        return self.next_tick if self.controller.enabled and running else None

    def tick(self, now: float) -> None:
        """Decide if a tick is due; the supervisor calls it on every pass once the pool is up."""
        if self.next_tick is None:
            self.next_tick = now + self._interval
        if not self.controller.enabled or now < self.next_tick:
            return
        state, fleet, interval = self._state, self._fleet, self._interval
        # After a late tick (start-up, a long event burst) the next one is a whole interval
        # away, never at once: the controller's per-tick limits assume ticks that far apart.
        self.next_tick += interval
        if self.next_tick <= now:
            self.next_tick = now + interval
        if state.lifecycle is not Lifecycle.RUNNING and not state.queues:
            return
        pool = state.pool_workers()
        idle_burst = sorted(
            (w for w in pool if w.role is WorkerRole.BURST and w.state is WorkerState.IDLE),
            key=lambda w: w.idle_since,
        )
        metrics = state.records.metrics.metrics()
        with state.lock:
            queued = state.queued_count()
        snapshot = BurstSnapshot(
            now=now,
            arrival_rate=metrics.task_arrival_rate,
            completion_rate=metrics.task_completion_rate,
            queued_tasks=queued,
            base_workers=state.config.worker_count,
            burst_workers=sum(1 for w in pool if w.role is WorkerRole.BURST and w.live),
            starting_workers=sum(1 for w in pool if w.state is WorkerState.STARTING),
            busy_workers=sum(1 for w in pool if w.state is WorkerState.BUSY),
            idle_burst_workers=tuple(w.id for w in idle_burst),
            mean_task_seconds=state.records.metrics.recent_mean_execution(),
            worker_start_seconds=fleet.start_seconds,
            arrived_total=state.records.arrived_total,
            ended_total=state.records.ended_total,
            executed_seconds_total=state.records.executed_total,
            cpu_share=state.records.cpu.value,
            usable_cores=self._cores,
        )
        self.controller.cooldown_ticks = cooldown_ticks(
            state.config.burst_cooldown, interval, fleet.start_seconds
        )
        decision = self.controller.decide(snapshot)
        if decision.held != self._held:  # say why once, not at every tick
            self._held = decision.held
            if decision.held:
                logger.info("burst: held ({})", decision.reason)
        # Workers still leaving (inside on_destroy) hold a process and a resource too:
        # the total of processes never passes max_worker_count.
        room = state.config.effective_max_workers - len(pool)
        starts = min(decision.start, max(0, room))
        if starts and not fleet.backing_off(now):
            logger.info("burst: starting {} workers ({})", starts, decision.reason)
            for _ in range(1 if fleet.breaker.failing else starts):
                fleet.start_worker(WorkerRole.BURST)
        if decision.retire:
            logger.info("burst: retiring {} idle workers ({})", len(decision.retire),
                        decision.reason)
            for worker_id in decision.retire:
                worker = state.workers.get(worker_id)
                if worker is not None and worker.state is WorkerState.IDLE:
                    fleet.retire(worker)


def usable_cores() -> int:
    """Cores this process (and so its workers) may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not on Linux
        return os.cpu_count() or 1


def cooldown_ticks(cooldown: float, interval: float, start_seconds: float | None) -> int:
    """``Config.burst_cooldown`` in burst ticks, never shorter than one worker start-up.

    Ski rental: an idle worker kept as long as it took to start one never costs more
    than twice the best choice made in hindsight, whatever the next wave does. At least
    one tick, however short the cooldown; 1 when bursting is off (the controller holds).
    """
    if not interval:
        return 1
    seconds = max(cooldown, start_seconds or 0.0)
    return max(1, math.ceil(seconds / interval - 1e-9))

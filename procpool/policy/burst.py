"""When to start extra ("burst") workers, and when to let idle ones go.

Like a supermarket opening checkouts: open more as soon as the queue would
take too long to clear, close them only after the shop has been quiet for a
while, and never close one while it serves a customer. The burst loop calls
:meth:`BurstController.decide` every ``burst_interval`` seconds with a
:class:`BurstSnapshot` and carries out the :class:`BurstDecision` it returns.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

# Seconds queued work may wait before the pool grows. Shorter answers smaller backlogs
# (more process starts, more memory); longer tolerates more queueing (fewer starts).
DEFAULT_TARGET_DRAIN_SECONDS = 2.0
# Backlog-free ticks before idle burst workers are retired (1 s at the default 0.2 s
# interval; the supervisor derives it from Config.burst_cooldown, whose comment says why).
# More ticks keep warm workers through longer lulls, at the cost of idle memory; fewer
# give memory back sooner but may kill workers the next wave needs again.
DEFAULT_COOLDOWN_TICKS = 5
_EPSILON = 1e-9  # so that 3.0000000001 workers does not round up to 4


@dataclass(frozen=True)
class BurstSnapshot:
    """What the burst loop sees at one tick. Times in seconds, rates in tasks/s."""

    now: float  # monotonic seconds
    arrival_rate: float  # tasks/s over the metrics window
    completion_rate: float  # tasks/s over the metrics window
    queued_tasks: int  # normal + priority tasks waiting (not yet sent to any worker)
    base_workers: int  # configured base count (worker_count)
    burst_workers: int  # live burst workers, INCLUDING ones still starting
    starting_workers: int  # workers (base or burst) still inside on_create
    busy_workers: int  # workers running a task
    idle_burst_workers: tuple[int, ...]  # ids of ready, idle burst workers, longest idle first
    mean_task_seconds: float | None  # recent mean execution time, None if unknown yet
    worker_start_seconds: float | None  # recent start-up time (spawn + on_create), None if unknown


@dataclass(frozen=True)
class BurstDecision:
    """What to do at this tick; the default is to hold."""

    start: int = 0  # burst workers to start now
    retire: tuple[int, ...] = ()  # idle burst worker ids to send the exit sentinel
    reason: str = ""  # human-readable numbers that caused it (for the log line)


class BurstController:
    """Sizes the burst workers from the backlog, like a shop opening checkouts.

    Pure and deterministic; times in seconds, rates in tasks/s.

    Growing: only a backlog starts workers. When the queued tasks, plus what
    arrivals beyond completions add within the horizon, would take the
    current workers longer than ``target_drain_seconds`` to clear, start
    enough workers to clear them within the horizon: ``target_drain_seconds``,
    or the worker start-up time if longer, since no new worker helps sooner.
    A smaller backlog (a pool at capacity) changes nothing. Workers still
    starting count as capacity and toward ``max_worker_count``.

    Shrinking: idle burst workers are retired only after ``cooldown_ticks``
    consecutive ticks without a backlog; any tick with a backlog restarts
    the count. Then at most half of the idle burst workers go per tick
    (at least one), never below what the arrival rate keeps busy, never a
    base worker or a busy one.

    Defaults: ``target_drain_seconds`` 2.0 and ``cooldown_ticks`` 5; if in
    doubt, use them. One controller per pool, called from one thread: it
    remembers the quiet ticks and which workers it has already retired (those
    may stay listed as idle until they exit; they are not retired twice).
    """

    def __init__(
        self,
        *,
        worker_count: int,
        max_worker_count: int,
        interval: float | None,
        target_drain_seconds: float = DEFAULT_TARGET_DRAIN_SECONDS,
        cooldown_ticks: int = DEFAULT_COOLDOWN_TICKS,
    ) -> None:
        if worker_count < 0:
            raise ValueError(f"worker_count must be >= 0, got {worker_count!r}")
        if max_worker_count < worker_count:
            raise ValueError(
                f"max_worker_count ({max_worker_count}) must be >= worker_count ({worker_count})"
            )
        if interval is not None and not interval >= 0:
            raise ValueError(f"interval must be None or >= 0 seconds, got {interval!r}")
        if not target_drain_seconds > 0:
            raise ValueError(f"target_drain_seconds must be > 0, got {target_drain_seconds!r}")
        if cooldown_ticks < 1:
            raise ValueError(f"cooldown_ticks must be >= 1, got {cooldown_ticks!r}")
        self.worker_count = worker_count
        self.max_worker_count = max_worker_count
        self.interval = interval
        self.target_drain_seconds = target_drain_seconds
        self.cooldown_ticks = cooldown_ticks
        self.enabled: bool = bool(interval) and max_worker_count > worker_count
        self._quiet_ticks = 0  # consecutive ticks without a backlog
        self._retiring: set[int] = set()  # sent the sentinel, still listed as idle

    def decide(self, snap: BurstSnapshot) -> BurstDecision:
        """Start workers, retire idle burst workers, or hold (at most one of them)."""
        if not self.enabled:
            return BurstDecision(reason="hold: bursting disabled")
        # A retired worker that is no longer listed has exited: forget it.
        self._retiring &= set(snap.idle_burst_workers)
        if snap.queued_tasks > 0:
            self._quiet_ticks = 0
            return self._grow(snap)
        self._quiet_ticks += 1
        return self._shrink(snap)

    def _grow(self, s: BurstSnapshot) -> BurstDecision:
        total = s.base_workers + s.burst_workers  # processes that exist, starting ones too
        room = self.max_worker_count - total
        workers = total - len(self._retiring)  # processes that will still take tasks
        free = max(workers - s.busy_workers, 0)  # idle or starting: each takes a queued task
        growth = max(s.arrival_rate - s.completion_rate, 0.0)  # backlog growth, tasks/s
        lead = s.worker_start_seconds or 0.0
        # Tasks waiting when a worker started now is ready, beyond those free workers take:
        # a worker with no task to take is wasted, however the rates look.
        useful = math.ceil(s.queued_tasks + growth * lead - _EPSILON) - free
        facts = (
            f"queued={s.queued_tasks} arrival={s.arrival_rate:.2f}/s "
            f"completion={s.completion_rate:.2f}/s workers={workers} free={free}"
        )
        if useful <= 0:
            return BurstDecision(reason=f"hold: free workers cover the backlog; {facts}")
        if room <= 0:
            return BurstDecision(reason=f"hold: at max_worker_count; {facts}")
        mean = s.mean_task_seconds
        if mean is None:
            # No task has finished yet, so the completion rate says nothing: grow by the
            # tasks nobody can take now, at most doubling the base workers per tick.
            want = min(s.queued_tasks - free, max(s.base_workers, 1))
            why = f"mean task time unknown, untaken={s.queued_tasks - free}"
        else:
            horizon = max(self.target_drain_seconds, lead)
            backlog = s.queued_tasks + growth * horizon  # tasks queued by the horizon
            wait = backlog * mean / workers if workers > 0 else math.inf
            facts += f" mean_task={mean:.3f}s wait={wait:.2f}s"
            if wait <= self.target_drain_seconds:
                return BurstDecision(
                    reason=f"hold: wait within target {self.target_drain_seconds:g}s; {facts}"
                )
            # Workers, beyond the busy ones, that clear the backlog within the horizon.
            needed = max(math.ceil(backlog * mean / horizon - _EPSILON), 1)
            want = min(needed - free, useful)
            why = f"needed={needed} over {horizon:.2f}s, useful={useful}"
        start = min(want, room)
        if start <= 0:
            return BurstDecision(reason=f"hold: starting workers cover the need ({why}); {facts}")
        return BurstDecision(start=start, reason=f"start {start}: {why}, room={room}; {facts}")

    def _shrink(self, s: BurstSnapshot) -> BurstDecision:
        idle = [w for w in s.idle_burst_workers if w not in self._retiring]
        facts = (
            f"quiet={self._quiet_ticks}/{self.cooldown_ticks} ticks idle_burst={len(idle)} "
            f"arrival={s.arrival_rate:.2f}/s completion={s.completion_rate:.2f}/s"
        )
        if not idle:
            return BurstDecision(reason=f"hold: no idle burst worker; {facts}")
        if self._quiet_ticks < self.cooldown_ticks:
            return BurstDecision(reason=f"hold: cooling down; {facts}")
        workers = s.base_workers + s.burst_workers - len(self._retiring)
        mean = s.mean_task_seconds
        # Little's law: arrivals x task time = workers kept busy on average.
        demand = math.ceil(s.arrival_rate * mean - _EPSILON) if mean is not None else 0
        keep = max(s.base_workers, s.busy_workers, demand)
        count = min((len(idle) + 1) // 2, workers - keep)
        if count <= 0:
            return BurstDecision(
                reason=f"hold: keep {keep} workers (arrivals x task time={demand}); {facts}"
            )
        retire = tuple(idle[:count])
        self._retiring.update(retire)
        return BurstDecision(
            retire=retire, reason=f"retire {count}: keep={keep} workers={workers}; {facts}"
        )

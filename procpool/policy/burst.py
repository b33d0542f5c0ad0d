"""When to start extra ("burst") workers, and when to let idle ones go.

Like a supermarket opening tills: count the shoppers arriving per minute and how
long each spends at a till (arrivals x time = tills busy on average, Little's
law), open that many plus some for the queue already there, close a till only
when no count over the last minute asked for it and never while it serves
someone, and stop opening tills when the tills are not what holds the queue up:
if every till shares one card reader (the CPU), a third till serves nobody
sooner. The burst loop calls :meth:`BurstController.decide` every
``burst_interval`` seconds with a :class:`BurstSnapshot` and carries out the
:class:`BurstDecision` it returns.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

from procpool.policy.load_history import LoadHistory

# Busy share of each worker the sizing aims at (arrivals x task time / workers). Lower keeps
# spare workers, so fewer tasks wait when arrivals bunch up, at 1/target times the workers;
# 1.0 sizes the pool to the load itself, so a load at a whole number of workers queues
# (tasks of varying length at 100% utilisation) and the pool keeps growing and shrinking.
DEFAULT_TARGET_UTILISATION = 0.9
# Seconds the controller gives extra workers to clear the tasks already queued. Shorter
# clears a backlog sooner with more workers at once, but the queues an ordinary busy pool
# forms for a moment then start workers too; longer starts fewer and lets tasks wait.
DEFAULT_BACKLOG_SECONDS = 0.5
# Relative band around the current size inside which the controller changes nothing (the
# Kubernetes HPA uses 0.1). Wider ignores more noise in the rates and task times (fewer
# scale events) but reacts only to larger changes of load, and keeps up to that share of
# spare workers while a load falls; 0 follows every wobble. At a steady 20 tasks/s of
# 100-400 ms the measured need wobbles by about 13% from tick to tick (the 0.4 s rate
# counts 8 arrivals, give or take one; the task times are uniform): 0.1 lets that wobble
# alone move a pool of 6 to 5 and back, 0.2 does not.
DEFAULT_TOLERANCE = 0.2
# Seconds of arrivals behind the rate the controller sizes from (at least one tick). Shorter
# sees a rise sooner but counts fewer tasks, so the rate is noisier; 0.4 s is two default
# ticks, so a rise shows half at the first tick after it and fully at the second.
DEFAULT_RATE_WINDOW = 0.4
# Seconds ahead a rising arrival rate is projected (a falling one is not: the cooldown
# covers falls). Longer meets a rising load sooner but overshoots when the rise stops and
# turns noise into starts; 0 sizes from the rate as measured.
DEFAULT_LOOKAHEAD = 0.0
# Ticks over which the largest recommended size is kept before idle burst workers leave
# (1 s at the default 0.2 s interval; the supervisor derives it from Config.burst_cooldown,
# whose comment says why). More keeps warm workers through longer lulls, at the cost of idle
# memory; fewer give memory back sooner but may stop workers the next wave needs again.
DEFAULT_COOLDOWN_TICKS = 5
# How far busy workers may ask for more CPU than the usable cores, as a share of the cores.
# 0.1 gives CPU-bound tasks (cpu share near 1) exactly the cores; larger lets tasks that
# use a little less than a core each overlap more, slowing each other; 0 never oversubscribes.
DEFAULT_CPU_OVERCOMMIT = 0.1
# Share of the linear gain a scale-up must show for the pool to keep growing (4 to 6 workers
# should complete 50% more; 0.25 asks for 12.5%). Higher holds sooner when workers slow each
# other, but noise in the task times then also holds pools that did gain.
DEFAULT_MIN_GAIN = 0.25
# Smallest scale-up the gain check judges, as a share of the ready workers before it (4 to 5
# is 0.25). Task times over a second are noisy: a smaller step's gain could not be told from
# noise, so judging it would hold pools that did gain. Smaller judges finer steps.
MEASURABLE_STEP = 0.25
# Arrival growth, relative to the rate when a hold began, that ends the hold: new demand
# deserves a new try. Lower retries on smaller rises, each try that fails leaving one more
# busy worker behind.
HOLD_RELEASE_GROWTH = 0.5
_EPSILON = 1e-9  # so that 3.0000000001 workers does not round up to 4


@dataclass(frozen=True)
class BurstSnapshot:
    """What the burst loop sees at one tick. Times in seconds, rates in tasks/s.

    The fields after ``worker_start_seconds`` have defaults so that an older
    supervisor still runs; without the totals the controller sizes from the
    metrics-window rates and judges no scale-up, without ``cpu_share`` and
    ``usable_cores`` it applies no CPU cap.
    """

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
    # Tasks queued since the pool started: a counter that never falls. The controller takes
    # the short-window arrival rate from its differences between ticks. None: unknown.
    arrived_total: int | None = None
    # Tasks that ended (completed or failed) since the pool started; same rules.
    ended_total: int | None = None
    # Execution (wall) seconds of the tasks counted in ended_total, summed; never falls.
    executed_seconds_total: float | None = None
    # Recent tasks' CPU seconds / wall seconds (time.process_time() and the monotonic clock
    # around each task, summed over recent tasks). ~1 for CPU-bound work, ~0 for tasks that
    # sleep or wait on I/O, above 1 for tasks that run several threads. None: unknown.
    cpu_share: float | None = None
    # Cores the workers may run on (len(os.sched_getaffinity(0))). None: unknown.
    usable_cores: int | None = None


@dataclass(frozen=True)
class BurstDecision:
    """What to do at this tick; the default is to hold."""

    start: int = 0  # burst workers to start now
    retire: tuple[int, ...] = ()  # idle burst worker ids to send the exit sentinel
    reason: str = ""  # human-readable numbers that caused it (for the log line)
    # Why a wanted start was refused: "cpu" (the tasks already fill the cores) or "no-gain"
    # (the last scale-up did not raise what the pool completes); "" when nothing was refused.
    held: str = ""


@dataclass
class _Probe:
    """A scale-up waiting to be judged by what it did to the task times."""

    workers: int  # ready workers before it
    mean: float  # mean task seconds over the judging window before it
    sizing_mean: float  # the task time it was sized with: sizing does not follow a rise
    size: int  # the largest size it asked for
    judge_at: float  # monotonic seconds; pushed back by every start while it is open


@dataclass
class _Hold:
    """Starts refused since a scale-up did not raise what the pool completes."""

    cap: int  # workers the pool may have while held
    workers: int  # ready workers before the scale-up judged
    mean: float  # mean task seconds before it
    arrival_rate: float  # tasks/s when the hold began
    why: str


class BurstController:
    """Sizes the pool from demand and backlog, like a shop opening tills.

    Pure and deterministic: numbers and a clock in, a decision out; times in
    seconds, rates in tasks/s. One controller per pool, called from one thread.

    Sizing, each tick: the arrival rate over the last ``rate_window`` seconds
    (longer if it counted fewer than 4 arrivals; from the snapshot's
    ``arrived_total``, or its metrics-window rate without it) times the mean
    time of the tasks that ended over the last 2 s (from the totals; the
    snapshot's recent mean when they are missing or count fewer than 4
    tasks) is the load L, in busy workers (Little's law), and
    ``needed = max(L / target_utilisation, L + backlog)``: ``backlog`` is the
    workers that clear the queued tasks within ``backlog_seconds`` (or a
    worker's start-up time, if longer), at most one per task no free worker
    can take, and the headroom under the target utilisation drains short
    queues by itself. A positive ``lookahead`` projects a rising arrival rate
    that many seconds ahead. As in the Kubernetes HPA, a ``needed`` within
    ``tolerance`` of the current size changes nothing; otherwise the
    recommended size is ``ceil(needed)``, between ``worker_count`` and
    ``max_worker_count``. Workers still starting count as capacity and toward
    the maximum.

    Growing happens at once, to the recommended size. Shrinking is
    stabilised: idle burst workers (never base or busy ones, longest idle
    first) leave only down to the largest size recommended over the last
    ``cooldown_ticks`` ticks, so a lull shorter than the cooldown costs
    nothing and a flapping load does not thrash.

    CPU cap: with the snapshot's ``cpu_share`` s and ``usable_cores`` c, the
    pool grows to at most ``floor(c x (1 + cpu_overcommit) / s)`` workers
    (never below ``worker_count``): CPU-bound tasks (s near 1) on 2 cores
    get 2 workers, tasks that use a core half the time get 4, tasks that
    sleep are not capped. More busy workers than that add no throughput.

    Gain check, for what the CPU share cannot see (a disk, a database, a
    lock): each scale-up is judged once its workers have run about four
    tasks each. Under a backlog, n workers complete n / (mean task time)
    tasks/s; if that rose by less than ``min_gain`` of the linear gain (2 to
    3 workers: +50%), the workers slow each other and the pool is held at its
    size, until its queue empties, the arrival rate grows by half, or the
    same measure, re-taken each tick, shows the gain after all. While a
    scale-up is judged, only more arrivals may add workers (a growing queue
    is what a scale-up that gained nothing looks like), and sizing uses the
    task time from before it. A held or capped start says why in ``reason``
    and ``held``.

    Before any task has finished the task time is unknown: the pool grows
    by the queued tasks no free worker can take, at most doubling the base
    workers per tick.

    Defaults: ``target_utilisation`` 0.9, ``backlog_seconds`` 0.5,
    ``tolerance`` 0.2, ``rate_window`` 0.4 s, ``lookahead`` 0 s,
    ``cooldown_ticks`` 5, ``cpu_overcommit`` 0.1, ``min_gain`` 0.25. If in
    doubt, use them; BENCHMARKS.md ("Elasticity") shows what the others cost.
    """

    def __init__(
        self,
        *,
        worker_count: int,
        max_worker_count: int,
        interval: float | None,
        cooldown_ticks: int = DEFAULT_COOLDOWN_TICKS,
        target_utilisation: float = DEFAULT_TARGET_UTILISATION,
        backlog_seconds: float = DEFAULT_BACKLOG_SECONDS,
        tolerance: float = DEFAULT_TOLERANCE,
        rate_window: float = DEFAULT_RATE_WINDOW,
        lookahead: float = DEFAULT_LOOKAHEAD,
        cpu_overcommit: float = DEFAULT_CPU_OVERCOMMIT,
        min_gain: float = DEFAULT_MIN_GAIN,
    ) -> None:
        if worker_count < 0:
            raise ValueError(f"worker_count must be >= 0, got {worker_count!r}")
        if max_worker_count < worker_count:
            raise ValueError(
                f"max_worker_count ({max_worker_count}) must be >= worker_count ({worker_count})"
            )
        if interval is not None and not interval >= 0:
            raise ValueError(f"interval must be None or >= 0 seconds, got {interval!r}")
        if cooldown_ticks < 1:
            raise ValueError(f"cooldown_ticks must be >= 1, got {cooldown_ticks!r}")
        if not 0 < target_utilisation <= 1:
            raise ValueError(f"target_utilisation must be in (0, 1], got {target_utilisation!r}")
        if not 0 < backlog_seconds < math.inf:
            raise ValueError(f"backlog_seconds must be > 0 seconds, got {backlog_seconds!r}")
        if not 0 <= tolerance < 1:
            raise ValueError(f"tolerance must be in [0, 1), got {tolerance!r}")
        if not 0 < rate_window < math.inf:
            raise ValueError(f"rate_window must be > 0 seconds, got {rate_window!r}")
        if not 0 <= lookahead < math.inf:
            raise ValueError(f"lookahead must be >= 0 seconds, got {lookahead!r}")
        if not 0 <= cpu_overcommit < math.inf:
            raise ValueError(f"cpu_overcommit must be >= 0, got {cpu_overcommit!r}")
        if not 0 <= min_gain <= 1:
            raise ValueError(f"min_gain must be in [0, 1], got {min_gain!r}")
        self.worker_count = worker_count
        self.max_worker_count = max_worker_count
        self.interval = interval
        self.cooldown_ticks = cooldown_ticks  # the supervisor may change it between ticks
        self.target_utilisation = target_utilisation
        self.backlog_seconds = backlog_seconds
        self.tolerance = tolerance
        self.rate_window = rate_window
        self.lookahead = lookahead
        self.cpu_overcommit = cpu_overcommit
        self.min_gain = min_gain
        self.enabled: bool = bool(interval) and max_worker_count > worker_count
        self._load = LoadHistory(rate_window, interval, lookahead)
        self._recommended: deque[int] = deque()  # sizes recommended at the latest ticks
        self._quiet_ticks = 0  # consecutive ticks recommending fewer workers than there are
        self._retiring: set[int] = set()  # sent the sentinel, still listed as idle
        self._probe: _Probe | None = None
        self._hold: _Hold | None = None

    def decide(self, snap: BurstSnapshot) -> BurstDecision:
        """Start workers, retire idle burst workers, or hold (at most one of them)."""
        if not self.enabled:
            return BurstDecision(reason="hold: bursting disabled")
        # A retired worker that is no longer listed has exited: forget it.
        self._retiring &= set(snap.idle_burst_workers)
        arrival, completion, rise = self._load.rates(snap)
        workers = snap.base_workers + snap.burst_workers - len(self._retiring)
        free = max(workers - snap.busy_workers, 0)  # idle or starting: each takes a task
        untaken = max(snap.queued_tasks - free, 0)  # tasks no worker can take now
        facts = (
            f"queued={snap.queued_tasks} arrival={arrival:.2f}/s "
            f"completion={completion:.2f}/s workers={workers} free={free}"
        )
        self._judge(snap, arrival, workers, untaken)
        # The task time is measured over the last SIZING_SECONDS (from the totals): steadier
        # than the snapshot's recent mean, which follows the last 10 to 20 tasks.
        mean = None if snap.mean_task_seconds is None else self._load.sizing_mean(snap)
        raw = 0.0  # workers the load asks for, before any limit
        if mean is None:
            # No task has finished yet, so demand is unknown: grow by the tasks nobody can
            # take now, at most doubling the base workers per tick.
            wanted = workers + min(untaken, max(snap.base_workers, 1))
            why = f"mean task time unknown, untaken={untaken}"
        else:
            probe = self._probe
            if probe is not None:
                mean = min(mean, probe.sizing_mean)
            load = (arrival + rise * self.lookahead) * mean  # workers the arrivals keep busy
            demand = load / self.target_utilisation
            # No worker started now helps sooner than it is ready.
            horizon = max(self.backlog_seconds, snap.worker_start_seconds or 0.0)
            backlog = min(snap.queued_tasks * mean / horizon, float(untaken))
            # Workers running long tasks stay busy whatever the arrivals do now: when the
            # queue would wait past the horizon for them, they count as busy too.
            if workers > 0 and snap.queued_tasks * mean / workers > horizon:
                load = max(load, float(snap.busy_workers))
            raw = max(demand, load + backlog)
            needed = min(raw, float(self.max_worker_count))
            # The band is judged on the need itself, not on the need capped at the maximum: a
            # pool one worker short of its maximum under a backlog still takes that worker.
            if workers > 0 and abs(raw / workers - 1) <= self.tolerance:
                wanted = workers
            else:
                wanted = math.ceil(needed - _EPSILON)
            why = f"needed={needed:.2f} (demand={demand:.2f} backlog={backlog:.2f})"
            if probe is not None:
                allowed = max(probe.size, math.ceil(min(demand, needed) - _EPSILON))
                if wanted > allowed:
                    wanted = allowed
                    why += f", judging the last scale-up: arrivals allow {allowed}"
            facts += f" mean_task={mean:.3f}s"
        wanted = max(snap.base_workers, min(wanted, self.max_worker_count))
        size, held, note = self._capped(snap, wanted)
        self._remember(size, workers)
        if size > workers:
            room = self.max_worker_count - snap.base_workers - snap.burst_workers
            start = min(size - workers, room)
            if held:
                why += f"; {note}"
            if start > 0:
                self._opened(snap, workers, workers + start, mean)
                return BurstDecision(
                    start=start, reason=f"start {start}: {why}, room={room}; {facts}"
                )
            return BurstDecision(reason=f"hold: at max_worker_count ({why}); {facts}")
        if held and wanted > workers:
            return BurstDecision(reason=f"{note}; {why}; {facts}", held=held)
        if raw > workers >= self.max_worker_count:
            return BurstDecision(reason=f"hold: at max_worker_count ({why}); {facts}")
        return self._shrink(snap, workers, why, facts)

    # -- the gain check ----------------------------------------------------------------------

    def _opened(self, snap: BurstSnapshot, workers: int, size: int, sized: float | None) -> None:
        """A start was decided: open a probe to judge it, or extend the open one.

        ``sized`` is the task time the start was sized with (None: unknown).
        """
        recent = snap.mean_task_seconds
        if snap.ended_total is None or not recent:
            return  # no counters, or no task time to judge by: no gain check
        judge_at = snap.now + (snap.worker_start_seconds or 0.0) + self._load.judge_window(recent)
        probe = self._probe
        if probe is not None:
            probe.size = max(probe.size, size)
            probe.judge_at = max(probe.judge_at, judge_at)
            return
        ready = workers - snap.starting_workers
        mean = self._load.mean_over(snap, self._load.judge_window(recent))
        if ready > 0 and mean:
            self._probe = _Probe(ready, mean, sized or recent, size, judge_at)

    def _gain(self, snap: BurstSnapshot, workers: int, before: int, mean: float) -> float | None:
        """Share of the linear gain the pool shows now against ``before`` workers at ``mean``.

        Under a backlog n workers complete n / mean task time tasks/s (Little's law): 1.0
        when the task time did not change, 0.0 when it grew as much as the workers did.
        """
        now = self._load.mean_over(snap, self._load.judge_window(mean))
        if not now or workers <= before:
            return None
        return ((workers / now) / (before / mean) - 1) / (workers / before - 1)

    def _judge(self, snap: BurstSnapshot, arrival: float, workers: int, untaken: int) -> None:
        """Re-take the measure of a hold; close a probe whose time has come."""
        hold = self._hold
        if hold is not None:
            gain = self._gain(snap, workers, hold.workers, hold.mean)
            if (
                snap.queued_tasks == 0
                or arrival > hold.arrival_rate * (1 + HOLD_RELEASE_GROWTH)
                # The gain shows after all: twice the bar, so noise alone rarely ends a hold.
                or (gain is not None and gain >= 2 * self.min_gain)
            ):
                self._hold = None
        probe = self._probe
        if probe is None or snap.now < probe.judge_at or snap.starting_workers:
            return
        self._probe = None
        if untaken == 0:
            return  # the queue was caught up with: the workers were the bottleneck
        if workers < probe.workers * (1 + MEASURABLE_STEP) - _EPSILON:
            return  # too small a step to tell its gain from noise
        gain = self._gain(snap, workers, probe.workers, probe.mean)
        if gain is None or gain >= self.min_gain:
            return
        now = self._load.mean_over(snap, self._load.judge_window(probe.mean)) or 0.0
        self._hold = _Hold(
            cap=workers,
            workers=probe.workers,
            mean=probe.mean,
            arrival_rate=arrival,
            why=(
                f"held: completions did not rise after the last scale-up ({probe.workers} "
                f"workers x {probe.mean:.3f}s tasks became {workers} x {now:.3f}s: "
                f"{gain:.0%} of the linear gain, {self.min_gain:.0%} needed)"
            ),
        )

    # -- caps and shrinking ------------------------------------------------------------------

    def _capped(self, snap: BurstSnapshot, wanted: int) -> tuple[int, str, str]:
        """The size allowed (CPU cap, hold); which cap cut ``wanted`` down, and why."""
        size, held, note = wanted, "", ""
        share, cores = snap.cpu_share, snap.usable_cores
        if share is not None and cores and share > 0:
            fill = cores * (1 + self.cpu_overcommit) / share  # workers that fill the cores
            cap = max(snap.base_workers, 1, math.floor(min(fill, size) + _EPSILON))
            if cap < size:
                size, held = cap, "cpu"
                note = (
                    f"held: CPU-bound tasks (cpu share {share:.2f}) already use {cores} "
                    f"cores: {cap} workers fill them"
                )
        hold = self._hold
        if hold is not None and hold.cap < size:
            size, held, note = max(snap.base_workers, hold.cap), "no-gain", hold.why
        return size, held, note

    def _remember(self, size: int, workers: int) -> None:
        """Keep the sizes recommended at the last ``cooldown_ticks`` ticks."""
        self._recommended.append(size)
        while len(self._recommended) > self.cooldown_ticks:
            self._recommended.popleft()
        self._quiet_ticks = self._quiet_ticks + 1 if size < workers else 0

    def _shrink(self, s: BurstSnapshot, workers: int, why: str, facts: str) -> BurstDecision:
        idle = [w for w in s.idle_burst_workers if w not in self._retiring]
        keep = max(self._recommended)  # the largest size asked for within the cooldown
        facts = (
            f"quiet={self._quiet_ticks}/{self.cooldown_ticks} ticks idle_burst={len(idle)} "
            f"keep={keep} {why}; {facts}"
        )
        if keep >= workers:
            return BurstDecision(reason=f"hold: size fits the load; {facts}")
        if not idle:
            return BurstDecision(reason=f"hold: no idle burst worker; {facts}")
        if len(self._recommended) < self.cooldown_ticks:
            return BurstDecision(reason=f"hold: cooling down; {facts}")
        retire = tuple(idle[: workers - max(keep, s.base_workers)])
        if not retire:
            return BurstDecision(reason=f"hold: only base workers left; {facts}")
        self._retiring.update(retire)
        return BurstDecision(retire=retire, reason=f"retire {len(retire)}: {facts}")
